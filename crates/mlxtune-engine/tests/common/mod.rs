//! Shared helpers of the engine's integration tests: fixture paths, reference files,
//! array comparisons.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use mlxtune_engine::mlx_rs::{Array, Dtype};
use mlxtune_engine::weights;

/// Architectures with committed fixtures (tiny random checkpoints + transformers outputs).
pub const ARCHS: &[&str] = &["lfm2", "llama", "qwen2", "qwen3"];

pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MLXTUNE_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models"),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Reference tensors written by scripts/fixtures/make_fixtures.py.
pub struct Reference {
    pub tensors: weights::Weights,
    pub json: serde_json::Value,
}

impl Reference {
    pub fn load(name: &str) -> Reference {
        let dir = fixture(name);
        let tensors =
            weights::load_file(&dir.join("reference.safetensors")).expect("reference.safetensors");
        let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        Reference {
            tensors,
            json: serde_json::from_str(&text).expect("reference.json parses"),
        }
    }

    pub fn ints(&self, name: &str) -> Vec<i32> {
        let a = self.tensors[name].as_dtype(Dtype::Int32).expect("cast");
        a.eval().expect("eval");
        a.as_slice::<i32>().to_vec()
    }

    pub fn array(&self, name: &str) -> &Array {
        &self.tensors[name]
    }
}

/// Largest absolute difference between two arrays of the same shape, in f32.
pub fn max_abs_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let d = a
        .as_dtype(Dtype::Float32)
        .unwrap()
        .subtract(b.as_dtype(Dtype::Float32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap();
    d.eval().unwrap();
    d.item_cast::<f32>()
}

/// Seeded normal numbers (f32) of standard deviation `scale`: a test's inputs repeat from
/// run to run.
pub fn normal(shape: &[i32], scale: f32, seed: u64) -> Array {
    let key = mlxtune_engine::mlx_rs::random::key(seed).unwrap();
    mlxtune_engine::mlx_rs::random::normal::<f32>(shape, None, Some(scale), &key).unwrap()
}

/// Largest absolute value of an array.
pub fn max_abs(a: &Array) -> f32 {
    let m = a
        .as_dtype(Dtype::Float32)
        .unwrap()
        .abs()
        .unwrap()
        .max(None)
        .unwrap();
    m.eval().unwrap();
    m.item_cast::<f32>()
}

/// The dtypes the fidelity tests run in: f32 always; bf16 too (set
/// MLXTUNE_TEST_DTYPES=f32 to skip it).
pub fn test_dtypes() -> Vec<Dtype> {
    match std::env::var("MLXTUNE_TEST_DTYPES") {
        Ok(s) => s
            .split(',')
            .map(|d| weights::parse_dtype(d.trim()).expect("dtype"))
            .collect(),
        Err(_) => vec![Dtype::Float32, Dtype::Bfloat16],
    }
}

/// Copies a fixture to a fresh temporary directory (for tests that damage it).
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture exists") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}
pub mod train;
