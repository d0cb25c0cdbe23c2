//! Interop tests against real third-party clients: autobahn-python (WAMP)
//! and Eclipse Paho (MQTT).
//!
//! These tests start the `fennec` binary on ephemeral ports and drive it
//! with the Python tests in `tests/interop/` (pytest + autobahn, pytest +
//! paho-mqtt), run from a virtualenv at `target/pyenv` that is created on
//! first use from `tests/interop/requirements.txt` (`.ci/run` pre-creates it
//! the same way). The WAMP suite runs against a router without MQTT, with
//! `--cores 2`; the WAMP Advanced Profile files (`ADVANCED_TESTS`) run again
//! against one with `--cores 1`. The MQTT files (`MQTT_TESTS`) run against
//! one with its MQTT listener, whose address they get in `FENNEC_MQTT`.
//!
//! If the virtualenv cannot be created (no `python3`, no PyPI access) the
//! tests fail with a message saying so; they never pass silently.
//!
//! Environment knobs:
//! - `FENNEC_PYTHON`: the Python used to create the virtualenv (default `python3`).
//! - `FENNEC_INTEROP_ARGS`: extra pytest arguments, split on whitespace
//!   (e.g. `-k rpc -x`).

#[allow(unused_imports)]
mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const PYTEST_TIMEOUT: Duration = Duration::from_secs(600);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const READY_MARKER: &str = "fennec listening on ws://";
const MQTT_READY_MARKER: &str = "fennec MQTT listening on mqtt://";
const RAWSOCKET_READY_MARKER: &str = "fennec RawSocket listening on tcp://";
/// The pytest files that need the MQTT listener (`FENNEC_MQTT`).
const MQTT_TESTS: &[&str] = &[
    "test_mqtt_paho.py",
    "test_mqtt_conformance.py",
    "test_mqtt_history.py",
    "test_mqtt_auth.py",
    "test_mqtt_tls.py",
    "test_mqtt_reducers.py",
    "test_mqtt_tables.py",
    "test_tables_restart.py",
];
/// The pytest files of the WAMP Advanced Profile features, run a second
/// time on one worker (`autobahn_advanced_profile_one_core`).
const ADVANCED_TESTS: &[&str] = &[
    "test_progressive.py",
    "test_timeout.py",
    "test_cancel.py",
    "test_disclosure.py",
    "test_blackwhite.py",
    "test_rawsocket.py",
    "test_patterns.py",
    "test_registration.py",
    "test_meta.py",
    "test_progressive_invocations.py",
    "test_ppt.py",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn interop_dir() -> PathBuf {
    repo_root().join("tests").join("interop")
}

// ---------------------------------------------------------------------------
// Python virtualenv
// ---------------------------------------------------------------------------

/// Creates `target/pyenv` (once per process) and returns its python binary.
fn pyenv_python() -> PathBuf {
    static PYENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYENV.get_or_init(setup_pyenv) {
        Ok(python) => python.clone(),
        Err(msg) => panic!("interop test setup failed: {msg}"),
    }
}

fn setup_pyenv() -> Result<PathBuf, String> {
    let venv = repo_root().join("target").join("pyenv");
    let python = venv.join("bin").join("python");
    let requirements = interop_dir().join("requirements.txt");
    let wanted =
        fs::read_to_string(&requirements).map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    // The stamp holds the requirements the venv was built from; a changed
    // requirements.txt rebuilds the packages.
    let stamp = venv.join(".fennec-requirements");
    if python.exists() && fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }

    if !python.exists() {
        let base = std::env::var("FENNEC_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let out = Command::new(&base)
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .map_err(|e| format!("cannot run `{base} -m venv` (is Python 3 installed?): {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`{base} -m venv {}` failed ({}); on Debian install python3-venv\n{}",
                venv.display(),
                out.status,
                output_text(&out)
            ));
        }
    }

    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r"])
        .arg(&requirements)
        .output()
        .map_err(|e| format!("cannot run pip in {}: {e}", venv.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`pip install -r {}` failed ({}): the interop tests need the Python packages \
             autobahn, msgpack, cbor2, paho-mqtt and pytest from PyPI (network access to PyPI required)\n{}",
            requirements.display(),
            out.status,
            output_text(&out)
        ));
    }
    fs::write(&stamp, &wanted).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(python)
}

