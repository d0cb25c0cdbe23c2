//! Durability of retained values (`--data`, `--durability sync`): the built
//! binary is killed with SIGKILL and started again on the same data
//! directory; every retained write acknowledged before the kill (WAMP
//! PUBLISHED, MQTT PUBACK) must be there with its last value, and nothing
//! torn or half-applied may appear. The publishers, the keys' owners and
//! the subscribers are spread over two workers.

#[allow(unused_imports)]
mod common;

use common::process::{kill9, start, start_with};
use common::raw::{publish_packet, Raw};
use common::{args, join, opts, Client};
use fennec::value::Value;
use fennec::wamp::message::{Msg, Serializer};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `n` retained publications `topic.<i>` = [i] with acknowledge,
/// then reads PUBLISHED until `stop` of them arrived (all: `n`).
/// Returns the acknowledged indexes.
fn publish_retained(c: &mut Client, topic: &str, n: u64, stop: usize) -> Vec<u64> {
    let first = c.request() + 1;
    for i in 0..n {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
        c.write(&Msg::Publish { request, options, topic: format!("{topic}.{i}"), payload: args(vec![Value::UInt(i)]) });
    }
    c.flush();
    let mut acked = Vec::new();
    while acked.len() < stop {
        match c.recv() {
            Msg::Published { request, .. } => acked.push(request - first),
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
    }
    acked
}

/// The retained values under `prefix` (a prefix subscription with
/// `get_retained`), as index -> value.
fn retained(addr: SocketAddr, prefix: &str, expect: usize) -> Vec<(u64, u64)> {
    let mut c = join(addr, Serializer::MsgPack);
    let request = c.request();
    let options = opts(&[("match", Value::Str("prefix".into())), ("get_retained", Value::Bool(true))]);
    c.send(&Msg::Subscribe { request, options, topic: prefix.into() });
    assert!(matches!(c.recv(), Msg::Subscribed { .. }));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expect && Instant::now() < deadline {
        match c.next_message() {
            Ok(Msg::Event { details, payload, .. }) => {
                let topic = details.iter().find(|(k, _)| k == "topic").and_then(|(_, v)| v.as_str()).expect("topic");
                let i: u64 = topic.rsplit('.').next().unwrap().parse().unwrap();
                let v = payload
                    .values()
                    .args
                    .as_ref()
                    .and_then(|a| a.first())
                    .and_then(Value::as_u64)
                    .expect("an intact value");
                got.push((i, v));
            }
            Ok(other) => panic!("expected EVENT, got {other:?}"),
            Err(_) => break,
        }
    }
    got.sort();
    got
}

#[test]
fn acknowledged_retained_writes_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    // WAMP: 300 retained values, then 100 of them overwritten.
    let mut c = join(r.wamp, Serializer::Json);
    publish_retained(&mut c, "dur.w", 300, 300);
    for i in 0..100u64 {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
        let payload = args(vec![Value::UInt(1000 + i)]);
        c.send(&Msg::Publish { request, options, topic: format!("dur.w.{i}"), payload });
        assert!(matches!(c.recv(), Msg::Published { .. }));
    }
    // One deleted (a retained publish without payload).
    let request = c.request();
    let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
    c.send(&Msg::Publish { request, options, topic: "dur.w.299".into(), payload: Default::default() });
    assert!(matches!(c.recv(), Msg::Published { .. }));
    // MQTT: QoS 1 retained, PUBACK for each.
    let (mut m, _) = Raw::connected(r.mqtt, 4, "dur-pub", true, 0);
    for i in 0..100u16 {
        let mut packet =
            publish_packet(4, format!("dur/m/{i}").as_bytes(), 1, i + 1, false, format!("m{i}").as_bytes());
        packet[0] |= 0x01; // retain
        m.send(&packet);
        let ack = m.expect(0x40, "PUBACK");
        assert_eq!(ack[..2], (i + 1).to_be_bytes());
    }
    kill9(r);

    let r = start(data.path());
    let w = retained(r.wamp, "dur.w.", 299);
    assert_eq!(w.len(), 299, "every acknowledged WAMP value, the deleted one gone");
    for (i, v) in w {
        assert_eq!(v, if i < 100 { 1000 + i } else { i }, "the last value of dur.w.{i}");
    }
    let (mut sub, _) = Raw::connected(r.mqtt, 4, "dur-sub", true, 0);
    let mut body = vec![0, 1];
    common::raw::mqtt_str(&mut body, b"dur/m/#");
    body.push(1);
    sub.send(&common::raw::packet(0x82, &body));
    sub.expect(0x90, "SUBACK");
    let mut topics = Vec::new();
    for _ in 0..100 {
        let Ok(Some((byte1, body))) = sub.try_read() else {
            panic!("only {} retained PUBLISHes: {topics:?}", topics.len())
        };
        assert_eq!(byte1 & 0xf1, 0x31, "a retained PUBLISH: {byte1:#x}");
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + len].to_vec()).unwrap();
        let i: usize = topic.rsplit('/').next().unwrap().parse().unwrap();
        let payload = &body[2 + len + if byte1 & 0x06 != 0 { 2 } else { 0 }..];
        assert_eq!(payload, format!("m{i}").as_bytes());
        topics.push(i);
    }
    topics.sort();
    assert_eq!(topics, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_kill_mid_burst_loses_no_acknowledged_write_and_tears_none() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let mut c = join(r.wamp, Serializer::Json);
    // 5,000 sent at once; the kill lands after the first 500 acknowledgements.
    let acked = publish_retained(&mut c, "burst", 5000, 500);
    kill9(r);
    let r = start(data.path());
    let got = retained(r.wamp, "burst.", 5000);
    assert!(got.len() >= acked.len(), "{} found, {} were acknowledged", got.len(), acked.len());
    let present: std::collections::HashSet<u64> = got.iter().map(|&(i, _)| i).collect();
    for i in &acked {
        assert!(present.contains(i), "acknowledged burst.{i} is missing");
    }
    for (i, v) in got {
        assert_eq!(i, v, "burst.{i} holds another value");
    }
}

