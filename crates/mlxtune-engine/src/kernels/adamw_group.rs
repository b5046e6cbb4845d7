//! The end of a step over many small arrays (LoRA's adapters: 184 arrays of at most 131,072
//! numbers for LFM2-1.2B) in a few launches instead of three or four per array: each
//! launch takes a group of arrays and picks its array from the block's `y` position. One
//! kernel sums each array's squared gradient (a fixed split into blocks, so the sum is the
//! same from run to run; it also takes arrays of any size, full fine-tuning's included),
//! another updates the arrays ([`super::adamw`]'s formula, the same
//! `adamw_step` body). On an H200 the per-array end of a LoRA step was ~740 kernels, ~8 ms
//! of a 190 ms step, nearly all of it launches (docs/benchmarks.md, issue 14).
//!
//! A group is at most 32 arrays on CUDA; on Metal at most 4, so that a launch stays within
//! its 31 buffer slots (4 × 4 inputs, `h`, the sizes, 3 × 4 outputs).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::ops::stack;
use mlx_rs::{Array, Dtype};

use super::adamw::h;
use super::launch::{run, Gpu, KernelSource, Launch, TemplateArg};
use crate::error::{EngineError, Result};

/// Arrays up to this many numbers go through the grouped kernels; larger ones are updated
/// one at a time (a block per array would be too few threads for them).
pub const SMALL: usize = 1 << 20;

/// Threads per block.
const THREADS: i32 = 256;

fn group_size(gpu: Gpu) -> usize {
    match gpu {
        Gpu::Cuda => 32,
        Gpu::Metal => 4,
    }
}

/// Whether a parameter or one of its moments goes through the grouped update kernel on
/// this GPU: f32, not a scalar (Metal passes those by value), not empty, at most [`SMALL`]
/// numbers. Its gradient sum must be one [`sums`] takes, of the same shape.
pub fn takes(gpu: Option<Gpu>, a: &Array) -> bool {
    listed(gpu, a) && a.dtype() == Dtype::Float32 && a.size() <= SMALL
}

/// Whether [`squares`] sums a gradient's squares on this GPU: f32 or a 16-bit compute
/// dtype ([`adamw::gradient_dtype`](super::adamw::gradient_dtype)), not a scalar, not
/// empty, fewer than 2³¹ numbers. Size is no limit otherwise: a large array gets many
/// blocks.
pub fn sums(gpu: Option<Gpu>, a: &Array) -> bool {
    listed(gpu, a) && super::adamw::gradient_dtype(a.dtype())
}

fn listed(gpu: Option<Gpu>, a: &Array) -> bool {
    gpu.is_some() && a.ndim() > 0 && a.size() > 0 && a.size() <= i32::MAX as usize
}

/// Numbers each thread of [`squares`] sums at least, before an array gets another block.
const PER_THREAD: usize = 16;

/// The most blocks [`squares`] gives one array: 512 of 256 threads keep an H200's memory
/// busy on a 134-million-number embedding; smaller arrays in the group get as many, most
/// of them with nothing to read.
const MAX_BLOCKS: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Squares,
    Update,
}

thread_local! {
    /// Generated sources, one per kind and group size, made once per thread (MLX keeps a
    /// kernel by name, so each lives as long as the process).
    static SOURCES: RefCell<HashMap<(Kind, usize), &'static KernelSource>> =
        RefCell::new(HashMap::new());
}

/// The lines that pick the block's arrays: `var = <var>i` for each of `vars` where `i` is
/// the block's `y` position, then `n`, the array's size.
fn pick(gpu: Gpu, g: usize, vars: &[&str]) -> String {
    let (index, n) = match gpu {
        Gpu::Cuda => ("blockIdx.y", "const long long n"),
        Gpu::Metal => ("threadgroup_position_in_grid.y", "const ulong n"),
    };
    let mut s = String::new();
    for var in vars {
        // The gradient sums are of the launch's dtype G; everything else is f32.
        let elem = if *var == "s" { "G" } else { "float" };
        let ty = match (gpu, var.ends_with("_new")) {
            (Gpu::Cuda, false) => format!("const {elem}*"),
            (Gpu::Cuda, true) => format!("{elem}*"),
            (Gpu::Metal, false) => format!("const device {elem}*"),
            (Gpu::Metal, true) => format!("device {elem}*"),
        };
        s += &format!("{ty} {var} = {var}0;\n");
    }
    s += &format!("switch ({index}) {{\n");
    for i in 1..g {
        s += &format!("case {i}:");
        for var in vars {
            s += &format!(" {var} = {var}{i};");
        }
        s += " break;\n";
    }
    s += "default: break;\n}\n";
    s + &format!("{n} = sizes[{index}];\n")
}

