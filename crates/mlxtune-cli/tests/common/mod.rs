//! Helpers shared by the CLI's test binaries: fixture paths and running `mlxtune`.
#![allow(dead_code)]

#[path = "../../../../tests/support/postgres.rs"]
pub mod postgres;
pub mod service;

use std::path::PathBuf;
use std::process::{Command, Output};

/// A committed tiny model (`tests/fixtures/models/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

/// Runs the built `mlxtune` binary to its end.
pub fn mlxtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlxtune"))
        .args(args)
        .output()
        .expect("mlxtune runs")
}

/// A finished command's output, after failing the test with its stderr if it failed.
pub fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
