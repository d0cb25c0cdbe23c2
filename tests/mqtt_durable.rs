//! MQTT persistent sessions across a crash (`--durability sync`): the built
//! binary is killed with SIGKILL and started again on the same data
//! directory. A persistent session must come back with its subscriptions
//! (session present 1) and every QoS 1 message acknowledged to its
//! publisher before the kill, in order, once; acknowledged deliveries stay
//! acknowledged; expiry runs on wall-clock time; the will of a session
//! connected at the crash is published; a QoS 2 packet ID acknowledged with
//! PUBREC is still known. Raw MQTT 3.1.1 and 5 clients, `--cores 2`
//! (publisher and subscribers land on different workers).

#[allow(unused_imports)]
mod common;

use common::process::{kill9, start};
use common::raw::{mqtt_str, packet, publish_packet, pubrel_packet, Raw};
use std::net::SocketAddr;
use std::time::Duration;

/// A v5 CONNECT with a session expiry and maybe a will (topic, payload, retain).
fn connect5(addr: SocketAddr, id: &str, clean: bool, expiry: u32, will: Option<(&str, &str, bool)>) -> (Raw, bool) {
    let mut b = Vec::new();
    mqtt_str(&mut b, b"MQTT");
    b.push(5);
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some((_, _, retain)) = will {
        flags |= 0x04 | (1 << 3) | (u8::from(retain) << 5); // will, QoS 1
    }
    b.push(flags);
    b.extend_from_slice(&60u16.to_be_bytes());
    b.push(5);
    b.push(0x11);
    b.extend_from_slice(&expiry.to_be_bytes());
    mqtt_str(&mut b, id.as_bytes());
    if let Some((topic, payload, _)) = will {
        b.push(0); // no will properties
        mqtt_str(&mut b, topic.as_bytes());
        mqtt_str(&mut b, payload.as_bytes());
    }
    let mut r = Raw::open(addr);
    r.send(&packet(0x10, &b));
    let body = r.expect(0x20, "CONNACK");
    assert_eq!(body[1], 0, "CONNACK code for {id}: {body:?}");
    (r, body[0] & 1 == 1)
}

fn subscribe(r: &mut Raw, level: u8, filter: &str, qos: u8) {
    let mut b = vec![0, 1];
    if level == 5 {
        b.push(0);
    }
    mqtt_str(&mut b, filter.as_bytes());
    b.push(qos);
    r.send(&packet(0x82, &b));
    let suback = r.expect(0x90, "SUBACK");
    assert_eq!(*suback.last().unwrap(), qos, "granted");
}

/// One PUBLISH from the broker: (DUP, packet ID, topic, payload).
fn parse_publish(level: u8, byte1: u8, body: &[u8]) -> (bool, u16, String, Vec<u8>) {
    assert_eq!(byte1 >> 4, 3, "a PUBLISH: {byte1:#04x}");
    let qos = (byte1 >> 1) & 3;
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + tlen].to_vec()).unwrap();
    let mut i = 2 + tlen;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([body[i], body[i + 1]]);
        i += 2;
    }
    if level == 5 {
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let b = body[i];
            i += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        i += len;
    }
    (byte1 & 0x08 != 0, pkid, topic, body[i..].to_vec())
}

/// Reads PUBLISHes, acknowledging each (PUBACK), until `n` distinct
/// payloads arrived; returns the payloads in arrival order (a redelivery
/// with DUP of one already seen is not counted twice, and is flagged).
fn receive(r: &mut Raw, level: u8, n: usize) -> Vec<u64> {
    let mut got: Vec<u64> = Vec::new();
    while got.len() < n {
        let (b1, body) = r.read().unwrap_or_else(|| panic!("closed after {} of {n}", got.len()));
        let (dup, pkid, _, payload) = parse_publish(level, b1, &body);
        let v: u64 = std::str::from_utf8(&payload).unwrap().parse().expect("an intact payload");
        r.send(&packet(0x40, &pkid.to_be_bytes()));
        if got.contains(&v) {
            assert!(dup, "payload {v} a second time without DUP");
            continue;
        }
        got.push(v);
    }
    got
}

