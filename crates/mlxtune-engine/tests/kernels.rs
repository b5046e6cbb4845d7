//! Fused kernels (crates/mlxtune-engine/src/kernels) and packed rows' attention in query
//! blocks (models/packed_attention.rs) against their unfused references, in
//! value and gradient, f32 and bf16. On the CPU the public ops are the references, so there
//! the tests check the references themselves (a host loop, a wrong formula failing) and the
//! custom-VJP plumbing with MLX operations; on a GPU build (docs/cuda.md: the `kernels`
//! binary on the device) the same tests run the CUDA kernels against the references.
#![allow(clippy::unwrap_used)]

mod common;

use mlxtune_engine::kernels::{self, short_conv, swiglu};
use mlxtune_engine::mlx_rs::error::Exception;
use mlxtune_engine::mlx_rs::transforms::fallible_vjp;
use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::Result;

use common::normal;

/// An op of the differentiated inputs (`&x[..n]`) and fixed extra inputs (`&x[n..]`).
type Op = Box<dyn Fn(&[Array]) -> Result<Array>>;

const DTYPES: [Dtype; 2] = [Dtype::Float32, Dtype::Bfloat16];

/// Value and gradients of `op` with respect to `x`, cotangent `d`, all as f32.
fn value_and_vjp(op: &Op, x: &[Array], d: &Array) -> Vec<Array> {
    let f = |a: &[Array]| -> std::result::Result<Vec<Array>, Exception> {
        op(a)
            .map(|y| vec![y])
            .map_err(|e| e.to_string().as_str().into())
    };
    let (out, grads) = fallible_vjp(f, x, std::slice::from_ref(d)).unwrap();
    out.iter()
        .chain(grads.iter())
        .map(|a| a.as_dtype(Dtype::Float32).unwrap())
        .collect()
}

/// max |a − b| / max |b|.
fn rel_err(a: &Array, b: &Array) -> f32 {
    let diff = a.subtract(b).unwrap().abs().unwrap().max(None).unwrap();
    let scale = b.abs().unwrap().max(None).unwrap();
    diff.item_cast::<f32>() / scale.item_cast::<f32>().max(1e-12)
}

/// `op` on `x` (f32 inputs cast to `dtype`) against `reference` in f32 on the same rounded
/// inputs, in value and in every gradient.
fn check(op: &Op, reference: &Op, x: &[Array], d: &Array, dtype: Dtype) {
    let xd: Vec<Array> = x.iter().map(|a| a.as_dtype(dtype).unwrap()).collect();
    let x32: Vec<Array> = xd
        .iter()
        .map(|a| a.as_dtype(Dtype::Float32).unwrap())
        .collect();
    let dd = d.as_dtype(dtype).unwrap();
    let got = value_and_vjp(op, &xd, &dd);
    let want = value_and_vjp(reference, &x32, &dd.as_dtype(Dtype::Float32).unwrap());
    let tol = if dtype == Dtype::Float32 { 1e-5 } else { 2e-2 };
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.shape(), w.shape(), "output {i} shape");
        let e = rel_err(g, w);
        assert!(
            e.is_finite() && e < tol,
            "output {i} ({dtype:?}): relative error {e} >= {tol}"
        );
    }
}

fn swiglu_inputs(seed: u64) -> (Vec<Array>, Array) {
    let shape = [3, 37, 129]; // odd: not a multiple of the per-thread count or a group
    (
        vec![normal(&shape, 3.0, seed), normal(&shape, 1.0, seed + 1)],
        normal(&shape, 1.0, seed + 2),
    )
}

#[test]
fn swiglu_matches_the_unfused_reference_in_value_and_gradient() {
    println!("fused kernels on: {:?}", kernels::gpu());
    let op: Op = Box::new(|x| swiglu::swiglu(&x[0], &x[1]));
    let reference: Op = Box::new(|x| swiglu::reference(&x[0], &x[1]));
    for (i, dt) in DTYPES.into_iter().enumerate() {
        let (x, d) = swiglu_inputs(10 + 3 * i as u64);
        check(&op, &reference, &x, &d, dt);
    }
}

#[test]
fn swiglu_backward_formula_through_a_custom_vjp_matches_autodiff() {
    let op: Op = Box::new(|x| swiglu::composed(&x[0], &x[1]));
    let reference: Op = Box::new(|x| swiglu::reference(&x[0], &x[1]));
    for (i, dt) in DTYPES.into_iter().enumerate() {
        let (x, d) = swiglu_inputs(20 + 3 * i as u64);
        check(&op, &reference, &x, &d, dt);
    }
}

