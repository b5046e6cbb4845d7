//! GGUF block types that MLX's affine quantization represents exactly, repacked without
//! dequantizing: a block of 32 values is one MLX group of 32 (`w = scale·q + bias`).
//! - Q8_0 (`d`, 32 × i8): 8 bits, `q + 128`, scale `d`, bias `−128·d`;
//! - Q4_0 (`d`, 16 bytes of nibbles): 4 bits, scale `d`, bias `−8·d`;
//! - Q4_1 (`d`, `m`, 16 bytes of nibbles): 4 bits, scale `d`, bias `m`.
//!
//! GGML stores element `j` of a 4-bit block in the low nibble of byte `j` and element
//! `j + 16` in its high nibble; MLX packs eight 4-bit values (or four bytes) per `u32`,
//! lowest bits first, in element order.

use candle_core::quantized::GgmlDType;
use half::f16;
use mlx_rs::Array;

/// A matrix in MLX's affine layout: `packed` `[rows, cols·bits/32]` (u32), `scales` and
/// `biases` `[rows, cols/32]` (f32).
pub struct MlxQuantized {
    pub packed: Array,
    pub scales: Array,
    pub biases: Array,
    pub bits: i32,
}

/// MLX's group size for every block type here.
pub const GROUP: usize = 32;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// One block's 32 unsigned values with its scale and bias, or None for other types.
fn block(ty: GgmlDType, b: &[u8]) -> Option<([u8; GROUP], f32, f32)> {
    let mut v = [0u8; GROUP];
    let nibbles = |v: &mut [u8; GROUP], qs: &[u8]| {
        for j in 0..GROUP / 2 {
            v[j] = qs[j] & 0x0f;
            v[j + GROUP / 2] = qs[j] >> 4;
        }
    };
    match ty {
        GgmlDType::Q8_0 => {
            let d = f16_at(b, 0);
            for (j, x) in v.iter_mut().enumerate() {
                *x = (b[2 + j] as i8 as i16 + 128) as u8;
            }
            Some((v, d, -128.0 * d))
        }
        GgmlDType::Q4_0 => {
            let d = f16_at(b, 0);
            nibbles(&mut v, &b[2..18]);
            Some((v, d, -8.0 * d))
        }
        GgmlDType::Q4_1 => {
            nibbles(&mut v, &b[4..20]);
            Some((v, f16_at(b, 0), f16_at(b, 2)))
        }
        _ => None,
    }
}

fn pack(v: &[u8; GROUP], bits: usize, out: &mut Vec<u32>) {
    let per_word = 32 / bits;
    for chunk in v.chunks(per_word) {
        out.push(
            chunk
                .iter()
                .enumerate()
                .fold(0u32, |w, (i, x)| w | (u32::from(*x) << (bits * i))),
        );
    }
}

/// Repacks the raw blocks of a `[rows, cols]` tensor of type `ty`; None if the type has no
/// exact MLX form.
pub fn to_mlx(ty: GgmlDType, raw: &[u8], rows: usize, cols: usize) -> Option<MlxQuantized> {
    let bits = match ty {
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 => 4,
        _ => return None,
    };
    let block_bytes = ty.type_size();
    let blocks = rows * cols / GROUP;
    if !cols.is_multiple_of(GROUP) || raw.len() != blocks * block_bytes {
        return None;
    }
    let mut packed = Vec::with_capacity(rows * cols * bits / 32);
    let mut scales = Vec::with_capacity(blocks);
    let mut biases = Vec::with_capacity(blocks);
    for b in raw.chunks(block_bytes) {
        let (v, s, z) = block(ty, b)?;
        pack(&v, bits, &mut packed);
        scales.push(s);
        biases.push(z);
    }
    let (r, c) = (rows as i32, cols as i32);
    Some(MlxQuantized {
        packed: Array::from_slice(&packed, &[r, c * bits as i32 / 32]),
        scales: Array::from_slice(&scales, &[r, c / GROUP as i32]),
        biases: Array::from_slice(&biases, &[r, c / GROUP as i32]),
        bits: bits as i32,
    })
}