fn output_text(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `Command` for the virtualenv's python, set up for the interop scripts.
fn python_command(url: &str) -> Command {
    let mut cmd = Command::new(pyenv_python());
    cmd.current_dir(repo_root())
        .env("FENNEC_URL", url)
        // test_tables_restart.py starts (and kills) a router of its own.
        .env("FENNEC_BIN", fennec_bin())
        // Keep the source tree clean (no __pycache__ under tests/interop).
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONPATH", interop_dir())
        .stdin(Stdio::null());
    cmd
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Kills (SIGKILL) and reaps the child on drop unless it has already exited.
struct KillOnDrop {
    child: Child,
    name: &'static str,
}

impl KillOnDrop {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit, at most `timeout`.
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() >= deadline => return None,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for {} failed: {e}", self.name),
            }
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Collects a child's output stream on a thread; lines also go to a channel.
struct StreamCollector {
    text: Arc<Mutex<String>>,
    lines: Receiver<String>,
    handle: Option<thread::JoinHandle<()>>,
}

impl StreamCollector {
    fn new<R: Read + Send + 'static>(stream: R, echo_prefix: Option<&'static str>) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&text);
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if let Some(prefix) = echo_prefix {
                            // Shown by the test harness only when a test fails.
                            eprint!("[{prefix}] {line}");
                        }
                        sink.lock().unwrap().push_str(&line);
                        let _ = tx.send(line.trim_end().to_string());
                    }
                }
            }
        });
        StreamCollector { text, lines: rx, handle: Some(handle) }
    }

    /// Waits for a line for which `pick` returns Some, at most `timeout`.
    fn wait_line<T>(&self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// All output so far; after the child exited, waits for end of stream first.
    fn finish(&mut self) -> String {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.text.lock().unwrap().clone()
    }

    fn snapshot(&self) -> String {
        self.text.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------
// The router
// ---------------------------------------------------------------------------

struct Router {
    proc: KillOnDrop,
    stdout: StreamCollector,
    stderr: StreamCollector,
    url: String,
    /// `HOST:PORT` of the MQTT listener (routers started with `start_with_mqtt`).
    mqtt: Option<String>,
    /// `HOST:PORT` of the RawSocket listener (routers started with `--rawsocket`).
    rawsocket: Option<String>,
    /// `wss://localhost:PORT/ws`: the TLS WebSocket listener.
    wss: String,
    /// `localhost:PORT` of the MQTT-over-TLS listener (with MQTT).
    mqtt_tls: Option<String>,
    /// The test CA that signed the router's certificate (PEM file).
    ca: std::path::PathBuf,
    /// The router's own data directory (the default durability, `sync`):
    /// removed with the router.
    _data: tempfile::TempDir,
    _tls: tempfile::TempDir,
}

/// The port from `... listening on SCHEME://HOST:PORT...` after `marker`.
fn parse_tls_ready_line(line: &str, marker: &str) -> Option<u16> {
    let rest = line.split(marker).nth(1)?.trim();
    let port: u16 = rest.split('/').next()?.rsplit(':').next()?.parse().ok()?;
    (port != 0).then_some(port)
}

fn fennec_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fennec")
}

/// `--no-mqtt` is optional in the router's contract: pass it only if `--help` lists it.
fn supports_flag(flag: &str) -> bool {
    static HELP: OnceLock<String> = OnceLock::new();
    let help = HELP.get_or_init(|| match Command::new(fennec_bin()).arg("--help").output() {
        Ok(out) => format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        Err(_) => String::new(),
    });
    help.contains(flag)
}

fn parse_ready_line(line: &str) -> Option<String> {
    let start = line.find(READY_MARKER)?;
    let url = line[start + "fennec listening on ".len()..].trim();
    // ws://127.0.0.1:PORT/ws
    let port: u16 = url.strip_prefix("ws://")?.split('/').next()?.rsplit(':').next()?.parse().ok()?;
    (port != 0).then(|| format!("ws://127.0.0.1:{port}/ws"))
}

/// `HOST:PORT` from `fennec RawSocket listening on tcp://HOST:PORT`.
fn parse_rawsocket_ready_line(line: &str) -> Option<String> {
    let addr = line.split(RAWSOCKET_READY_MARKER).nth(1)?.trim();
    let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
    (port != 0).then(|| addr.to_string())
}

/// `HOST:PORT` from `fennec MQTT listening on mqtt://HOST:PORT and ws://...`.
fn parse_mqtt_ready_line(line: &str) -> Option<String> {
    let start = line.find(MQTT_READY_MARKER)?;
    let addr = line[start + MQTT_READY_MARKER.len()..].split_whitespace().next()?;
    let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
    (port != 0).then(|| addr.to_string())
}

impl Router {
    /// A router without MQTT (where the router can turn it off), two workers.
    fn start(extra_args: &[&str]) -> Router {
        Router::spawn(false, "2", extra_args)
    }

    /// A router without MQTT with `cores` workers.
    fn start_on_cores(cores: &str, extra_args: &[&str]) -> Router {
        Router::spawn(false, cores, extra_args)
    }

    /// A router with its MQTT listener on an ephemeral port.
    fn start_with_mqtt(extra_args: &[&str]) -> Router {
        Router::spawn(true, "2", extra_args)
    }

    fn spawn(mqtt: bool, cores: &str, extra_args: &[&str]) -> Router {
        let data = tempfile::tempdir().expect("a data directory");
        let tls = tempfile::tempdir().expect("a directory for the test CA");
        common::pki::write(tls.path());
        let mut cmd = Command::new(fennec_bin());
        cmd.args(["--cores", cores, "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"]);
        cmd.args(["--wss", "127.0.0.1:0"]).arg("--tls-cert").arg(tls.path().join("cert.pem"));
        cmd.arg("--tls-key").arg(tls.path().join("key.pem"));
        if mqtt {
            cmd.args(["--mqtt-tls", "127.0.0.1:0"]);
        }
        cmd.arg("--data").arg(data.path());
        // realm1 with event history for test_history.py.
        cmd.arg("--config").arg(interop_dir().join("fennec.toml"));
        if !mqtt && supports_flag("--no-mqtt") {
            cmd.arg("--no-mqtt");
        }
        cmd.args(extra_args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", fennec_bin()));
        let stdout = StreamCollector::new(child.stdout.take().unwrap(), Some("fennec stdout"));
        let stderr = StreamCollector::new(child.stderr.take().unwrap(), Some("fennec stderr"));
        let mut proc = KillOnDrop { child, name: "fennec" };
        let Some(url) = stdout.wait_line(READY_TIMEOUT, parse_ready_line) else {
            let status = proc.wait_timeout(Duration::from_millis(200));
            panic!(
                "fennec did not print `{READY_MARKER}127.0.0.1:PORT/ws` within {READY_TIMEOUT:?} \
                 (exit status: {status:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                stdout.snapshot(),
                stderr.snapshot()
            );
        };
        let mqtt = mqtt.then(|| {
            let addr = stdout.wait_line(READY_TIMEOUT, parse_mqtt_ready_line);
            addr.unwrap_or_else(|| {
                panic!(
                    "fennec did not print `{MQTT_READY_MARKER}127.0.0.1:PORT ...` within {READY_TIMEOUT:?}\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    stdout.snapshot(),
                    stderr.snapshot()
                )
            })
        });
        let rawsocket = extra_args.contains(&"--rawsocket").then(|| {
            stdout.wait_line(READY_TIMEOUT, parse_rawsocket_ready_line).unwrap_or_else(|| {
                panic!(
                    "fennec did not print `{RAWSOCKET_READY_MARKER}HOST:PORT`\n--- stdout ---\n{}",
                    stdout.snapshot()
                )
            })
        });
        let wss = stdout.wait_line(READY_TIMEOUT, |l| parse_tls_ready_line(l, "TLS listening on wss://"));
        let Some(wss) = wss.map(|port| format!("wss://localhost:{port}/ws")) else {
            panic!("fennec did not print its wss:// listener\n--- stdout ---\n{}", stdout.snapshot());
        };
        let mqtt_tls = mqtt.is_some().then(|| {
            let port = stdout.wait_line(READY_TIMEOUT, |l| parse_tls_ready_line(l, "MQTT TLS listening on mqtts://"));
            format!("localhost:{}", port.expect("fennec printed its MQTT TLS listener"))
        });
        let ca = tls.path().join("ca.pem");
        Router { proc, stdout, stderr, url, mqtt, rawsocket, wss, mqtt_tls, ca, _data: data, _tls: tls }
    }

    /// The environment the TLS tests read (FENNEC_WSS, FENNEC_MQTT_TLS, FENNEC_CA).
    fn tls_env(&self, cmd: &mut Command) {
        cmd.env("FENNEC_WSS", &self.wss).env("FENNEC_CA", &self.ca);
        if let Some(m) = &self.mqtt_tls {
            cmd.env("FENNEC_MQTT_TLS", m);
        }
    }

    fn log(&self) -> String {
        format!("--- fennec stdout ---\n{}\n--- fennec stderr ---\n{}", self.stdout.snapshot(), self.stderr.snapshot())
    }

    /// Sends SIGTERM with the `kill` command (std has no signal API).
    fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.proc.pid().to_string()]).status().expect("cannot run `kill`");
        assert!(status.success(), "`kill -TERM` failed: {status}");
    }
}