#[test]
fn a_wrong_formula_fails_the_comparison() {
    let wrong: Op = Box::new(|x| {
        Ok(x[0]
            .multiply(mlxtune_engine::mlx_rs::ops::sigmoid(&x[1])?)?
            .multiply(&x[1])?)
    });
    let reference: Op = Box::new(|x| swiglu::reference(&x[0], &x[1]));
    let (x, d) = swiglu_inputs(30);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check(&wrong, &reference, &x, &d, Dtype::Float32)
    }));
    assert!(r.is_err(), "a wrong formula passed the comparison");
}

const CONV: (i32, i32, i32, i32) = (2, 19, 40, 3); // B, T, H, L

/// Example ids of packed rows: row 0 holds examples of 5, 9 and 5 tokens, row 1 one of 19.
fn segments() -> Array {
    let mut ids: Vec<i32> = (0..19)
        .map(|t| {
            if t < 5 {
                1
            } else if t < 14 {
                2
            } else {
                3
            }
        })
        .collect();
    ids.extend([1; 19]);
    Array::from_slice(&ids, &[2, 19])
}

fn conv_inputs(seed: u64) -> (Vec<Array>, Array) {
    let (b, t, h, l) = CONV;
    let bcx = normal(&[b, t, 3 * h], 1.0, seed);
    let w = normal(&[h, 1, l], 0.5, seed + 1);
    (vec![bcx, w], normal(&[b, t, h], 1.0, seed + 2))
}

fn conv_ops(packed: bool) -> (Op, Op) {
    let seg = packed.then(segments);
    let s2 = seg.clone();
    let op: Op = Box::new(move |x| short_conv::gated_short_conv(&x[0], &x[1], seg.as_ref()));
    let reference: Op = Box::new(move |x| short_conv::reference(&x[0], &x[1], s2.as_ref()));
    (op, reference)
}

#[test]
fn short_conv_matches_the_unfused_reference_in_value_and_gradient() {
    for packed in [false, true] {
        let (op, reference) = conv_ops(packed);
        for (i, dt) in DTYPES.into_iter().enumerate() {
            let (x, d) = conv_inputs(40 + 3 * i as u64 + 10 * packed as u64);
            check(&op, &reference, &x, &d, dt);
        }
    }
}

#[test]
fn short_conv_reference_equals_a_host_loop_and_stays_inside_examples() {
    let (b, t, h, l) = CONV;
    let (x, _) = conv_inputs(70);
    let seg = segments();
    let y = short_conv::reference(&x[0], &x[1], Some(&seg)).unwrap();
    let (bcx, w, s) = (
        x[0].as_slice::<f32>(),
        x[1].as_slice::<f32>(),
        seg.as_slice::<i32>(),
    );
    let at = |r: i32, c: i32| bcx[(r * 3 * h + c) as usize];
    let mut want = vec![0f32; (b * t * h) as usize];
    for r in 0..b * t {
        for c in 0..h {
            let mut acc = 0.0;
            for k in 0..l {
                let j = l - 1 - k;
                if r % t >= j && s[(r - j) as usize] == s[r as usize] {
                    acc += w[(c * l + k) as usize] * at(r - j, c) * at(r - j, 2 * h + c);
                }
            }
            want[(r * h + c) as usize] = at(r, h + c) * acc;
        }
    }
    let want = Array::from_slice(&want, &[b, t, h]);
    assert!(
        rel_err(&y, &want) < 1e-5,
        "reference differs from the host loop"
    );
    let causal = short_conv::reference(&x[0], &x[1], None).unwrap();
    assert!(rel_err(&causal, &want) > 1e-3, "segments changed nothing");
}

const ATTN: (i32, i32, i32, i32, i32) = (2, 4, 2, 40, 16); // B, H, Hkv, T, D

/// Packed rows for attention: row 0 holds examples of 7, 20 and 13 tokens, row 1 one of
/// 40 (`long`) or three of 12, 18 and 10.
fn attention_segments(long: bool) -> (Array, Vec<Vec<(i32, i32)>>) {
    let row1 = match long {
        true => vec![(0, 40)],
        false => vec![(0, 12), (12, 30), (30, 40)],
    };
    let rows = vec![vec![(0, 7), (7, 27), (27, 40)], row1];
    let mut ids = Vec::new();
    for row in &rows {
        for (k, (a, e)) in row.iter().enumerate() {
            ids.extend(std::iter::repeat_n(k as i32 + 1, (e - a) as usize));
        }
    }
    (Array::from_slice(&ids, &[ATTN.0, ATTN.3]), rows)
}

