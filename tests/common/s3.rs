//! A real S3-compatible server (moto) on loopback, started by the tests that need it and
//! stopped with them (`tests/fixtures/s3_server.py`).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

pub struct S3Server {
    pub endpoint: String,
    _child: Child,
    // Closing it (on drop, or at exit) stops the server.
    _stdin: ChildStdin,
}

/// The bucket every test uses (each under its own prefix).
pub const BUCKET: &str = "promptad-it";

/// The server of this test binary, started on first use; the process environment then holds the
/// AWS_* settings that `AmazonS3Builder::from_env` reads (the same for every test of the binary,
/// so setting them once is race-free), and child `promptad` processes inherit them.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = spawn(&[BUCKET], &[]);
        for (key, value) in env(&server.endpoint) {
            // Edition 2021: not unsafe; every caller sets the same values.
            std::env::set_var(key, value);
        }
        server
    })
}

/// A second server that checks credentials (moto's IAM emulation from the first request on):
/// the test credentials are unknown to it, so every request is denied (403).
pub fn denying_server() -> S3Server {
    spawn(&[], &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
}

fn spawn(buckets: &[&str], extra_env: &[(&str, &str)]) -> S3Server {
    // Standalone (benches include this file too): the venv's Python, the fixture by path.
    let python = std::env::var("PROMPTAD_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/promptad/venv/bin/python", std::env::var("HOME").unwrap_or_default()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s3_server.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(buckets)
        .envs(extra_env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the S3 test server (run scripts/bootstrap.sh: it installs moto[server])");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the S3 test server did not start: {line:?}"));
    let stdin = child.stdin.take().unwrap();
    S3Server { endpoint: format!("http://127.0.0.1:{port}"), _child: child, _stdin: stdin }
}

/// The environment a client of `endpoint` needs.
pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
        // A refused connection fails at once instead of after minutes of retries.
        ("PROMPTAD_S3_MAX_RETRIES", "1".into()),
        ("PROMPTAD_S3_RETRY_TIMEOUT_S", "10".into()),
    ]
}

/// `s3://<bucket>/<prefix>` for a test, unique per call.
pub fn url(prefix: &str) -> String {
    server();
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("s3://{BUCKET}/{prefix}-{}-{n}", std::process::id())
}
