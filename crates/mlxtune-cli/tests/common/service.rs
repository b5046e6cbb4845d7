//! A real `mlxtune serve` process for the tests that start, kill and restart servers: its
//! settings in a test directory, plain HTTP requests, waiting for a job's end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fixture;

/// A request's status and JSON body (Null when the body is not JSON).
pub fn http_status(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // Chunked or not: take the JSON object in the body.
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    let value = serde_json::from_str(&body[start..end]).unwrap_or(Value::Null);
    (status, value)
}

/// A request's JSON body.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    http_status(port, method, path, body).1
}

/// Asks for `action` (`pause`, `resume`, `cancel`) on job `id`, which must be accepted (200).
pub fn control(port: u16, id: &str, action: &str) {
    let path = format!("/v1/fine_tuning/jobs/{id}/{action}");
    let (status, body) = http_status(port, "POST", &path, None);
    assert_eq!(status, 200, "{action} {id}: {body}");
}

/// A server process, killed (SIGKILL) when dropped, so a failed test leaves none behind.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// `mlxtune serve` over the settings in `dir/config`, and its port.
pub fn start(dir: &Path) -> (Server, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlxtune"));
    cmd.args([
        "serve",
        "--config-dir",
        dir.join("config").to_str().unwrap(),
    ]);
    start_command(cmd)
}

/// Starts a server command whose stderr announces the port.
pub fn start_command(mut cmd: Command) -> (Server, u16) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let port = loop {
        let Some(line) = lines.next() else {
            panic!(
                "server exited before serving; it said:\n{}",
                seen.join("\n")
            );
        };
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("mlxtune serving on port ") {
            break p.split_whitespace().next().unwrap().parse().unwrap();
        }
        seen.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe; the lines go to the
    // test's captured output, shown when the test fails.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("server: {line}");
        }
    });
    (Server(child), port)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A server in `d` over the llama fixture and a small text dataset. Its lease is short (5 s)
/// so that a restarted server (a new node: another pid) soon takes over the jobs a killed
/// one held.
pub fn setup(d: &Path) {
    copy_dir(&fixture("llama"), &d.join("models/llama-tiny"));
    std::fs::create_dir_all(d.join("datasets")).unwrap();
    std::fs::create_dir_all(d.join("config")).unwrap();
    let lines: Vec<String> = [
        "The quick brown fox.",
        "Pack my box.",
        "Judge my vow.",
        "Lazy dog.",
    ]
    .iter()
    .map(|t| json!({ "text": t }).to_string())
    .collect();
    std::fs::write(d.join("datasets/t.jsonl"), lines.join("\n")).unwrap();
    let settings = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\nmax_body_bytes = 65536\n[storage]\ndata_dir = \"{}\"\ndatabase_path = \"\"\n[workers]\ncount = 1\nlease_seconds = 5\n[paths]\nmodel_roots = [\"{}\"]\ndataset_roots = [\"{}\"]\n[auth]\napi_keys = []\n",
        d.join("data").display(),
        d.join("models").display(),
        d.join("datasets").display()
    );
    std::fs::write(d.join("config/default.toml"), settings).unwrap();
}

/// Waits (3 minutes at most) for the job's final state.
pub fn wait_final(port: u16, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let j = http(port, "GET", &format!("/v1/fine_tuning/jobs/{id}"), None);
        if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "not finished: {j}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