fn attention_inputs(seed: u64) -> (Vec<Array>, Array) {
    let (b, h, hkv, t, d) = ATTN;
    let x = vec![
        normal(&[b, h, t, d], 1.0, seed),
        normal(&[b, hkv, t, d], 1.0, seed + 1),
        normal(&[b, hkv, t, d], 1.0, seed + 2),
    ];
    (x, normal(&[b, t, h, d], 1.0, seed + 3))
}

/// Each example attended on its own with the causal flag: no mask of ours involved.
fn per_example_attention(x: &[Array], rows: &[Vec<(i32, i32)>], scale: f32) -> Result<Array> {
    use mlxtune_engine::mlx_rs::fast::{self, ScaledDotProductAttentionMask};
    use mlxtune_engine::mlx_rs::ops::{concatenate, indexing::IndexOp};
    let mut out_rows = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let r = r as i32;
        let mut parts = Vec::new();
        for &(a, e) in row {
            let part = |y: &Array| y.index((r..r + 1, .., a..e, ..));
            let o = fast::scaled_dot_product_attention(
                part(&x[0]),
                part(&x[1]),
                part(&x[2]),
                scale,
                ScaledDotProductAttentionMask::Causal,
                None,
            )?;
            parts.push(o.transpose_axes(&[0, 2, 1, 3])?);
        }
        out_rows.push(concatenate(&parts, 1)?);
    }
    Ok(concatenate(&out_rows, 0)?)
}

#[test]
fn packed_attention_in_query_blocks_equals_each_example_attended_alone() {
    use mlxtune_engine::data::segments::Segments;
    use mlxtune_engine::models::packed_attention::{reach_for, PackedMasks};
    // Block 0: one call over the full square; 16: blocks of 16, 16 and 8; 7 and 8: uneven
    // blocks that cut through examples. With the shorter examples the keys of each block
    // start `reach` before it (21 for blocks of 7, 24 for 8), else at 0.
    let cases = [(true, 0), (true, 16), (true, 7), (false, 7), (false, 8)];
    for (i, (long, block)) in cases.into_iter().enumerate() {
        let (seg, rows) = attention_segments(long);
        let ids: Vec<i32> = seg.as_slice::<i32>().to_vec();
        let needed = Segments::new(&ids, ATTN.3 as usize).reach(block.max(1) as usize);
        let reach = reach_for(ATTN.3, block, needed as i32);
        let want_reach = [None, None, None, Some(21), Some(24)][i];
        assert_eq!(reach, want_reach, "blocks of {block}");
        let scale = (ATTN.4 as f32).powf(-0.5);
        let reference: Op = Box::new(move |x| per_example_attention(x, &rows, scale));
        let op: Op = Box::new(move |x| {
            let masks = PackedMasks::new(&seg, block, reach, x[0].dtype())?;
            let want = if block == 0 {
                1
            } else {
                (ATTN.3 + block - 1) / block
            };
            assert_eq!(masks.blocks() as i32, want);
            masks.attend(&x[0], &x[1], &x[2], scale)
        });
        for (j, dt) in DTYPES.into_iter().enumerate() {
            let (x, d) = attention_inputs(90 + 10 * i as u64 + 4 * j as u64);
            check(&op, &reference, &x, &d, dt);
        }
    }
}

/// A reach that is not a whole number of blocks would leave part of a key block's gradient
/// out: it is refused, naming it.
#[test]
fn a_packed_attention_reach_off_the_blocks_is_an_error() {
    use mlxtune_engine::models::packed_attention::PackedMasks;
    let (seg, _) = attention_segments(false);
    let e = PackedMasks::new(&seg, 8, Some(12), Dtype::Float32)
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("attention reach: 12"), "{e}");
}