/// The kernel of `kind` for groups of `g` arrays, generated once per thread and kept for
/// the process (MLX keeps a kernel by name).
fn source(kind: Kind, g: usize) -> &'static KernelSource {
    SOURCES.with(|cell| {
        *cell
            .borrow_mut()
            .entry((kind, g))
            .or_insert_with(|| Box::leak(Box::new(generate(kind, g))))
    })
}

fn generate(kind: Kind, g: usize) -> KernelSource {
    let leak = |v: Vec<String>| -> &'static [&'static str] {
        Vec::leak(v.into_iter().map(|s| &*String::leak(s)).collect())
    };
    let (name, vars, cuda, metal): (_, &[&str], _, _) = match kind {
        Kind::Squares => (
            format!("mlxtune_adamw_squares_{g}"),
            &["s"],
            include_str!("adamw_squares.cu"),
            include_str!("adamw_squares.metal"),
        ),
        Kind::Update => (
            format!("mlxtune_adamw_group_{g}"),
            &["s", "p", "m", "v", "p_new", "m_new", "v_new"],
            concat!(
                include_str!("adamw_group.cu"),
                include_str!("adamw_step.cu")
            ),
            concat!(
                include_str!("adamw_group.metal"),
                include_str!("adamw_step.metal")
            ),
        ),
    };
    let numbered = |stems: &[&str]| -> Vec<String> {
        stems
            .iter()
            .flat_map(|stem| (0..g).map(move |i| format!("{stem}{i}")))
            .collect()
    };
    let (ins, outs): (Vec<&str>, Vec<&str>) = vars.iter().partition(|v| !v.ends_with("_new"));
    let mut inputs = numbered(&ins);
    inputs.extend(["h".to_string(), "sizes".to_string()]);
    let outputs = match kind {
        Kind::Squares => vec!["sq".to_string()],
        Kind::Update => numbered(&outs),
    };
    KernelSource {
        name: String::leak(name),
        inputs: leak(inputs),
        outputs: leak(outputs),
        cuda: String::leak(pick(Gpu::Cuda, g, vars) + cuda),
        metal: String::leak(pick(Gpu::Metal, g, vars) + metal),
    }
}