/// Runs a python child to completion with a timeout; returns (status, stdout, stderr).
fn run_python(mut cmd: Command, timeout: Duration, what: &str) -> (ExitStatus, String, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = StreamCollector::new(child.stdout.take().unwrap(), None);
    let mut err = StreamCollector::new(child.stderr.take().unwrap(), None);
    let mut proc = KillOnDrop { child, name: "python" };
    let status = proc.wait_timeout(timeout);
    drop(proc); // kills it if it is still running
    let (out, err) = (out.finish(), err.finish());
    let Some(status) = status else {
        panic!("{what} did not finish within {timeout:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    };
    (status, out, err)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The whole pytest suite in tests/interop against one router instance.
#[test]
fn autobahn_interop_suite() {
    let _python = pyenv_python();
    let router = Router::start(&["--rawsocket", "127.0.0.1:0"]);

    let mut cmd = python_command(&router.url);
    // test_rawsocket.py reaches the same router over RawSocket.
    cmd.env("FENNEC_RAWSOCKET", router.rawsocket.as_deref().expect("RawSocket address"));
    router.tls_env(&mut cmd);
    // tests/interop/pytest.ini disables the cache provider (no .pytest_cache).
    cmd.args(["-m", "pytest", "-q"]).arg(interop_dir());
    // The MQTT files run in `paho_mqtt_interop_suite`, against a router with MQTT.
    for file in MQTT_TESTS {
        cmd.arg(format!("--ignore={}", interop_dir().join(file).display()));
    }
    if let Ok(extra) = std::env::var("FENNEC_INTEROP_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let (status, out, err) = run_python(cmd, PYTEST_TIMEOUT, "pytest tests/interop");
    println!("{out}");
    assert!(
        status.success(),
        "autobahn interop tests failed against {} ({status})\n--- pytest stdout ---\n{out}\n\
         --- pytest stderr ---\n{err}\n{}",
        router.url,
        router.log()
    );
}

/// The WAMP Advanced Profile pytest files again, against a router with one
/// worker: the whole suite above runs on two, where caller and callee (or
/// publisher and subscriber) usually sit on different workers; here every
/// exchange stays on one.
#[test]
fn autobahn_advanced_profile_one_core() {
    let _python = pyenv_python();
    let router = Router::start_on_cores("1", &["--rawsocket", "127.0.0.1:0"]);

    let mut cmd = python_command(&router.url);
    cmd.env("FENNEC_RAWSOCKET", router.rawsocket.as_deref().expect("RawSocket address"));
    router.tls_env(&mut cmd);
    cmd.args(["-m", "pytest", "-q"]);
    cmd.args(ADVANCED_TESTS.iter().map(|f| interop_dir().join(f)));
    if let Ok(extra) = std::env::var("FENNEC_INTEROP_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let (status, out, err) = run_python(cmd, PYTEST_TIMEOUT, "pytest (Advanced Profile, --cores 1)");
    println!("{out}");
    assert!(
        status.success(),
        "autobahn Advanced Profile tests failed against {} with --cores 1 ({status})\n--- pytest stdout ---\n{out}\n\
         --- pytest stderr ---\n{err}\n{}",
        router.url,
        router.log()
    );
}

/// The MQTT pytest files (paho-mqtt) against one router with its MQTT
/// listener; `FENNEC_MQTT` is its `HOST:PORT`, `FENNEC_URL` its WAMP URL
/// (MQTT over WebSocket is at `/mqtt` on the same port).
#[test]
fn paho_mqtt_interop_suite() {
    let _python = pyenv_python();
    let router = Router::start_with_mqtt(&[]);
    let mqtt = router.mqtt.clone().expect("MQTT address");

    let mut cmd = python_command(&router.url);
    router.tls_env(&mut cmd);
    cmd.env("FENNEC_MQTT", &mqtt).args(["-m", "pytest", "-q"]);
    cmd.args(MQTT_TESTS.iter().map(|f| interop_dir().join(f)));
    if let Ok(extra) = std::env::var("FENNEC_INTEROP_ARGS") {
        cmd.args(extra.split_whitespace());
    }
    let (status, out, err) = run_python(cmd, PYTEST_TIMEOUT, "pytest (paho-mqtt)");
    println!("{out}");
    assert!(
        status.success(),
        "paho-mqtt interop tests failed against mqtt://{mqtt} ({status})\n--- pytest stdout ---\n{out}\n\
         --- pytest stderr ---\n{err}\n{}",
        router.log()
    );
}

/// On SIGTERM, joined sessions get GOODBYE wamp.close.system_shutdown and the
/// router exits with status 0.
#[test]
fn sigterm_sends_system_shutdown_and_exits_zero() {
    let _python = pyenv_python();
    let mut router = Router::start(&[]);

    let mut cmd = python_command(&router.url);
    cmd.arg(interop_dir().join("shutdown_client.py")).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot start shutdown_client.py");
    let mut out = StreamCollector::new(child.stdout.take().unwrap(), None);
    let mut err = StreamCollector::new(child.stderr.take().unwrap(), None);
    let mut client = KillOnDrop { child, name: "shutdown_client.py" };

    let joined = out.wait_line(SCRIPT_TIMEOUT, |l| (l == "JOINED").then_some(()));
    if joined.is_none() {
        let _ = client.wait_timeout(Duration::from_secs(1));
        panic!(
            "shutdown_client.py did not join\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
            out.snapshot(),
            err.snapshot(),
            router.log()
        );
    }

    router.sigterm();
    let router_status = router.proc.wait_timeout(SHUTDOWN_TIMEOUT);
    let client_status = client.wait_timeout(SCRIPT_TIMEOUT);
    drop(client);
    let (out, err) = (out.finish(), err.finish());
    let report = format!(
        "router exit: {router_status:?}, client exit: {client_status:?}\n\
         --- client stdout ---\n{out}\n--- client stderr ---\n{err}\n{}",
        router.log()
    );

    let router_status =
        router_status.unwrap_or_else(|| panic!("fennec did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM\n{report}"));
    assert_eq!(router_status.code(), Some(0), "fennec must exit 0 on SIGTERM\n{report}");
    for ser in ["cbor", "json", "msgpack"] {
        let want = format!("GOODBYE {ser} wamp.close.system_shutdown");
        assert!(
            out.lines().any(|l| l.trim() == want),
            "{ser} session did not get GOODBYE wamp.close.system_shutdown\n{report}"
        );
    }
    assert!(client_status.is_some_and(|s| s.success()), "shutdown_client.py failed\n{report}");
}

/// Without `--any-realm` only realm1 exists; with it any valid realm name works.
#[test]
fn any_realm_flag() {
    let _python = pyenv_python();
    let script = interop_dir().join("any_realm_client.py");
    let check = |router: &Router, args: &[&str]| {
        let mut cmd = python_command(&router.url);
        cmd.arg(&script).args(args);
        let (status, out, err) = run_python(cmd, SCRIPT_TIMEOUT, "any_realm_client.py");
        assert!(
            status.success(),
            "any_realm_client.py {args:?} failed ({status})\n--- stdout ---\n{out}\n\
             --- stderr ---\n{err}\n{}",
            router.log()
        );
    };

    let strict = Router::start(&[]);
    check(&strict, &["expect-join", "realm1"]);
    check(&strict, &["expect-abort", "nosuchrealm", "com.example.realm"]);
    drop(strict);

    let any = Router::start(&["--any-realm"]);
    check(&any, &["expect-join", "realm1", "nosuchrealm", "com.example.realm"]);
}

#[test]
fn ready_line_parsing() {
    assert_eq!(
        parse_ready_line("fennec listening on ws://127.0.0.1:40123/ws").as_deref(),
        Some("ws://127.0.0.1:40123/ws")
    );
    assert_eq!(
        parse_ready_line("2024-01-01 INFO fennec listening on ws://127.0.0.1:9/ws").as_deref(),
        Some("ws://127.0.0.1:9/ws")
    );
    assert_eq!(
        parse_ready_line("fennec listening on ws://127.0.0.1:43153/ws (2 workers)").as_deref(),
        Some("ws://127.0.0.1:43153/ws")
    );
    assert_eq!(parse_ready_line("fennec listening on ws://127.0.0.1:0/ws"), None);
    assert_eq!(parse_ready_line("starting"), None);
    assert_eq!(
        parse_mqtt_ready_line("fennec MQTT listening on mqtt://127.0.0.1:40125 and ws://127.0.0.1:40123/mqtt")
            .as_deref(),
        Some("127.0.0.1:40125")
    );
    assert_eq!(parse_mqtt_ready_line("fennec MQTT listening on mqtt://127.0.0.1:0 and ws://x/mqtt"), None);
    assert_eq!(parse_mqtt_ready_line("fennec listening on ws://127.0.0.1:40123/ws (2 workers)"), None);
}