/// The Adam(W) update kernel against the formula in f64 on the host, on an odd size (not a
/// multiple of a thread's four elements), for an update and for a kept step (`keep` set:
/// everything comes back unchanged). On the CPU this checks the MLX reference.
#[test]
fn the_adamw_update_matches_the_formula_and_keeps_everything_when_told() {
    use kernels::adamw::{h, update};
    let shape = [37, 129];
    let host = |a: &Array| a.as_slice::<f32>().to_vec();
    let (p, s, m) = (
        normal(&shape, 1.0, 51),
        normal(&shape, 30.0, 52),
        normal(&shape, 0.1, 53),
    );
    let v = normal(&shape, 0.1, 54).square().unwrap();
    for keep in [0.0f32, 1.0] {
        // b1, 1-b1, b2, 1-b2, eps, lr, c1, c2, decay, l2, denom, clip, keep
        let hs = [
            0.9f32, 0.1, 0.99, 0.01, 1e-8, 0.01, 0.19, 0.0199, 0.999, 0.05, 12.0, 0.3, keep,
        ];
        let hv = Array::from_slice(&hs, &[h::LEN as i32]);
        let out = update(&p, &s, &m, &v, &hv).unwrap();
        let got: Vec<Vec<f32>> = out.iter().map(host).collect();
        let (p0, s0, m0, v0) = (host(&p), host(&s), host(&m), host(&v));
        let x = |k: i32| f64::from(hs[k as usize]);
        for i in 0..p0.len() {
            let (pi, mi, vi) = (f64::from(p0[i]), f64::from(m0[i]), f64::from(v0[i]));
            let want = if keep == 0.0 {
                let g = f64::from(s0[i]) / x(h::DENOM) * x(h::CLIP) + pi * x(h::L2);
                let m2 = mi * x(h::B1) + g * x(h::NB1);
                let v2 = vi * x(h::B2) + g * g * x(h::NB2);
                let upd = m2 / x(h::C1) / ((v2 / x(h::C2)).sqrt() + x(h::EPS));
                [pi * x(h::DECAY) - upd * x(h::LR), m2, v2]
            } else {
                [pi, mi, vi]
            };
            for (k, w) in want.iter().enumerate() {
                let g = f64::from(got[k][i]);
                assert!(
                    (g - w).abs() <= 1e-5 * (w.abs() + 0.1),
                    "keep {keep}, output {k}, element {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// The grouped Adam(W) kernels (many small arrays per launch) against the one-array update
/// and an f64 sum of squares: 70 arrays in three groups, of sizes that are not multiples of
/// four and some larger than one block's 1,024 numbers, for an update and a kept step. On
/// the CPU this checks the fallback's grouping and order.
#[test]
fn the_grouped_adamw_kernels_match_one_array_at_a_time() {
    use kernels::adamw::{self, h};
    use kernels::adamw_group;
    let gpu = kernels::gpu();
    let sizes: Vec<i32> = (0..70)
        .map(|i| [1, 3, 4, 5, 37, 1000, 1031, 4099][i % 8] + i as i32)
        .collect();
    let [p, s, m, v] = adam_arrays(&sizes, 1000);
    assert!(refs(&p)
        .iter()
        .all(|a| gpu.is_none() || adamw_group::takes(gpu, a)));
    let fixed = [
        0.9f32, 0.1, 0.99, 0.01, 1e-8, 0.01, 0.19, 0.0199, 0.999, 0.05, 12.0,
    ];
    let groups = adamw_group::squares(gpu, &refs(&s), &Array::from_slice(&fixed, &[11])).unwrap();
    let got: Vec<f32> = groups
        .iter()
        .flat_map(|g| g.as_slice::<f32>().to_vec())
        .collect();
    assert_eq!(got.len(), 70, "one sum per array");
    check_squares(&s, &got, 12.0, 1e-5);
    for keep in [0.0f32, 1.0] {
        let mut hs = fixed.to_vec();
        hs.extend([0.3, keep]);
        let hv = Array::from_slice(&hs, &[h::LEN as i32]);
        let out =
            adamw_group::update(gpu, &refs(&p), &refs(&s), &refs(&m), &refs(&v), &hv).unwrap();
        assert_eq!(out.len(), 70);
        for (i, new) in out.iter().enumerate() {
            let want = adamw::update(&p[i], &s[i], &m[i], &v[i], &hv).unwrap();
            for k in 0..3 {
                assert_eq!(new[k].shape(), want[k].shape());
                let d = rel_err(&new[k], &want[k]);
                assert!(d < 1e-6, "keep {keep}, array {i}, output {k}: {d}");
            }
        }
    }
}

/// The grouped sums of squares over arrays of full fine-tuning's sizes (more numbers than
/// one block reads, up to several blocks' worth per thread), mixed with small ones in one
/// group, against an f64 sum; twice, to the same bits.
#[test]
fn grouped_sums_of_squares_take_large_arrays() {
    use kernels::adamw_group;
    let gpu = kernels::gpu();
    let sizes = [3, 2_097_152, 5, 4_194_311, 1_048_577, 65_536];
    let s: Vec<Array> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| normal(&[n], 3.0, 7000 + i as u64))
        .collect();
    assert!(s.iter().all(|a| gpu.is_none() || adamw_group::sums(gpu, a)));
    let mut fixed = [0.0f32; 11];
    fixed[10] = 4.0;
    let fixed = Array::from_slice(&fixed, &[11]);
    let run = || -> Vec<f32> {
        let groups = adamw_group::squares(gpu, &refs(&s), &fixed).unwrap();
        groups
            .iter()
            .flat_map(|g| g.as_slice::<f32>().to_vec())
            .collect()
    };
    let got = run();
    assert_eq!(got.len(), sizes.len(), "one sum per array");
    // The kernel's blocks keep each f32 sum short; MLX's CPU reduction adds millions of
    // numbers in order in f32 (about 0.15% off at 2²¹).
    check_squares(&s, &got, 4.0, if gpu.is_some() { 1e-5 } else { 1e-2 });
    assert_eq!(run(), got, "the same sums from run to run");
}

/// The Adam(W) kernels read 16-bit gradient sums (a decoder layer's, in the compute dtype)
/// as the f32 numbers they are: bf16 and f16 sums give the sums of squares and the updates
/// of the same sums in f32, to the bit (small arrays through the grouped kernels, a large
/// one through the one-array kernel); a list mixing the three dtypes gives each array's sum.
#[test]
fn the_adamw_kernels_read_16_bit_gradients_as_their_f32_values() {
    use kernels::adamw::{self, h};
    use kernels::adamw_group;
    let gpu = kernels::gpu();
    let sizes = [5, 1031, 4099, 37, 2_100_001, 8, 1000];
    let [p, s, m, v] = adam_arrays(&sizes, 8000);
    let mut hs = vec![
        0.9f32, 0.1, 0.99, 0.01, 1e-8, 0.01, 0.19, 0.0199, 0.999, 0.05, 12.0,
    ];
    let fixed = Array::from_slice(&hs, &[11]);
    hs.extend([0.3, 0.0]);
    let hv = Array::from_slice(&hs, &[h::LEN as i32]);
    let squares = |s: &[Array]| -> Vec<f32> {
        let groups = adamw_group::squares(gpu, &refs(s), &fixed).unwrap();
        groups
            .iter()
            .flat_map(|g| g.as_slice::<f32>().to_vec())
            .collect()
    };
    let small: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i] <= 4099).collect();
    let pick = |xs: &[Array]| -> Vec<Array> { small.iter().map(|&i| xs[i].clone()).collect() };
    let (ps, ms, vs) = (pick(&p), pick(&m), pick(&v));
    let group = |s: &[Array]| {
        adamw_group::update(
            gpu,
            &refs(&ps),
            &refs(&pick(s)),
            &refs(&ms),
            &refs(&vs),
            &hv,
        )
        .unwrap()
    };
    let as_dtype = |xs: &[Array], d: Dtype| -> Vec<Array> {
        xs.iter().map(|x| x.as_dtype(d).unwrap()).collect()
    };
    for dtype in [Dtype::Bfloat16, Dtype::Float16] {
        let s16 = as_dtype(&s, dtype);
        let s32 = as_dtype(&s16, Dtype::Float32);
        assert!(s16
            .iter()
            .all(|x| gpu.is_none() || adamw_group::sums(gpu, x)));
        assert_eq!(squares(&s16), squares(&s32), "{dtype:?}: sums of squares");
        for (x, y) in group(&s16).iter().zip(group(&s32)) {
            for k in 0..3 {
                assert!(bits(&x[k]) == bits(&y[k]), "{dtype:?}: grouped, output {k}");
            }
        }
        for i in (0..sizes.len()).filter(|i| !small.contains(i)) {
            let x = adamw::update(&p[i], &s16[i], &m[i], &v[i], &hv).unwrap();
            let y = adamw::update(&p[i], &s32[i], &m[i], &v[i], &hv).unwrap();
            for k in 0..3 {
                assert_eq!(x[k].dtype(), Dtype::Float32);
                assert!(
                    bits(&x[k]) == bits(&y[k]),
                    "{dtype:?}: array {i}, output {k}"
                );
            }
        }
    }
    let dtypes = [Dtype::Bfloat16, Dtype::Float32, Dtype::Float16];
    let mixed: Vec<Array> = (0..s.len())
        .map(|i| s[i].as_dtype(dtypes[i % 3]).unwrap())
        .collect();
    let want = squares(&as_dtype(&mixed, Dtype::Float32));
    let got = squares(&mixed);
    assert_eq!(got.len(), sizes.len(), "one sum per array, in order");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w, "mixed, array {i}: {g} vs {w}");
    }
}