#[test]
fn durability_none_keeps_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["--durability", "none", "--cores", "1", "--listen", "127.0.0.1:0", "--no-mqtt", "--data"])
        .arg(data.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "no store files under --durability none");
}

#[test]
fn wills_of_sessions_alive_at_the_crash_apply_at_restart() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let mut c = join(r.wamp, Serializer::Json);
    for (topic, will) in [("wills.a", Value::Null), ("wills.b", Value::Str("gone".into()))] {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true)), ("will", will)]);
        c.send(&Msg::Publish { request, options, topic: topic.into(), payload: args(vec![Value::Str("here".into())]) });
        assert!(matches!(c.recv(), Msg::Published { .. }));
    }
    // A key without a will keeps its value.
    let request = c.request();
    let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
    c.send(&Msg::Publish { request, options, topic: "wills.c".into(), payload: args(vec![Value::Str("kept".into())]) });
    assert!(matches!(c.recv(), Msg::Published { .. }));
    kill9(r);
    let r = start(data.path());
    let mut sub = join(r.wamp, Serializer::Json);
    let request = sub.request();
    let options = opts(&[("match", Value::Str("prefix".into())), ("get_retained", Value::Bool(true))]);
    sub.send(&Msg::Subscribe { request, options, topic: "wills.".into() });
    assert!(matches!(sub.recv(), Msg::Subscribed { .. }));
    let mut got = Vec::new();
    for _ in 0..2 {
        match sub.recv() {
            Msg::Event { details, payload, .. } => {
                let topic =
                    details.iter().find(|(k, _)| k == "topic").and_then(|(_, v)| v.as_str()).unwrap().to_owned();
                got.push((topic, payload.into_values().args.unwrap()));
            }
            other => panic!("{other:?}"),
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("wills.b".to_owned(), vec![Value::Str("gone".into())]),
            ("wills.c".to_owned(), vec![Value::Str("kept".into())]),
        ]
    );
}

#[test]
fn history_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("fennec.toml");
    std::fs::write(
        &config,
        "[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"h.\"\nmatch = \"prefix\"\nlimit = 3\n",
    )
    .unwrap();
    let store = data.path().join("store");
    let config = config.to_str().unwrap();
    let r = start_with(&store, &["--config", config]);
    let mut c = join(r.wamp, Serializer::Json);
    for i in 0..5u64 {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true))]);
        c.send(&Msg::Publish { request, options, topic: "h.t".into(), payload: args(vec![Value::UInt(i)]) });
        assert!(matches!(c.recv(), Msg::Published { .. }));
    }
    // History writes are not acknowledged: give the store a commit.
    std::thread::sleep(Duration::from_millis(300));
    kill9(r);
    let r = start_with(&store, &["--config", config]);
    let mut s = join(r.wamp, Serializer::Json);
    let request = s.request();
    s.send(&Msg::Subscribe { request, options: vec![], topic: "h.t".into() });
    let Msg::Subscribed { subscription, .. } = s.recv() else { panic!("SUBSCRIBED") };
    let request = s.request();
    let call = Msg::Call {
        request,
        options: vec![],
        procedure: "wamp.subscription.get_events".into(),
        payload: args(vec![Value::UInt(subscription)]),
    };
    s.send(&call);
    let Msg::Result { payload, .. } = s.recv() else { panic!("RESULT") };
    let Some(Value::List(events)) = payload.into_values().args.and_then(|a| a.into_iter().next()) else {
        panic!("a list")
    };
    let values: Vec<Value> = events
        .iter()
        .map(|e| match e {
            Value::Dict(d) => d.iter().find(|(k, _)| k == "args").map(|(_, v)| v.clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<Value> = (2..5u64).map(|i| Value::List(vec![Value::UInt(i)])).collect();
    assert_eq!(values, want, "the newest 3 of 5, in order, after the restart");
}

#[test]
fn a_corrupt_record_stops_the_start_unless_repair_drops_it_and_keeps_the_rest() {
    use fennec::store::{FjallStore, Store, Write};
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let mut c = join(r.wamp, Serializer::Json);
    assert_eq!(publish_retained(&mut c, "repair", 3, 3).len(), 3);
    drop(c);
    kill9(r);
    {
        let mut s = FjallStore::open(data.path(), true).unwrap();
        let junk = b"\xc1 not MessagePack".to_vec();
        let mut session_key = b"ms\0realm1\0dev\0".to_vec();
        session_key.extend_from_slice(&7u64.to_be_bytes());
        s.commit(&[
            Write::Put { key: b"r\0realm1\0repair.bad".to_vec(), value: junk.clone() },
            Write::Put { key: session_key, value: junk },
        ])
        .unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["--cores", "2", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run fennec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused to start");
    assert!(err.contains("corrupt store in") && err.contains("repair.bad") && err.contains("--repair"), "{err}");
    // --repair: the bad records go, the good ones stay.
    let r = start_with(data.path(), &["--repair"]);
    assert_eq!(retained(r.wamp, "repair.", 3), vec![(0, 0), (1, 1), (2, 2)]);
    kill9(r);
    // And the next start needs no repair.
    let r = start(data.path());
    assert_eq!(retained(r.wamp, "repair.", 3).len(), 3);
}
