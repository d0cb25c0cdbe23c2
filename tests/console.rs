//! The web console (`GET /` on the admin listener) in a real browser:
//! headless Chromium (Debian's `chromium`, driven by playwright-core from
//! `tests/browser/console.mjs`) against a router with live WAMP and MQTT
//! traffic. The page must go live, list both sessions and the
//! subscription, show the message total rising, and its "kill" must end
//! the WAMP session (which then gets GOODBYE `wamp.close.killed`).
//!
//! Needs /usr/bin/chromium and tests/node/node_modules/playwright-core
//! (scripts/test installs both). With FENNEC_CONSOLE_SCREENSHOT=PATH the
//! page is also saved there as a PNG (how docs/console.png is made).

#[allow(unused_imports)]
mod common;

use common::raw::{publish_packet, subscribe_packet, Raw};
use common::{args, join};
use fennec::value::{Dict, Value};
use fennec::wamp::message::{Msg, Serializer};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_console_shows_live_state_and_kills_a_session() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(Path::new("/usr/bin/chromium").exists(), "Debian's chromium (scripts/test installs it)");
    assert!(
        root.join("tests/node/node_modules/playwright-core").exists(),
        "playwright-core (scripts/test installs it)"
    );
    let r = common::router(&["--cores", "2", "--admin", "127.0.0.1:0", "--metrics-interval-ms", "200"]);
    let admin = r.admin_addr.unwrap();

    // A WAMP subscriber (the one the console kills), an MQTT subscriber,
    // and a publisher that keeps publishing while the page watches.
    let mut victim = join(r.local_addr, Serializer::Json);
    victim.subscribe("console.t", Dict::new());
    let mut callee = join(r.local_addr, Serializer::Json);
    callee.register("console.proc");
    let (mut m, _) = Raw::connected(r.mqtt_addr.unwrap(), 4, "console-mqtt", true, 60);
    m.send(&subscribe_packet(b"console/t"));
    m.expect(0x90, "SUBACK");
    let victim_id = {
        // Ask the admin API which session ID the subscriber has.
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let state: serde_json::Value = serde_json::from_str(all.split_once("\r\n\r\n").unwrap().1).unwrap();
        let sessions: Vec<serde_json::Value> = state["workers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w["sessions"].as_array().unwrap().clone())
            .collect();
        sessions.iter().find(|s| s["protocol"] == "wamp").unwrap()["id"].as_u64().unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = stop.clone();
    let addr = r.local_addr;
    let publisher = std::thread::spawn(move || {
        let mut p = join(addr, Serializer::MsgPack);
        let mut i = 0u64;
        while !publishing.load(Ordering::Relaxed) {
            p.publish("console.other", args(vec![Value::UInt(i)]), true);
            i += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    m.send(&publish_packet(4, b"console/t", 0, 0, false, b"1"));

    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/browser/console.mjs"))
        .arg(format!("http://{admin}/"))
        .arg(victim_id.to_string())
        .arg("console.t");
    if let Ok(path) = std::env::var("FENNEC_CONSOLE_SCREENSHOT") {
        cmd.arg(path);
    }
    let out = cmd.output().expect("node");
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The killed session got GOODBYE (after the MQTT event's EVENT).
    loop {
        match victim.recv() {
            Msg::Event { .. } => continue,
            Msg::Goodbye { reason, .. } => {
                assert_eq!(reason, "wamp.close.killed");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    r.shutdown();
}
