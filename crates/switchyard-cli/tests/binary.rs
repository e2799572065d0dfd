//! The `switchyard` binary itself: the README's story, the routes commands, SIGTERM.
//!
//! The server is another process, so tokio's paused clock cannot reach it: these tests wait on
//! the wall clock, always for a condition and with a deadline that only bounds a failure.
#![expect(
    clippy::disallowed_methods,
    reason = "a child process runs on the wall clock"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A minimal HTTP/1.1 POST, so this test depends on nothing but the standard library.
fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, body)
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn routes(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("routes")
        .args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(db: &Path) -> Self {
        Self::start_with(db, &[], "http")
    }

    /// `serve` on a free port over `db`, with `extra` arguments; the first line names the
    /// address, under `scheme`.
    fn start_with(db: &Path, extra: &[&std::ffi::OsStr], scheme: &str) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--poll-interval",
                "20ms",
                "--db",
            ])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix(format!("switchyard listening on {scheme}://").as_str())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { child, addr }
    }

    /// Polls until `check` holds; the bound is a failure deadline, not a wait.
    fn eventually(&self, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "the change never went live");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server {
    /// SIGTERM, then the exit: it must stop accepting, finish and exit 0.
    fn terminate(&mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn the_readme_story_then_a_clean_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchyard.db");
    let mut server = Server::start(&db);
    assert_eq!(
        post(server.addr, "/billing", "$100"),
        (200, "billed:$100".to_owned())
    );
    // The call is counted (the recorder is installed before any route is built).
    let (status, metrics) = request(server.addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"switchyard_router_calls_total{service="billing",strategy="local",outcome="ok"} 1"#
        ),
        "{metrics}"
    );

    // The README's one-liner, as any other process would write it.
    let shell = rusqlite::Connection::open(&db).unwrap();
    shell
        .execute(
            "UPDATE routes SET strategy='noop' WHERE service_name='billing'",
            [],
        )
        .unwrap();
    server.eventually(|| post(server.addr, "/billing", "$200").0 == 204);

    // And back, through the routes command.
    let out = routes(&db, &["strategy", "billing", "local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.eventually(|| post(server.addr, "/billing", "$300") == (200, "billed:$300".to_owned()));

    // SIGTERM: stop accepting, finish, exit 0.
    server.terminate();
}

/// Every connection is answered whichever thread the kernel hands it to, per-core or shared;
/// a taken port and a bad `--workers` are refused.
#[test]
fn serve_answers_on_every_worker_thread_and_refuses_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("switchyard.db");
    for workers in ["3", "shared"] {
        let mut server = Server::start_with(&db, &["--workers".as_ref(), workers.as_ref()], "http");
        // A new connection each: the kernel spreads them over the worker sockets.
        for i in 0..30 {
            let body = format!("${i}");
            assert_eq!(
                post(server.addr, "/billing", &body),
                (200, format!("billed:{body}")),
                "--workers {workers}"
            );
        }
        // (Counted once they answered: the sockets listen before the threads start.)
        #[cfg(target_os = "linux")]
        {
            let threads = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
                .unwrap()
                .filter(|task| {
                    let comm = task.as_ref().unwrap().path().join("comm");
                    std::fs::read_to_string(comm).is_ok_and(|n| n.starts_with("switchyard-work"))
                })
                .count();
            assert_eq!(
                threads,
                if workers == "3" { 3 } else { 0 },
                "--workers {workers}"
            );
        }
        if workers == "3" {
            // A port a gateway serves is refused to another, not shared with it.
            let out = Command::new(BIN)
                .args(["serve", "--listen", &server.addr.to_string(), "--db"])
                .arg(dir.path().join("other.db"))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.to_lowercase().contains("address already in use"),
                "{stderr}"
            );
        }
        server.terminate();
    }
    let out = Command::new(BIN)
        .args(["serve", "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must be at least 1 (or `shared`)"),
        "{stderr}"
    );
}

#[test]
fn the_routes_commands_read_write_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routes.db");
    let ok = |args: &[&str]| {
        let out = routes(&db, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&[
        "set",
        "billing",
        "--strategy",
        "http",
        "--endpoint",
        "http://billing.internal/x",
        "--config",
        r#"{"timeout": "2s"}"#,
    ]);
    ok(&["set", "echo", "--strategy", "local"]);
    let list = ok(&["list"]);
    assert!(
        list.contains("billing")
            && list.contains("http://billing.internal/x")
            && list.contains("echo"),
        "{list}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&["list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let got: serde_json::Value = serde_json::from_str(&ok(&["get", "billing"])).unwrap();
    assert_eq!(got["config"], r#"{"timeout": "2s"}"#);
    ok(&["strategy", "billing", "noop"]);
    ok(&["delete", "echo"]);

    let missing = dir.path().join("typo.db");
    let out = routes(&missing, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no routes database at"));
    assert!(
        !missing.exists(),
        "a mistyped --db must not create a database"
    );

    let refused: [(&[&str], &str); 5] = [
        (&["get", "nobody"], "no route named \"nobody\""),
        (
            &[
                "set",
                "billing",
                "--strategy",
                "local",
                "--config",
                r#"{"retry": {"max_attempts": 0}}"#,
            ],
            "retry.max_attempts",
        ),
        (
            &["set", "bad name", "--strategy", "local"],
            "invalid service name",
        ),
        (&["strategy", "billing", "NOOP"], "invalid strategy"),
        (&["delete", "echo"], "no route named \"echo\""),
    ];
    for (args, says) in refused {
        let out = routes(&db, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Nothing bad was written.
    let got: serde_json::Value = serde_json::from_str(&ok(&["get", "billing"])).unwrap();
    assert_eq!(got["strategy"], "noop");

    // Usage errors are clap's: exit 2.
    let out = Command::new(BIN)
        .args(["serve", "--poll-interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--poll-interval"));
}

/// `serve --tls-cert --tls-key`, then `curl --cacert` against it, as an operator would.
#[test]
fn serve_over_https_answers_curl_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = switchyard_client::test_util::TestCa::new("gateway CA");
    let (cert, key) = ca
        .server(&["127.0.0.1", "localhost"])
        .write(dir.path(), "server");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let server = Server::start_with(
        &dir.path().join("routes.db"),
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
        "https",
    );
    let url = format!("https://localhost:{}/billing", server.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", server.addr.port());
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "10",
                "--resolve",
                &resolve,
                "-d",
                "$100",
            ])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl runs")
    };
    let out = curl(&["--cacert", ca_file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "billed:$100");
    // Without the CA, curl refuses the certificate.
    let out = curl(&[]);
    assert!(!out.status.success());

    // A missing key is refused before anything listens.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.path().join("missing.key"))
        .arg("--db")
        .arg(dir.path().join("routes.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("AUTH_1104 invalid `tls_key`"), "{stderr}");
    // And --tls-cert alone is a usage error.
    let out = Command::new(BIN)
        .args(["serve", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
