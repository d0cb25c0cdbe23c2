//! The Node.js interop suites in `tests/node`, run with Node's own test
//! runner against an in-process router, once with `--cores 1` and once with
//! `--cores 2` (the router hands connections to its workers round-robin, so
//! there consecutive connections land on different workers; the files run
//! one at a time, `--test-concurrency=1`, so that a test's own consecutive
//! connections are consecutive at the router):
//! - `wamp.test.mjs`: autobahn-js and wampy, JSON, MessagePack and CBOR;
//! - `advanced.test.mjs`: the WAMP Advanced Profile features the router
//!   announces, with autobahn-js and wampy;
//! - `registration.test.mjs`: pattern-based and shared registrations, with
//!   autobahn-js and wampy;
//! - `meta.test.mjs`: the session, subscription and registration meta API,
//!   registration revocation and testaments, with autobahn-js and wampy
//!   (its kill_by_authrole / kill_all test ends every other session of
//!   realm1, which is why the files must not run at once);
//! - `mqtt.test.mjs`: MQTT.js, MQTT 3.1, 3.1.1 and 5.
//!
//! Needs `node` and `npm` on PATH (scripts/test installs them on Debian).
//! The npm packages are installed from `tests/node/package-lock.json` into
//! `tests/node/node_modules` on first run (`npm install --no-save
//! --ignore-scripts`, as scripts/test does: the
//! clients' native add-ons are optional and not built).

#[allow(unused_imports)]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The whole Node suite, npm install excluded.
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

/// The suite runs on one router at a time: the timeout and cancel tests
/// time things, and two suites at once on a small machine would skew them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("node")
}

/// Installs the pinned packages unless `node_modules` is newer than the lock.
fn npm_install() {
    let dir = node_dir();
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules").join(".package-lock.json");
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if fresh(&stamp).is_some() && fresh(&stamp) >= fresh(&lock) {
        return;
    }
    let out = Command::new("npm")
        .args(["install", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run npm ({e}): the Node interop tests need Node.js and npm (scripts/test installs them)")
        });
    assert!(
        out.status.success(),
        "npm install in tests/node failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn node_interop_suites_one_core() {
    node_interop_suites("1");
}

#[test]
fn node_interop_suites_two_cores() {
    node_interop_suites("2");
}

fn node_interop_suites(cores: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    npm_install();
    let r = common::router(&["--cores", cores]);
    let mqtt = r.mqtt_addr.expect("MQTT listener");
    let mut child = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter", "tap"])
        .arg(node_dir())
        .env("FENNEC_URL", format!("ws://{}/ws", r.local_addr))
        .env("FENNEC_MQTT", mqtt.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): the Node interop tests need Node.js"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
    println!("{out}");
    let status =
        status.unwrap_or_else(|| panic!("the Node suite on --cores {cores} ran over {SUITE_TIMEOUT:?}\n{out}\n{err}"));
    assert!(status.success(), "the Node interop suite failed on --cores {cores} ({status}):\n{out}\n{err}");
    // A suite that found no tests must not pass.
    assert!(out.contains("# pass ") && !out.contains("# pass 0"), "no Node test ran:\n{out}");
    r.shutdown();
}