/// Parameters, gradient sums (30 times larger), first and second moments of `sizes`,
/// random from `seed`.
fn adam_arrays(sizes: &[i32], seed: u64) -> [Vec<Array>; 4] {
    let arrays = |scale: f32, seed: u64| -> Vec<Array> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| normal(&[n], scale, seed + i as u64))
            .collect()
    };
    let v = arrays(0.1, seed + 3000)
        .iter()
        .map(|x| x.square().unwrap())
        .collect();
    [
        arrays(1.0, seed),
        arrays(30.0, seed + 1000),
        arrays(0.1, seed + 2000),
        v,
    ]
}

/// Each `got[i]` is Σ (s[i] / denom)² summed in f64, within `tol` of it.
fn check_squares(s: &[Array], got: &[f32], denom: f64, tol: f64) {
    for (i, x) in s.iter().enumerate() {
        let want: f64 = x
            .as_slice::<f32>()
            .iter()
            .map(|v| (f64::from(*v) / denom).powi(2))
            .sum();
        let g = f64::from(got[i]);
        assert!((g - want).abs() <= tol * want, "array {i}: {g} vs {want}");
    }
}

/// An f32 array's numbers, bit for bit.
fn bits(a: &Array) -> Vec<u32> {
    a.as_slice::<f32>().iter().map(|x| x.to_bits()).collect()
}