/// The groups of a launch each: runs of consecutive arrays of one dtype (a kernel reads one
/// gradient dtype), at most `k` arrays each.
fn groups(arrays: &[&Array], k: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=arrays.len() {
        if i == arrays.len() || i - start == k || arrays[i].dtype() != arrays[start].dtype() {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// The arrays' sizes as the kernels' `sizes` input.
fn sizes(arrays: &[&Array]) -> Result<Array> {
    let n: Vec<i32> = arrays
        .iter()
        .map(|a| i32::try_from(a.size()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| EngineError::Mlx("an array is too large for the grouped kernels".into()))?;
    Ok(Array::from_slice(&n, &[n.len() as i32]))
}

fn check_h(x: &Array, len: usize) -> Result<()> {
    if x.size() < len || x.dtype() != Dtype::Float32 {
        return Err(EngineError::Mlx(format!(
            "the grouped Adam(W) kernels take at least {len} f32 numbers"
        )));
    }
    Ok(())
}

/// Σ (s / denom)² of each of `sums` (`denom` at `fixed[h::DENOM]`): one `[g]` array per
/// group of arrays, in order. On a GPU every array must be one that [`sums`] takes; the
/// kernel gives each array of a group the same number of blocks (by the group's largest)
/// and the blocks' parts are summed per array. Without a GPU (`None`) the groups are MLX
/// reductions, as many as there are arrays.
pub fn squares(gpu: Option<Gpu>, sums: &[&Array], fixed: &Array) -> Result<Vec<Array>> {
    check_h(fixed, h::DENOM as usize + 1)?;
    let Some(gpu) = gpu else {
        let denom = fixed.index(h::DENOM);
        return sums
            .chunks(group_size(Gpu::Cuda))
            .map(|group| {
                let each: Vec<Array> = group
                    .iter()
                    .map(|s| s.divide(&denom)?.square()?.sum(None))
                    .collect::<std::result::Result<_, _>>()?;
                Ok(stack(&each, 0)?)
            })
            .collect();
    };
    groups(sums, group_size(gpu))
        .into_iter()
        .map(|range| {
            let group = &sums[range];
            let g = group.len();
            let mut inputs: Vec<Array> = group.iter().map(|a| (*a).clone()).collect();
            inputs.extend([fixed.clone(), sizes(group)?]);
            let largest = group.iter().map(|a| a.size()).max().unwrap_or(1);
            let blocks = largest
                .div_ceil(PER_THREAD * THREADS as usize)
                .clamp(1, MAX_BLOCKS) as i32;
            let launch = Launch {
                grid: [blocks * THREADS, g as i32, 1],
                group: [THREADS, 1, 1],
                outputs: vec![(vec![g as i32, blocks], Dtype::Float32)],
                template: vec![("G", TemplateArg::Dtype(group[0].dtype()))],
            };
            let parts = run(gpu, source(Kind::Squares, g), &inputs, &launch)?
                .pop()
                .ok_or_else(|| EngineError::Mlx("no sums of squares".into()))?;
            Ok(parts.sum_axis(1, false)?)
        })
        .collect()
}

/// `[p', m', v']` of each array (as [`super::adamw::update`]), a group per launch; without
/// a GPU ([`super::adamw::reference`]) one array at a time. On a GPU every `p`, `m`, `v`
/// must be [`takes`]n and every `s` [`sums`]ed, of one shape per index.
pub fn update(
    gpu: Option<Gpu>,
    p: &[&Array],
    s: &[&Array],
    m: &[&Array],
    v: &[&Array],
    hv: &Array,
) -> Result<Vec<[Array; 3]>> {
    check_h(hv, h::LEN)?;
    let Some(gpu) = gpu else {
        return (0..p.len())
            .map(|i| {
                let out = super::adamw::reference(p[i], s[i], m[i], v[i], hv)?;
                <[Array; 3]>::try_from(out)
                    .map_err(|_| EngineError::Mlx("the Adam(W) update returns 3 arrays".into()))
            })
            .collect();
    };
    let mut out = Vec::with_capacity(p.len());
    for Range { start, end } in groups(s, group_size(gpu)) {
        let g = end - start;
        let mut inputs: Vec<Array> = Vec::with_capacity(4 * g + 2);
        for list in [s, p, m, v] {
            inputs.extend(list[start..end].iter().map(|a| (*a).clone()));
        }
        inputs.extend([hv.clone(), sizes(&p[start..end])?]);
        let largest = p[start..end].iter().map(|a| a.size()).max().unwrap_or(1);
        let blocks = largest.div_ceil(4 * THREADS as usize).max(1) as i32;
        let shapes: Vec<(Vec<i32>, Dtype)> = p[start..end]
            .iter()
            .map(|a| (a.shape().to_vec(), Dtype::Float32))
            .collect();
        let launch = Launch {
            grid: [blocks * THREADS, g as i32, 1],
            group: [THREADS, 1, 1],
            outputs: [shapes.clone(), shapes.clone(), shapes].concat(),
            template: vec![("G", TemplateArg::Dtype(s[start].dtype()))],
        };
        let arrays = run(gpu, source(Kind::Update, g), &inputs, &launch)?;
        if arrays.len() != 3 * g {
            return Err(EngineError::Mlx(
                "the grouped Adam(W) kernel's outputs".into(),
            ));
        }
        let (ps, rest) = arrays.split_at(g);
        let (ms, vs) = rest.split_at(g);
        for i in 0..g {
            out.push([ps[i].clone(), ms[i].clone(), vs[i].clone()]);
        }
    }
    Ok(out)
}
