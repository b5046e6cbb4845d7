//! A new user's first hour (issue 17): `serve` from any directory, strict settings, choice
//! flags checked by clap, `--set` overrides, errors printed once.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn mlxtune(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mlxtune"));
    c.current_dir(dir)
        .env("HOME", dir.join("home"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("MLXTUNE_HOME")
        .env_remove("MLXTUNE_CONFIG_DIR")
        .env_remove("MLXTUNE_DATA_DIR");
    c
}

/// The line `serve` prints once it listens.
fn serving_line(mut c: Command) -> (std::process::Child, String) {
    let mut child = c.stderr(Stdio::piped()).spawn().unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if line.starts_with("mlxtune serving on port ") {
            return (child, line);
        }
    }
    panic!("serve exited: {:?}", child.wait());
}

#[test]
fn serve_starts_outside_a_checkout_with_built_in_defaults_and_prints_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = mlxtune(dir.path());
    c.args(["serve", "--port", "0", "--host", "127.0.0.1"]);
    let (mut child, line) = serving_line(c);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("at http://127.0.0.1:"), "{line}");
    let data = dir.path().join("home/.local/share/mlxtune/data");
    assert!(line.contains(&data.display().to_string()), "{line}");
    assert!(data.join("mlxtune.sqlite3").exists());

    let mut c = mlxtune(dir.path());
    let own = dir.path().join("own-data");
    c.args(["serve", "--port", "0", "--data-dir", own.to_str().unwrap()]);
    let (mut child, line) = serving_line(c);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains(&own.display().to_string()), "{line}");
}

#[test]
fn a_misspelled_setting_is_named_with_the_closest_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.toml");
    std::fs::write(&file, "[server]\nprot = 9000\n").unwrap();
    let out = mlxtune(dir.path())
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.prot is an unknown field; did you mean server.port?"),
        "{err}"
    );
}