/// The end of a session (and a clean start's) is written to the store
/// without anyone waiting for it: give the commit a moment before a kill
/// that should find it done.
fn let_the_store_commit() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Publishes `n` QoS 1 messages `0..n` to `topic` and waits for every PUBACK.
fn publish_all(addr: SocketAddr, id: &str, topic: &str, n: u16) {
    let (mut p, _) = Raw::connected(addr, 4, id, true, 60);
    for i in 1..=n {
        p.send(&publish_packet(4, topic.as_bytes(), 1, i, false, (i - 1).to_string().as_bytes()));
    }
    for _ in 0..n {
        p.expect(0x40, "PUBACK");
    }
}

#[test]
fn persistent_sessions_keep_subscriptions_and_acknowledged_messages_across_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    // A: 3.1.1, clean session 0, offline when the messages come.
    let (mut a, present) = Raw::connected(r.mqtt, 4, "dur-a", false, 60);
    assert!(!present);
    subscribe(&mut a, 4, "dur/#", 1);
    a.send(&[0xe0, 0]);
    a.closed();
    // B: v5 with an hour's expiry, online, acknowledging nothing, so most
    // messages are queued behind its in-flight window and some in flight.
    let (mut b, _) = connect5(r.mqtt, "dur-b", true, 3600, None);
    subscribe(&mut b, 5, "dur/+", 1);
    publish_all(r.mqtt, "dur-pub", "dur/x", 300);
    kill9(r);
    drop(b);

    let r = start(data.path());
    let (mut a, present) = Raw::connected(r.mqtt, 4, "dur-a", false, 60);
    assert!(present, "A's session came back");
    assert_eq!(receive(&mut a, 4, 300), (0..300).collect::<Vec<u64>>(), "A: every acknowledged message, in order");
    let (mut b, present) = connect5(r.mqtt, "dur-b", false, 3600, None);
    assert!(present, "B's session came back");
    assert_eq!(receive(&mut b, 5, 300), (0..300).collect::<Vec<u64>>(), "B: every acknowledged message, in order");
    // The subscriptions came back too: a new message reaches both.
    publish_all(r.mqtt, "dur-pub2", "dur/y", 1);
    assert_eq!(receive(&mut a, 4, 1), vec![0]);
    assert_eq!(receive(&mut b, 5, 1), vec![0]);
    a.quiet();
    // What they acknowledged stays acknowledged after another crash.
    a.send(&[0xe0, 0]);
    a.closed();
    kill9(r);
    let r = start(data.path());
    let (mut a, present) = Raw::connected(r.mqtt, 4, "dur-a", false, 60);
    assert!(present);
    a.quiet();
    // A clean start ends the session, on disk too.
    drop(a);
    let (a, present) = Raw::connected(r.mqtt, 4, "dur-a", true, 60);
    assert!(!present);
    drop(a);
    let_the_store_commit();
    kill9(r);
    let r = start(data.path());
    let (_a, present) = Raw::connected(r.mqtt, 4, "dur-a", false, 60);
    assert!(!present, "the clean start's end of the session survived the crash");
}

#[test]
fn a_kill_mid_burst_loses_no_acknowledged_message_for_a_persistent_subscriber() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let (mut a, _) = Raw::connected(r.mqtt, 4, "burst-a", false, 60);
    subscribe(&mut a, 4, "burst/k", 1);
    a.send(&[0xe0, 0]);
    a.closed();
    let (mut p, _) = Raw::connected(r.mqtt, 4, "burst-pub", true, 60);
    let n: u16 = 5000;
    let mut all = Vec::new();
    for i in 1..=n {
        all.extend(publish_packet(4, b"burst/k", 1, i, false, (i - 1).to_string().as_bytes()));
    }
    p.send(&all);
    let mut acked = Vec::new();
    while acked.len() < 500 {
        let body = p.expect(0x40, "PUBACK");
        acked.push(u64::from(u16::from_be_bytes([body[0], body[1]])) - 1);
    }
    kill9(r);
    let r = start(data.path());
    let (mut a, present) = Raw::connected(r.mqtt, 4, "burst-a", false, 60);
    assert!(present);
    // Everything it gets is whole, in order, once; nothing acknowledged is missing.
    let mut got: Vec<u64> = Vec::new();
    a.s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    while let Ok(Some((b1, body))) = a.try_read() {
        let (_, pkid, _, payload) = parse_publish(4, b1, &body);
        got.push(std::str::from_utf8(&payload).unwrap().parse().expect("an intact payload"));
        a.send(&packet(0x40, &pkid.to_be_bytes()));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once");
    for i in &acked {
        assert!(got.contains(i), "acknowledged message {i} lost ({} delivered)", got.len());
    }
}

