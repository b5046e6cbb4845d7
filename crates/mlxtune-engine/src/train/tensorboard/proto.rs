//! The few protobuf messages of TensorBoard's event files, encoded by hand (the schema is
//! small and fixed): `Event { wall_time = 1; step = 2; file_version = 3; summary = 5 }`,
//! `Summary { repeated Value value = 1 }`, `Value { tag = 1; simple_value = 2; histo = 5 }`,
//! `HistogramProto { min = 1; max = 2; num = 3; sum = 4; sum_squares = 5;
//! repeated bucket_limit = 6; repeated bucket = 7 }`.

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const BYTES: u32 = 2;
const FIXED32: u32 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, BYTES);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn packed_doubles(out: &mut Vec<u8>, field: u32, values: &[f64]) {
    let body: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes(out, field, &body);
}

/// A histogram as TensorBoard stores it: `bucket[i]` counts values in
/// `(bucket_limit[i-1], bucket_limit[i]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub min: f64,
    pub max: f64,
    pub num: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub bucket_limit: Vec<f64>,
    pub bucket: Vec<f64>,
}

/// What a summary value holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f32),
    Histogram(Histogram),
}

fn histogram(h: &Histogram) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, v) in [
        (1, h.min),
        (2, h.max),
        (3, h.num),
        (4, h.sum),
        (5, h.sum_squares),
    ] {
        double(&mut out, field, v);
    }
    packed_doubles(&mut out, 6, &h.bucket_limit);
    packed_doubles(&mut out, 7, &h.bucket);
    out
}

fn summary_value(tag: &str, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(&mut out, 1, tag.as_bytes());
    match value {
        Value::Scalar(v) => {
            key(&mut out, 2, FIXED32);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Histogram(h) => bytes(&mut out, 5, &histogram(h)),
    }
    out
}

fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut out = Vec::new();
    double(&mut out, 1, wall_time);
    key(&mut out, 2, VARINT);
    varint(&mut out, step as u64);
    out
}

/// The first event of every file: its format version.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = event_head(wall_time, 0);
    bytes(&mut out, 3, b"brain.Event:2");
    out
}

/// An event holding one summary of tagged values.
pub fn summary_event(wall_time: f64, step: i64, values: &[(&str, Value)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        bytes(&mut summary, 1, &summary_value(tag, v));
    }
    let mut out = event_head(wall_time, step);
    bytes(&mut out, 5, &summary);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, vec![0xAC, 0x02]);
        let mut one = Vec::new();
        varint(&mut one, 1);
        assert_eq!(one, vec![1]);
    }

    #[test]
    fn a_scalar_summary_has_the_documented_layout() {
        let e = summary_event(1.5, 3, &[("loss", Value::Scalar(2.0))]);
        // wall_time (field 1, fixed64), step (field 2, varint 3), summary (field 5, bytes).
        assert_eq!(e[0], 0x09);
        assert_eq!(&e[1..9], &1.5f64.to_le_bytes());
        assert_eq!(&e[9..11], &[0x10, 3]);
        assert_eq!(e[11], 0x2A);
        // Summary.value (field 1) → Value { tag (1) = "loss", simple_value (2, fixed32) }.
        let value = [0x0A, 4, b'l', b'o', b's', b's', 0x15, 0, 0, 0, 0x40];
        assert_eq!(&e[12..], &[&[13u8, 0x0A, 11][..], &value[..]].concat()[..]);
    }
}
