//! The binary's log: `--log-level` filters RUST_LOG-style, lines go to
//! stderr with a time, a level and a target, and a session's open and close
//! (with its reason) are there at `debug`; a bad filter stops the start.

#[allow(unused_imports)]
mod common;

use common::join;
use fennec::wamp::message::Serializer;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

fn start(filter: &str) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args([
            "--cores",
            "1",
            "--no-pin",
            "--listen",
            "127.0.0.1:0",
            "--no-mqtt",
            "--durability",
            "none",
            "--log-level",
            filter,
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fennec");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            let mut err = String::new();
            let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
            panic!("fennec exited before listening: {err}");
        };
        if let Some(rest) = line.strip_prefix("fennec listening on ws://") {
            let addr = rest.split_once('/').map_or(rest, |(a, _)| a);
            break addr.parse().expect("an address");
        }
    };
    (child, addr)
}

fn stop(mut child: std::process::Child) -> String {
    // SIGTERM: the router logs "stopped" and waits for the log thread.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success());
    err
}

#[test]
fn sessions_are_logged_at_debug_and_filtered_out_above() {
    let (child, addr) = start("warn,wamp=debug");
    let client = join(addr, Serializer::Json);
    drop(client);
    // The close is seen once the router has read the EOF: a second session
    // opened after it on the same worker is logged after it.
    let again = join(addr, Serializer::Json);
    drop(again);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let err = stop(child);
    let opened: Vec<&str> = err.lines().filter(|l| l.contains("WAMP session") && l.contains("opened")).collect();
    assert_eq!(opened.len(), 2, "{err}");
    let line = opened[0];
    // `2026-12-01T18:15:46.123Z DEBUG wamp::session: worker 0: WAMP session ...`
    assert!(line.len() > 24 && line.as_bytes()[10] == b'T' && line[..24].ends_with('Z'), "{line}");
    assert!(
        line.contains(" DEBUG wamp::session: ") && line.contains("realm 'realm1'") && line.contains("from 127.0.0.1:")
    );
    assert!(err.lines().any(|l| l.contains("WAMP session") && l.contains("closed: lost")), "{err}");
    // `info` lines are under the `warn` default: "stopped" is not there.
    assert!(!err.contains("stopped"), "{err}");
}

#[test]
fn info_by_default_and_a_bad_filter_refuses_to_start() {
    let (child, addr) = start("info");
    drop(join(addr, Serializer::Json));
    let err = stop(child);
    assert!(err.contains(" INFO ") && err.contains("stopped"), "{err}");
    assert!(!err.contains("WAMP session"), "no debug lines at info: {err}");
    let out = Command::new(env!("CARGO_BIN_EXE_fennec")).args(["--log-level", "wamp=loud"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown log level 'loud'"));
}
