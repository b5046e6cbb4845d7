//! A throwaway PostgreSQL server for the tests that run mlxtune on PostgreSQL: Debian's
//! `postgresql` (installed by scripts/setup.sh) started by scripts/pg-scratch.sh in a
//! temporary directory on a free local port, stopped when dropped. Included by the test
//! crates that need it (`#[path]`), so there is one copy.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: tempfile::TempDir,
    /// `postgres://mlxtune@127.0.0.1:<port>/mlxtune`
    pub url: String,
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-scratch.sh")
}

impl Postgres {
    /// Starts a new cluster; fails the test, with the reason, when PostgreSQL cannot run.
    pub fn start() -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        // As root, the cluster runs as the `postgres` user, which must reach it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", dir.path().join("pg").to_str().expect("utf-8")])
            .arg(port.to_string())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "starting PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Postgres { dir, url, port }
    }

    /// Runs SQL on `database` with psql, as another client would; its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let url = format!("postgres://mlxtune@127.0.0.1:{}/{database}", self.port);
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                &url,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().join("pg").to_str().unwrap_or("")])
            .output();
    }
}