fn refs(xs: &[Array]) -> Vec<&Array> {
    xs.iter().collect()
}

/// q, k and v (outputs 6, 3 and 3 wide) with LoRA rank 4 on one input: `linears`' shared
/// `x·A` product against each layer on its own, in value and in the gradients of `x`
/// and of every `A` and `B` (the base weights are frozen, as in LoRA training).
#[test]
fn lora_layers_on_one_input_share_their_a_product_without_changing_anything() {
    use mlxtune_engine::models::forward::{linear, Params};
    use mlxtune_engine::models::shared_input::linears;
    use mlxtune_engine::weights::Weights;
    let outs = [6, 3, 3];
    let names: Vec<String> = ["q", "k", "v"].map(|n| format!("l.{n}")).to_vec();
    let base: Weights = names
        .iter()
        .zip(outs)
        .enumerate()
        .map(|(i, (n, o))| (format!("{n}.weight"), normal(&[o, 8], 0.5, 130 + i as u64)))
        .collect();
    let run = move |x: &[Array], shared: bool| -> Result<Array> {
        let dt = x[0].dtype();
        let base: Weights = base
            .iter()
            .map(|(k, w)| (k.clone(), w.as_dtype(dt).unwrap()))
            .collect();
        let mut over = Weights::new();
        for (i, n) in names.iter().enumerate() {
            over.insert(format!("{n}.lora_a"), x[1 + i].clone());
            over.insert(format!("{n}.lora_b"), x[4 + i].clone());
        }
        let p = Params {
            over: Some(&over),
            lora_scale: 2.0,
            compute_dtype: Some(dt),
            ..Params::new(&base)
        };
        let ys = match shared {
            true => linears(&p, &names, &x[0], true)?,
            false => names
                .iter()
                .map(|n| linear(&p, n, &x[0]))
                .collect::<Result<_>>()?,
        };
        Ok(mlxtune_engine::mlx_rs::ops::concatenate(&ys, -1)?)
    };
    let run2 = run.clone();
    let op: Op = Box::new(move |x| run(x, true));
    let reference: Op = Box::new(move |x| run2(x, false));
    for (j, dt) in DTYPES.into_iter().enumerate() {
        let s = 140 + 10 * j as u64;
        let mut x = vec![normal(&[2, 5, 8], 1.0, s)];
        x.extend((0..3).map(|i| normal(&[8, 4], 0.3, s + 1 + i)));
        x.extend(
            outs.iter()
                .enumerate()
                .map(|(i, &o)| normal(&[4, o], 0.3, s + 4 + i as u64)),
        );
        check(&op, &reference, &x, &normal(&[2, 5, 12], 1.0, s + 9), dt);
    }
}