#[test]
fn session_expiry_runs_on_the_wall_clock_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let (mut short, _) = connect5(r.mqtt, "exp-short", true, 2, None);
    subscribe(&mut short, 5, "exp/a", 1);
    short.send(&[0xe0, 0]);
    short.closed();
    let (mut long, _) = connect5(r.mqtt, "exp-long", true, 3600, None);
    subscribe(&mut long, 5, "exp/a", 1);
    long.send(&[0xe0, 0]);
    long.closed();
    let_the_store_commit();
    kill9(r);
    std::thread::sleep(Duration::from_millis(2500));
    let r = start(data.path());
    let (_s, present) = connect5(r.mqtt, "exp-short", false, 2, None);
    assert!(!present, "expired while the router was down");
    let (_l, present) = connect5(r.mqtt, "exp-long", false, 3600, None);
    assert!(present);
}

#[test]
fn the_will_of_a_session_connected_at_the_crash_is_published_at_restart() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    // A clean session (it ends with its connection) and a persistent one.
    let (w1, _) = connect5(r.mqtt, "will-clean", true, 0, Some(("status/clean", "offline", true)));
    let (w2, _) = connect5(r.mqtt, "will-kept", true, 600, Some(("status/kept", "offline", true)));
    // One that left normally has no will to apply.
    let (mut w3, _) = connect5(r.mqtt, "will-gone", true, 0, Some(("status/gone", "offline", true)));
    w3.send(&[0xe0, 1, 0]);
    w3.closed();
    let_the_store_commit();
    kill9(r);
    drop((w1, w2));
    let r = start(data.path());
    let (mut s, _) = Raw::connected(r.mqtt, 4, "will-watch", true, 60);
    subscribe(&mut s, 4, "status/+", 1);
    let mut got = Vec::new();
    for _ in 0..2 {
        let (b1, body) = s.read().expect("a retained will");
        let (_, pkid, topic, payload) = parse_publish(4, b1, &body);
        assert_eq!(b1 & 1, 1, "retained");
        s.send(&packet(0x40, &pkid.to_be_bytes()));
        got.push((topic, String::from_utf8(payload).unwrap()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![("status/clean".to_owned(), "offline".to_owned()), ("status/kept".to_owned(), "offline".to_owned())]
    );
    s.quiet();
}

#[test]
fn a_qos2_packet_id_acknowledged_before_the_crash_is_not_published_twice() {
    let data = tempfile::tempdir().unwrap();
    let r = start(data.path());
    let (mut sub, _) = Raw::connected(r.mqtt, 4, "q2-sub", false, 60);
    subscribe(&mut sub, 4, "q2/t", 1);
    sub.send(&[0xe0, 0]);
    sub.closed();
    let (mut p, _) = Raw::connected(r.mqtt, 4, "q2-pub", false, 60);
    p.send(&publish_packet(4, b"q2/t", 2, 7, false, b"0"));
    p.expect(0x50, "PUBREC");
    kill9(r);
    let r = start(data.path());
    let (mut p, present) = Raw::connected(r.mqtt, 4, "q2-pub", false, 60);
    assert!(present);
    // The PUBREC was lost on the way, say: the client sends it again.
    p.send(&publish_packet(4, b"q2/t", 2, 7, true, b"0"));
    p.expect(0x50, "PUBREC again");
    p.send(&pubrel_packet(7));
    assert_eq!(p.expect(0x70, "PUBCOMP"), vec![0, 7]);
    let (mut sub, present) = Raw::connected(r.mqtt, 4, "q2-sub", false, 60);
    assert!(present);
    assert_eq!(receive(&mut sub, 4, 1), vec![0]);
    sub.quiet();
}
