//! MQTT over real sockets, driven by clients nobody here wrote: `rumqttc`
//! (MQTT 3.1.1 and its v5 module) and the Mosquitto command-line clients,
//! plus a raw TCP socket where a test needs exact bytes (a QoS 2 flow cut
//! in the middle, hostile input, a silent client), and the WAMP test client
//! of tests/common for the MQTT <-> WAMP mapping.
//!
//! Every router is in-process on ephemeral ports (`common::router`). With
//! `--cores 2` the acceptor hands connection k (counting every accepted
//! socket, WAMP and MQTT) to worker k % 2, which the session-moving tests
//! use to reconnect on the other worker. Every wait has a deadline; no test
//! can hang.

// tests/common serves several test binaries; this one does not use all of it.
#[allow(unused_imports)]
mod common;

use common::raw::*;
use common::*;
use fennec::payload::Payload;
use fennec::server::Running;
use fennec::value::{dict_get, Dict, Value};
use fennec::wamp::message::{Msg, Serializer};
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::{Event, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

fn mqtt_addr(r: &Running) -> SocketAddr {
    r.mqtt_addr.expect("the router has an MQTT listener")
}

// ---------------------------------------------------------------------------
// rumqttc, MQTT 3.1.1

/// A rumqttc (v3.1.1) client driven synchronously: every call polls the
/// event loop until what it waits for happens, keeping publishes that
/// arrive meanwhile for `recv`.
struct Mq {
    client: rumqttc::Client,
    conn: rumqttc::Connection,
    inbox: VecDeque<Publish>,
    session_present: bool,
    name: String,
}

fn v4_options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

impl Mq {
    /// Connects with a clean session (or not) and waits for CONNACK.
    fn connect(addr: SocketAddr, id: &str, clean: bool) -> Mq {
        let mut o = v4_options(addr, id);
        o.set_clean_session(clean);
        Mq::with(o)
    }

    fn with(o: MqttOptions) -> Mq {
        let name = o.client_id();
        let (client, conn) = rumqttc::Client::new(o, 64);
        let mut m = Mq { client, conn, inbox: VecDeque::new(), session_present: false, name };
        m.session_present = m.wait("CONNACK", |ev| match ev {
            Event::Incoming(Packet::ConnAck(c)) => Some(c.session_present),
            _ => None,
        });
        m
    }

    /// Polls until `pick` accepts an event; publishes seen meanwhile are kept.
    fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_timeout(left) {
                Ok(Ok(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = ev {
                        self.inbox.push_back(p);
                    }
                }
                Ok(Err(e)) => panic!("{}: waiting for {what}: connection error: {e}", self.name),
                Err(_) => panic!("{}: no {what} within {STEP:?}", self.name),
            }
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).expect("subscribe request");
        self.wait("SUBACK", |ev| match ev {
            Event::Incoming(Packet::SubAck(s)) => Some(s.return_codes[0]),
            _ => None,
        })
    }

    /// Publishes and waits until the flow is complete (sent, PUBACK or PUBCOMP).
    fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, qos, retain, payload).expect("publish request");
        self.wait("the end of the publish flow", |ev| match (qos, ev) {
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
            | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
            | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => Some(()),
            _ => None,
        })
    }

    /// The next message, or `None` if none arrives `within`.
    fn try_recv(&mut self, within: Duration) -> Option<Publish> {
        if let Some(p) = self.inbox.pop_front() {
            return Some(p);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => return Some(p),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{}: waiting for a message: connection error: {e}", self.name),
                Err(_) => return None,
            }
        }
    }

    fn recv(&mut self) -> Publish {
        self.try_recv(STEP).unwrap_or_else(|| panic!("{}: no message within {STEP:?}", self.name))
    }

    /// The next message's topic and payload.
    fn recv_text(&mut self) -> (String, String) {
        let p = self.recv();
        (p.topic, String::from_utf8_lossy(&p.payload).into_owned())
    }

    /// Nothing arrives for `QUIET`.
    fn quiet(&mut self) {
        if let Some(p) = self.try_recv(QUIET) {
            panic!("{}: unexpected message {p:?}", self.name);
        }
    }

    /// Messages up to (not including) one on `end`.
    fn until(&mut self, end: &str) -> Vec<Publish> {
        let mut got = Vec::new();
        loop {
            let p = self.recv();
            if p.topic == end {
                return got;
            }
            got.push(p);
        }
    }

    /// A clean DISCONNECT.
    fn disconnect(mut self) {
        self.client.disconnect().expect("disconnect request");
        self.wait("DISCONNECT sent", |ev| matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(()));
    }

    /// The broker ends the connection within `STEP` (messages before that are kept).
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.inbox.push_back(p),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return,
                Err(_) => panic!("{}: the broker did not close the connection within {STEP:?}", self.name),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// rumqttc, MQTT 5

struct Mq5 {
    client: rumqttc::v5::Client,
    conn: rumqttc::v5::Connection,
    inbox: VecDeque<p5::Publish>,
    session_present: bool,
    name: String,
}

type Event5 = rumqttc::v5::Event;

fn v5_options(addr: SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl Mq5 {
    fn connect(addr: SocketAddr, id: &str) -> Mq5 {
        Mq5::with(v5_options(addr, id))
    }

    fn with(o: rumqttc::v5::MqttOptions) -> Mq5 {
        let name = o.client_id();
        let (client, conn) = rumqttc::v5::Client::new(o, 64);
        let mut m = Mq5 { client, conn, inbox: VecDeque::new(), session_present: false, name };
        m.session_present = m.wait("CONNACK", |ev| match ev {
            Event5::Incoming(p5::Packet::ConnAck(c)) => Some(c.session_present),
            _ => None,
        });
        m
    }

    fn wait<T>(&mut self, what: &str, mut pick: impl FnMut(&Event5) -> Option<T>) -> T {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_timeout(left) {
                Ok(Ok(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return t;
                    }
                    if let Event5::Incoming(p5::Packet::Publish(p)) = ev {
                        self.inbox.push_back(p);
                    }
                }
                Ok(Err(e)) => panic!("{}: waiting for {what}: connection error: {e}", self.name),
                Err(_) => panic!("{}: no {what} within {STEP:?}", self.name),
            }
        }
    }

    fn subscribe(&mut self, filter: &str, qos: Q5) -> p5::SubscribeReasonCode {
        self.client.subscribe(filter, qos).expect("subscribe request");
        self.wait("SUBACK", |ev| match ev {
            Event5::Incoming(p5::Packet::SubAck(s)) => Some(s.return_codes[0]),
            _ => None,
        })
    }

    fn publish(&mut self, topic: &str, qos: Q5, retain: bool, payload: impl Into<bytes::Bytes>) {
        self.client.publish(topic, qos, retain, payload).expect("publish request");
        self.wait("the end of the publish flow", |ev| match (qos, ev) {
            (Q5::AtMostOnce, Event5::Outgoing(Outgoing::Publish(_)))
            | (Q5::AtLeastOnce, Event5::Incoming(p5::Packet::PubAck(_)))
            | (Q5::ExactlyOnce, Event5::Incoming(p5::Packet::PubComp(_))) => Some(()),
            _ => None,
        })
    }

    fn recv(&mut self) -> p5::Publish {
        if let Some(p) = self.inbox.pop_front() {
            return p;
        }
        self.wait("a message", |ev| match ev {
            Event5::Incoming(p5::Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
    }

    /// Waits for the broker's DISCONNECT (rumqttc reports it as the
    /// connection's error) and returns its reason code.
    fn expect_disconnect(&mut self) -> p5::DisconnectReasonCode {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.conn.recv_timeout(left) {
                Ok(Ok(Event5::Incoming(p5::Packet::Disconnect(d)))) => return d.reason_code,
                Ok(Ok(_)) => {}
                Ok(Err(rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect {
                    reason_code,
                    ..
                }))) => return reason_code,
                Ok(Err(e)) => panic!("{}: expected DISCONNECT from the broker, got {e}", self.name),
                Err(_) => panic!("{}: no DISCONNECT within {STEP:?}", self.name),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn qos_0_1_2_round_trips_v311() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut sub2 = Mq::connect(addr, "rt-sub2", true);
    let mut sub1 = Mq::connect(addr, "rt-sub1", true);
    assert_eq!(sub2.subscribe("rt/t", QoS::ExactlyOnce), SubscribeReasonCode::Success(QoS::ExactlyOnce));
    assert_eq!(sub1.subscribe("rt/t", QoS::AtLeastOnce), SubscribeReasonCode::Success(QoS::AtLeastOnce));
    let mut publ = Mq::connect(addr, "rt-pub", true);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("payload at {qos:?}");
        publ.publish("rt/t", qos, false, payload.clone());
        // Delivered at the lower of the publish and subscription QoS.
        for (sub, max) in [(&mut sub2, QoS::ExactlyOnce), (&mut sub1, QoS::AtLeastOnce)] {
            let p = sub.recv();
            assert_eq!((p.topic.as_str(), &p.payload[..]), ("rt/t", payload.as_bytes()));
            let want = if (qos as u8) < (max as u8) { qos } else { max };
            assert_eq!(p.qos, want, "{} at {qos:?}", sub.name);
            assert!(!p.retain && !p.dup, "{p:?}");
        }
    }
    // A 64 KiB binary payload crosses intact.
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    publ.publish("rt/t", QoS::ExactlyOnce, false, big.clone());
    assert_eq!(&sub2.recv().payload[..], &big[..]);
    assert_eq!(&sub1.recv().payload[..], &big[..]);
    // Each QoS 2 message arrived once.
    sub2.quiet();
    sub1.quiet();
    // Unsubscribed: no more deliveries.
    sub1.client.unsubscribe("rt/t").unwrap();
    sub1.wait("UNSUBACK", |ev| matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(()));
    publ.publish("rt/t", QoS::AtLeastOnce, false, "after");
    assert_eq!(sub2.recv_text().1, "after");
    sub1.quiet();
    r.shutdown();
}

#[test]
fn qos_0_1_2_round_trips_v5() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut sub = Mq5::connect(addr, "rt5-sub");
    assert_eq!(sub.subscribe("rt5/+", Q5::ExactlyOnce), p5::SubscribeReasonCode::Success(Q5::ExactlyOnce));
    let mut publ = Mq5::connect(addr, "rt5-pub");
    for qos in [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce] {
        publ.publish("rt5/x", qos, false, format!("{qos:?}"));
        let p = sub.recv();
        assert_eq!(p.topic, "rt5/x");
        assert_eq!(p.qos, qos);
        assert_eq!(&p.payload[..], format!("{qos:?}").as_bytes());
    }
    // A v3.1.1 subscriber gets v5 publications, and the other way round.
    let mut old = Mq::connect(addr, "rt5-old", true);
    old.subscribe("rt5/x", QoS::AtLeastOnce);
    publ.publish("rt5/x", Q5::AtLeastOnce, false, "to both");
    assert_eq!(old.recv_text(), ("rt5/x".into(), "to both".into()));
    assert_eq!(&sub.recv().payload[..], b"to both");
    old.publish("rt5/y", QoS::ExactlyOnce, false, "from 3.1.1");
    let p = sub.recv();
    assert_eq!((&p.topic[..], &p.payload[..], p.qos), (&b"rt5/y"[..], &b"from 3.1.1"[..], Q5::ExactlyOnce));
    r.shutdown();
}

#[test]
fn retained_set_replace_and_clear() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut publ = Mq::connect(addr, "ret-pub", true);
    let mut live = Mq::connect(addr, "ret-live", true);
    live.subscribe("ret/#", QoS::AtLeastOnce);

    publ.publish("ret/a", QoS::AtLeastOnce, true, "first");
    publ.publish("ret/a", QoS::AtLeastOnce, true, "second");
    publ.publish("ret/b", QoS::ExactlyOnce, true, "b value");
    // Live subscribers get these as ordinary messages: retain flag off (3.1.1, 3.3.1.3).
    for want in ["first", "second", "b value"] {
        let p = live.recv();
        assert_eq!(&p.payload[..], want.as_bytes());
        assert!(!p.retain, "a live delivery has the retain flag off: {p:?}");
    }

    // A new exact subscription gets the latest value, retain flag on.
    let mut late = Mq::connect(addr, "ret-late", true);
    late.subscribe("ret/a", QoS::AtLeastOnce);
    let p = late.recv();
    assert_eq!((p.topic.as_str(), &p.payload[..], p.retain), ("ret/a", &b"second"[..], true));
    late.quiet();

    // A wildcard subscription gets every matching retained value, once each.
    let mut wild = Mq::connect(addr, "ret-wild", true);
    wild.subscribe("ret/+", QoS::ExactlyOnce);
    let mut got: Vec<(String, String, bool, QoS)> = (0..2)
        .map(|_| {
            let p = wild.recv();
            (p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned(), p.retain, p.qos)
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("ret/a".into(), "second".into(), true, QoS::AtLeastOnce),
            ("ret/b".into(), "b value".into(), true, QoS::ExactlyOnce)
        ]
    );
    wild.quiet();

    // An empty retained message clears the value; it still reaches live subscribers.
    publ.publish("ret/a", QoS::AtLeastOnce, true, Vec::new());
    let p = live.recv();
    assert_eq!((p.topic.as_str(), p.payload.len()), ("ret/a", 0));
    let mut after = Mq::connect(addr, "ret-after", true);
    after.subscribe("ret/+", QoS::AtLeastOnce);
    assert_eq!(after.recv_text(), ("ret/b".into(), "b value".into()));
    after.quiet();
    // A non-retained publish leaves the retained value alone.
    publ.publish("ret/b", QoS::AtMostOnce, false, "not kept");
    let mut last = Mq::connect(addr, "ret-last", true);
    last.subscribe("ret/b", QoS::AtMostOnce);
    let p = last.recv();
    assert_eq!((&p.payload[..], p.retain, p.qos), (&b"b value"[..], true, QoS::AtMostOnce));
    r.shutdown();
}

#[test]
fn wildcards_and_dollar_topics() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let filters = ["wc/+/c", "wc/#", "#", "+/x", "$sys/#", "+/+", "wc/b/c"];
    let mut subs: Vec<Mq> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut m = Mq::connect(addr, &format!("wc-{i}"), true);
            assert_eq!(m.subscribe(f, QoS::AtLeastOnce), SubscribeReasonCode::Success(QoS::AtLeastOnce), "{f}");
            m.subscribe("end", QoS::AtLeastOnce);
            m
        })
        .collect();
    let mut publ = Mq::connect(addr, "wc-pub", true);
    let topics = ["wc/b/c", "wc//c", "wc/b/c/d", "wc", "wc/b", "a/x", "$sys/x", "$sys", "/x", "wc.b/c"];
    for t in topics {
        publ.publish(t, QoS::AtLeastOnce, false, t);
    }
    publ.publish("end", QoS::AtLeastOnce, false, "end");
    let want: [&[&str]; 7] = [
        &["wc/b/c", "wc//c"],
        &["wc/b/c", "wc//c", "wc/b/c/d", "wc", "wc/b"],
        // `#` matches every topic not starting with `$`, the sentinel included
        // (the sentinel's own subscription overlaps: still one copy).
        &["wc/b/c", "wc//c", "wc/b/c/d", "wc", "wc/b", "a/x", "/x", "wc.b/c"],
        &["a/x", "/x"],
        &["$sys/x", "$sys"],
        &["wc/b", "a/x", "/x", "wc.b/c"],
        &["wc/b/c"],
    ];
    for (i, sub) in subs.iter_mut().enumerate() {
        let got: Vec<String> = sub.until("end").iter().map(|p| p.topic.clone()).collect();
        assert_eq!(got, want[i], "filter {}", filters[i]);
        sub.quiet();
    }
    // Invalid filters are refused in the SUBACK, the connection stays.
    let mut raw = Raw::connected(addr, 4, "wc-raw", true, 0).0;
    let mut b = vec![0, 9];
    for f in ["a/#/b", "a+", "ok/+"] {
        mqtt_str(&mut b, f.as_bytes());
        b.push(1);
    }
    raw.send(&packet(0x82, &b));
    assert_eq!(raw.expect(0x90, "SUBACK"), vec![0, 9, 0x80, 0x80, 1]);
    r.shutdown();
}

#[test]
fn overlapping_subscriptions_deliver_one_copy() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut sub = Mq::connect(addr, "ov-sub", true);
    sub.subscribe("ov/x", QoS::AtMostOnce);
    sub.subscribe("ov/+", QoS::AtLeastOnce);
    sub.subscribe("ov/#", QoS::ExactlyOnce);
    sub.subscribe("#", QoS::AtMostOnce);
    let mut publ = Mq::connect(addr, "ov-pub", true);
    publ.publish("ov/x", QoS::ExactlyOnce, false, "one");
    publ.publish("ov/y/z", QoS::AtLeastOnce, false, "two");
    publ.publish("ov/end", QoS::AtMostOnce, false, "end");
    let got = sub.until("ov/end");
    // One copy each, at the highest QoS granted among the matching subscriptions.
    let seen: Vec<(&str, QoS)> = got.iter().map(|p| (p.topic.as_str(), p.qos)).collect();
    assert_eq!(seen, vec![("ov/x", QoS::ExactlyOnce), ("ov/y/z", QoS::AtLeastOnce)]);
    sub.quiet();
    // Subscribing to the same filter again replaces the subscription (one copy still).
    sub.subscribe("ov/x", QoS::AtLeastOnce);
    publ.publish("ov/x", QoS::AtLeastOnce, false, "again");
    assert_eq!(sub.recv_text().1, "again");
    sub.quiet();
    r.shutdown();
}

// ---------------------------------------------------------------------------
// Sessions

/// clean_session=false: the subscription and the QoS 1 messages published
/// while the client was away survive, whether the client comes back on the
/// same worker or the other one (connection k lands on worker k % 2).
#[test]
fn persistent_session_survives_reconnect_on_either_worker() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    // Connection 0 (worker 0).
    let mut c = Mq::connect(addr, "ps-client", false);
    assert!(!c.session_present, "a new client ID has no session");
    c.subscribe("ps/t", QoS::AtLeastOnce);
    c.disconnect();
    // Connection 1 (worker 1): publishes while the client is away.
    let mut publ = Mq::connect(addr, "ps-pub", true);
    for i in 1..=3 {
        publ.publish("ps/t", QoS::AtLeastOnce, false, format!("m{i}"));
    }
    // Connection 2: worker 0 again.
    let mut c = Mq::connect(addr, "ps-client", false);
    assert!(c.session_present, "session present after a clean_session=false reconnect");
    let got: Vec<String> = (0..3).map(|_| c.recv_text().1).collect();
    assert_eq!(got, ["m1", "m2", "m3"]);
    c.quiet();
    // This time the connection just drops (no DISCONNECT).
    drop(c);
    for i in 4..=5 {
        publ.publish("ps/t", QoS::AtLeastOnce, false, format!("m{i}"));
    }
    // Connection 3: worker 1, the session moves from worker 0.
    let mut c = Mq::connect(addr, "ps-client", false);
    assert!(c.session_present, "session present after moving to the other worker");
    let got: Vec<String> = (0..2).map(|_| c.recv_text().1).collect();
    assert_eq!(got, ["m4", "m5"]);
    c.quiet();
    c.disconnect();
    // A clean session discards it: nothing present, nothing queued afterwards.
    let c = Mq::connect(addr, "ps-client", true);
    assert!(!c.session_present);
    c.disconnect();
    publ.publish("ps/t", QoS::AtLeastOnce, false, "nobody");
    let mut c = Mq::connect(addr, "ps-client", false);
    assert!(!c.session_present, "a clean session does not persist");
    c.quiet();
    r.shutdown();
}

#[test]
fn session_takeover_closes_the_first_connection() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    // 3.1.1: the old connection is closed, the new one works.
    let mut first = Mq::connect(addr, "tk", true);
    first.subscribe("tk/t", QoS::AtLeastOnce);
    let mut second = Mq::connect(addr, "tk", true);
    assert!(!second.session_present);
    first.expect_closed();
    second.subscribe("tk/t", QoS::AtLeastOnce);
    second.publish("tk/t", QoS::AtLeastOnce, false, "mine");
    assert_eq!(second.recv_text().1, "mine");

    // Persistent: the session goes to the new connection, which is on the
    // other worker, with the message the first connection never acknowledged
    // (its client is not polled, so rumqttc sends no PUBACK).
    let mut a = Mq::connect(addr, "tkp", false);
    a.subscribe("tkp/t", QoS::AtLeastOnce);
    second.publish("tkp/t", QoS::AtLeastOnce, false, "unacknowledged");
    let mut b = Mq::connect(addr, "tkp", false);
    assert!(b.session_present, "takeover of a persistent session: session present");
    let p = b.recv();
    assert_eq!((&p.payload[..], p.dup), (&b"unacknowledged"[..], true), "resent with DUP on the new connection");
    b.quiet();
    a.expect_closed();

    // v5: the old connection is told why (DISCONNECT 0x8E) before it closes.
    let mut a = Mq5::connect(addr, "tk5");
    let _b = Mq5::connect(addr, "tk5");
    assert_eq!(a.expect_disconnect(), p5::DisconnectReasonCode::SessionTakenOver);
    r.shutdown();
}

#[test]
fn will_on_abnormal_disconnect_only() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut watcher = Mq::connect(addr, "will-watcher", true);
    watcher.subscribe("will/#", QoS::AtLeastOnce);
    let with_will = |id: &str, topic: &str| {
        let mut o = v4_options(addr, id);
        o.set_last_will(LastWill::new(topic, format!("{id} is gone"), QoS::AtLeastOnce, false));
        Mq::with(o)
    };

    // The TCP connection drops without DISCONNECT: the will is published.
    let a = with_will("will-a", "will/a");
    drop(a);
    let p = watcher.recv();
    assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), ("will/a", &b"will-a is gone"[..], QoS::AtLeastOnce));

    // A clean DISCONNECT discards the will; the next abnormal one is the
    // only will seen.
    with_will("will-b", "will/b").disconnect();
    let c = with_will("will-c", "will/c");
    drop(c);
    assert_eq!(watcher.recv_text(), ("will/c".into(), "will-c is gone".into()));
    watcher.quiet();

    // A will with the retain flag is kept for later subscribers.
    let mut o = v4_options(addr, "will-r");
    o.set_last_will(LastWill::new("will/r", "retained will", QoS::AtLeastOnce, true));
    drop(Mq::with(o));
    assert_eq!(watcher.recv_text().1, "retained will");
    let mut late = Mq::connect(addr, "will-late", true);
    late.subscribe("will/r", QoS::AtLeastOnce);
    let p = late.recv();
    assert_eq!((&p.payload[..], p.retain), (&b"retained will"[..], true));
    r.shutdown();
}

/// A QoS 2 PUBLISH whose sender loses the connection after PUBREC and
/// resends it (DUP) on a new connection, on the other worker: the
/// subscriber gets it exactly once.
#[test]
fn qos2_exactly_once_across_a_dropped_connection() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    // Connection 0 (worker 0).
    let mut sub = Mq::connect(addr, "q2-sub", true);
    sub.subscribe("q2/t", QoS::ExactlyOnce);

    // Connection 1 (worker 1): PUBLISH QoS 2, PUBREC, then the connection drops.
    let (mut raw, present) = Raw::connected(addr, 4, "q2-raw", false, 0);
    assert!(!present);
    raw.send(&publish_packet(4, b"q2/t", 2, 7, false, b"once"));
    assert_eq!(raw.expect(0x50, "PUBREC"), [0, 7]);
    raw.send(&publish_packet(4, b"q2/t", 2, 8, false, b"eight"));
    assert_eq!(raw.expect(0x50, "PUBREC"), [0, 8]);
    drop(raw);

    // Connection 2 (worker 0): the session (with the pending QoS 2 IDs) moves here.
    let (mut raw, present) = Raw::connected(addr, 4, "q2-raw", false, 0);
    assert!(present, "session present for the QoS 2 sender");
    // Packet 7: resent with DUP, then released.
    raw.send(&publish_packet(4, b"q2/t", 2, 7, true, b"once"));
    assert_eq!(raw.expect(0x50, "PUBREC"), [0, 7]);
    raw.send(&pubrel_packet(7));
    assert_eq!(raw.expect(0x70, "PUBCOMP"), [0, 7]);
    // Packet 8: only released.
    raw.send(&pubrel_packet(8));
    assert_eq!(raw.expect(0x70, "PUBCOMP"), [0, 8]);
    // The same ID again is a new message now.
    raw.send(&publish_packet(4, b"q2/t", 2, 7, false, b"new seven"));
    assert_eq!(raw.expect(0x50, "PUBREC"), [0, 7]);
    raw.send(&pubrel_packet(7));
    assert_eq!(raw.expect(0x70, "PUBCOMP"), [0, 7]);

    sub.subscribe("q2/end", QoS::AtMostOnce);
    raw.send(&publish_packet(4, b"q2/end", 0, 0, false, b""));
    let got: Vec<String> = sub.until("q2/end").iter().map(|p| String::from_utf8_lossy(&p.payload).into()).collect();
    assert_eq!(got, ["once", "eight", "new seven"], "each QoS 2 message exactly once");
    sub.quiet();
    r.shutdown();
}

/// The broker's QoS 2 flow toward a subscriber that drops the connection
/// before PUBCOMP: on reconnect the PUBREL is sent again, and the message
/// is not delivered a second time.
#[test]
fn qos2_toward_a_subscriber_resumes_with_pubrel() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let (mut raw, _) = Raw::connected(addr, 4, "q2s-raw", false, 0);
    let mut b = vec![0, 1];
    mqtt_str(&mut b, b"q2s/t");
    b.push(2);
    raw.send(&packet(0x82, &b));
    assert_eq!(raw.expect(0x90, "SUBACK"), [0, 1, 2]);
    let mut publ = Mq::connect(addr, "q2s-pub", true);
    publ.publish("q2s/t", QoS::ExactlyOnce, false, "m");
    let body = raw.expect(0x34, "PUBLISH QoS 2");
    let pkid = [body[7], body[8]];
    assert_eq!(&body[..7], b"\x00\x05q2s/t");
    assert_eq!(&body[9..], b"m");
    raw.send(&packet(0x50, &pkid)); // PUBREC
    assert_eq!(raw.expect(0x62, "PUBREL"), pkid);
    drop(raw);
    let (mut raw, present) = Raw::connected(addr, 4, "q2s-raw", false, 0);
    assert!(present);
    // PUBREL again, and PUBCOMP ends the flow ...
    assert_eq!(raw.expect(0x62, "PUBREL again after reconnect"), pkid);
    raw.send(&packet(0x70, &pkid)); // PUBCOMP
                                    // ... and the message itself is not sent again.
    raw.quiet();
    r.shutdown();
}

// ---------------------------------------------------------------------------
// Hostile input

/// A bystander pair on the same router that must keep working.
struct Bystander {
    publ: Mq,
    sub: Mq,
    n: usize,
}

impl Bystander {
    fn new(addr: SocketAddr) -> Bystander {
        let mut sub = Mq::connect(addr, "bystander-sub", true);
        sub.subscribe("by/t", QoS::AtLeastOnce);
        Bystander { publ: Mq::connect(addr, "bystander-pub", true), sub, n: 0 }
    }

    fn check(&mut self, after: &str) {
        self.n += 1;
        let payload = format!("ping {}", self.n);
        self.publ.publish("by/t", QoS::AtLeastOnce, false, payload.clone());
        assert_eq!(self.sub.recv_text().1, payload, "the bystander after: {after}");
    }
}

/// Input that must close the connection: (name, bytes after CONNECT, v5 reason code).
fn hostile_cases() -> Vec<(&'static str, Vec<u8>, u8)> {
    let mut huge = vec![0x30];
    huge.extend_from_slice(&[0xa0, 0x8d, 0x06]); // remaining length 100 000
    vec![
        ("reserved packet type 0", vec![0x00, 0x00], 0x81),
        ("a server-only packet type (CONNACK)", vec![0x20, 0x02, 0x00, 0x00], 0x82),
        ("remaining length over 4 bytes", vec![0xc0, 0xff, 0xff, 0xff, 0xff, 0x01], 0x81),
        ("remaining length ends inside the topic", vec![0x30, 0x03, 0x00, 0x05, b'a'], 0x81),
        ("SUBSCRIBE with reserved flags 0000", packet(0x80, &[0, 1, 0, 1, b'a', 0]), 0x81),
        ("PUBLISH at QoS 3", packet(0x36, &[0, 1, b'a', 0, 1]), 0x81),
        ("PUBLISH at QoS 0 with DUP", packet(0x38, &[0, 1, b'a', 0, b'x']), 0x81),
        // Parses, and is not allowed: a protocol error (MQTT 5, 1.2 and 2.2.1).
        ("PUBLISH at QoS 1 with packet identifier 0", Vec::new(), 0x82),
        ("SUBSCRIBE at QoS 3", packet(0x82, &[0, 1, 0, 1, b'a', 3]), 0x81),
        ("PUBREL with reserved flags 0000", vec![0x60, 0x02, 0x00, 0x01], 0x81),
        ("topic name holding U+0000", Vec::new(), 0x81),
        ("topic name that is not UTF-8", Vec::new(), 0x81),
        ("PUBLISH to a '+' topic", Vec::new(), 0x90),
        ("PUBLISH to a '#' topic", Vec::new(), 0x90),
        ("packet over the maximum size", huge, 0x95),
        ("a second CONNECT", Vec::new(), 0x82),
        // MQTT 5 only (in 3.1.1 these bytes are a valid PUBLISH with a payload).
        ("v5: topic alias 0", packet(0x30, &[0, 1, b'a', 3, 0x23, 0, 0, b'x']), 0x94),
        ("v5: topic alias over the maximum", packet(0x30, &[0, 1, b'a', 3, 0x23, 0xff, 0xff, b'x']), 0x94),
        ("v5: unknown property", packet(0x30, &[0, 1, b'a', 2, 0x7f, 0, b'x']), 0x81),
        ("v5: AUTH", vec![0xf0, 0x00], 0x8c),
    ]
}

fn hostile_bytes(name: &str, fixed: &[u8], level: u8) -> Vec<u8> {
    match name {
        "topic name that is not UTF-8" => publish_packet(level, &[b'a', 0xc3, 0x28], 0, 0, false, b"x"),
        "topic name holding U+0000" => publish_packet(level, b"a\0b", 0, 0, false, b"x"),
        "PUBLISH at QoS 1 with packet identifier 0" => publish_packet(level, b"a", 1, 0, false, b"x"),
        "PUBLISH to a '+' topic" => publish_packet(level, b"a/+", 1, 1, false, b"x"),
        "PUBLISH to a '#' topic" => publish_packet(level, b"a/#", 0, 0, false, b"x"),
        "a second CONNECT" => connect_packet(level, "hostile", true, 0),
        _ => fixed.to_vec(),
    }
}

#[test]
fn hostile_input_closes_only_the_offender() {
    let r = router(&["--cores", "2", "--max-message-size", "4096"]);
    let addr = mqtt_addr(&r);
    let mut by = Bystander::new(addr);
    let mut failures = Vec::new();
    for (name, fixed, code) in hostile_cases() {
        let levels: &[u8] = if name.starts_with("v5: ") { &[5] } else { &[4, 5] };
        for &level in levels {
            let (mut raw, _) = Raw::connected(addr, level, &format!("hostile-{level}"), true, 0);
            raw.send(&hostile_bytes(name, &fixed, level));
            let got = raw.try_closed();
            let want: Vec<(u8, Vec<u8>)> = if level == 5 { vec![(0xe0, vec![code])] } else { Vec::new() };
            // v5: DISCONNECT with the reason code first (its properties may add a reason string).
            let matched = match (level, got.as_deref()) {
                (5, Ok([(0xe0, body)])) => body.first() == Some(&code),
                (4, Ok([])) => true,
                _ => false,
            };
            if !matched {
                let got = match got {
                    Ok(got) => format!("{got:02x?} then close"),
                    Err(got) => format!("{got:02x?} and the connection still open after {STEP:?}"),
                };
                failures.push(format!("v{level} {name}: expected {want:02x?} then close, got {got}"));
            }
            by.check(name);
        }
    }
    // Before CONNECT: anything else closes the connection, silently.
    let mut raw = Raw::open(addr);
    raw.send(&[0xc0, 0x00]);
    assert!(raw.closed().is_empty(), "PINGREQ before CONNECT");
    // An unknown protocol level gets the 3.1.1 "unacceptable protocol version" CONNACK.
    let mut raw = Raw::open(addr);
    raw.send(&connect_packet(3, "old", true, 0));
    assert_eq!(raw.closed(), vec![(0x20, vec![0, 1])], "CONNECT at level 3");
    by.check("the pre-CONNECT cases");
    assert!(failures.is_empty(), "{} hostile cases misbehaved:\n{}", failures.len(), failures.join("\n"));
    r.shutdown();
}

#[test]
fn keep_alive_expiry_closes_a_silent_client() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    // Three clients at once: silent v3.1.1, silent v5, and one that pings.
    let silent = |level: u8| {
        thread::spawn(move || {
            let (mut raw, _) = Raw::connected(addr, level, &format!("ka-silent-{level}"), true, 1);
            let t0 = Instant::now();
            let got = raw.closed();
            (t0.elapsed(), got)
        })
    };
    let v4 = silent(4);
    let v5 = silent(5);
    let pinger = thread::spawn(move || {
        let (mut raw, _) = Raw::connected(addr, 4, "ka-pinger", true, 1);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(3000) {
            raw.send(&[0xc0, 0x00]);
            assert_eq!(raw.expect(0xd0, "PINGRESP"), Vec::<u8>::new());
            thread::sleep(Duration::from_millis(500));
        }
    });
    let (t4, got4) = v4.join().unwrap();
    let (t5, got5) = v5.join().unwrap();
    pinger.join().expect("a client that pings within its keep-alive stays connected");
    // 1.5 x keep-alive, checked every 0.5 s: 1.5 to 2 s (some slack for a loaded machine).
    let ok = Duration::from_millis(1400)..Duration::from_millis(2600);
    assert!(ok.contains(&t4), "v3.1.1 silent client closed after {t4:?}");
    assert!(ok.contains(&t5), "v5 silent client closed after {t5:?}");
    assert!(got4.is_empty(), "{got4:?}");
    assert_eq!(got5.len(), 1, "{got5:?}");
    assert_eq!((got5[0].0, got5[0].1.first()), (0xe0, Some(&0x8d)), "v5: DISCONNECT 0x8D keep-alive timeout");
    r.shutdown();
}

// ---------------------------------------------------------------------------
// MQTT and WAMP together

fn event(c: &mut Client) -> (u64, fennec::value::Dict, Payload) {
    match c.recv() {
        Msg::Event { subscription, details, payload, .. } => (subscription, details, payload),
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[test]
fn mqtt_publish_reaches_wamp_subscribers() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    for ser in [Serializer::Json, Serializer::MsgPack] {
        let mut wamp = join(r.local_addr, ser);
        let sid = wamp.subscribe("m2w.sensor.temp", Dict::new());
        let dotted = wamp.subscribe("m2w.v1/2.x", Dict::new());
        let mut publ = Mq::connect(addr, "m2w-pub", true);
        let cases: Vec<(&[u8], Vec<Value>)> = vec![
            (b"[1,\"a\",null]", vec![Value::UInt(1), Value::Str("a".into()), Value::Null]),
            (b"{\"t\":21.5}", vec![Value::Dict(vec![("t".into(), Value::Float(21.5))])]),
            (b"-3", vec![Value::Int(-3)]),
            (b"\"text\"", vec![Value::Str("text".into())]),
            (b"hello", vec![Value::Bin(b"hello".to_vec())]),
            (b"\xff\x00\x01", vec![Value::Bin(vec![0xff, 0, 1])]),
        ];
        for (bytes, want) in cases {
            publ.publish("m2w/sensor/temp", QoS::AtLeastOnce, false, bytes.to_vec());
            let (sub, _, payload) = event(&mut wamp);
            assert_eq!(sub, sid);
            assert_eq!(
                payload.values().args.as_deref(),
                Some(&want[..]),
                "{ser:?}: {}",
                String::from_utf8_lossy(bytes)
            );
            assert!(payload.values().kwargs.as_ref().is_none_or(|k| k.is_empty()));
        }
        // An empty payload: no arguments.
        publ.publish("m2w/sensor/temp", QoS::AtMostOnce, false, Vec::new());
        let (_, _, payload) = event(&mut wamp);
        assert!(payload.values().args.as_ref().is_none_or(|a| a.is_empty()), "{payload:?}");
        // A '.' inside an MQTT level is a '/' inside a WAMP component.
        publ.publish("m2w/v1.2/x", QoS::AtMostOnce, false, "1");
        let (sub, _, payload) = event(&mut wamp);
        assert_eq!((sub, payload.into_values().args), (dotted, Some(vec![Value::UInt(1)])));
        publ.disconnect();
    }
    r.shutdown();
}

#[test]
fn wamp_publish_reaches_mqtt_subscribers() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut sub = Mq::connect(addr, "w2m-sub", true);
    sub.subscribe("w2m/#", QoS::AtLeastOnce);
    sub.subscribe("w2m2/+/temp", QoS::AtLeastOnce);
    sub.subscribe("w2m2/end", QoS::AtLeastOnce);
    let mut v5 = Mq5::connect(addr, "w2m-v5");
    v5.subscribe("w2m/one", Q5::AtMostOnce);
    let mut wamp = join(r.local_addr, Serializer::Json);
    let kw = |pairs: Vec<(&str, Value)>| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let cases: Vec<(Payload, &[u8])> = vec![
        (args(vec![Value::Str("hi".into())]), b"\"hi\""),
        (args(vec![Value::Dict(kw(vec![("t", Value::Float(21.5))]))]), b"{\"t\":21.5}"),
        (args(vec![Value::UInt(1), Value::UInt(2)]), b"[1,2]"),
        (
            Payload::new(Some(vec![Value::UInt(1)]), Some(kw(vec![("k", Value::Bool(true))]))),
            b"{\"args\":[1],\"kwargs\":{\"k\":true}}",
        ),
        (Payload::new(None, Some(kw(vec![("k", Value::Null)]))), b"{\"args\":[],\"kwargs\":{\"k\":null}}"),
        (args(vec![Value::Bin(vec![0, 1, 2, 255])]), b"\x00\x01\x02\xff"),
        (args(vec![]), b""),
    ];
    for (payload, want) in &cases {
        wamp.publish("w2m.one", payload.clone(), true);
        let p = sub.recv();
        assert_eq!(p.topic, "w2m/one");
        assert_eq!(&p.payload[..], *want, "{payload:?} -> {}", String::from_utf8_lossy(want));
        assert_eq!(p.qos, QoS::AtMostOnce, "WAMP events are QoS 0");
        let p = v5.recv();
        assert_eq!((&p.topic[..], &p.payload[..]), (&b"w2m/one"[..], *want));
    }
    // WAMP topic components with '/' come out as MQTT levels with '.'.
    wamp.publish("w2m.v1/2.x", args(vec![Value::UInt(7)]), true);
    assert_eq!(sub.recv_text(), ("w2m/v1.2/x".into(), "7".into()));
    // `+` and `#` filters match WAMP publications.
    for t in ["w2m2.a.temp", "w2m2.a.hum", "w2m2.a.b.temp", "w2m2.b.temp", "w2m2.end"] {
        wamp.publish(t, args(vec![Value::Str(t.into())]), true);
    }
    let got: Vec<String> = sub.until("w2m2/end").iter().map(|p| p.topic.clone()).collect();
    assert_eq!(got, ["w2m2/a/temp", "w2m2/b/temp"]);
    sub.quiet();
    r.shutdown();
}

#[test]
fn retained_values_cross_protocols() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut publ = Mq::connect(addr, "xr-pub", true);
    publ.publish("xr/m", QoS::AtLeastOnce, true, "{\"v\":1}");
    publ.publish("xr/bin", QoS::AtLeastOnce, true, "raw bytes");

    // MQTT retained -> WAMP subscriber with get_retained.
    let mut wamp = join(r.local_addr, Serializer::MsgPack);
    let get = opts(&[("get_retained", Value::Bool(true))]);
    let sid = wamp.subscribe("xr.m", get.clone());
    let (sub, details, payload) = event(&mut wamp);
    assert_eq!(sub, sid);
    assert_eq!(dict_get(&details, "retained"), Some(&Value::Bool(true)), "{details:?}");
    assert_eq!(payload.values().args, Some(vec![Value::Dict(vec![("v".into(), Value::UInt(1))])]));
    let sid = wamp.subscribe("xr.bin", get.clone());
    let (sub, _, payload) = event(&mut wamp);
    assert_eq!((sub, payload.into_values().args), (sid, Some(vec![Value::Bin(b"raw bytes".to_vec())])));
    // Without get_retained: nothing.
    let mut plain = join(r.local_addr, Serializer::Json);
    plain.subscribe("xr.m", Dict::new());
    plain.publish("xr.sync", args(vec![]), true);

    // WAMP publish with retain=true -> a later MQTT subscriber, retain flag on.
    let request = wamp.request();
    let options = opts(&[("retain", Value::Bool(true)), ("acknowledge", Value::Bool(true))]);
    let payload = Payload::args(vec![Value::Str("w".into())]);
    wamp.send(&Msg::Publish { request, options, topic: "xr.w".into(), payload });
    assert!(matches!(wamp.recv(), Msg::Published { .. }));
    let mut late = Mq::connect(addr, "xr-late", true);
    late.subscribe("xr/+", QoS::AtLeastOnce);
    let mut got: Vec<(String, String, bool)> = (0..3)
        .map(|_| {
            let p = late.recv();
            (p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned(), p.retain)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("xr/bin".into(), "raw bytes".into(), true),
            ("xr/m".into(), "{\"v\":1}".into(), true),
            ("xr/w".into(), "\"w\"".into(), true)
        ]
    );
    late.quiet();
    // ... and a later WAMP subscriber with get_retained sees the WAMP-set value too.
    let mut wamp2 = join(r.local_addr, Serializer::Json);
    let sid = wamp2.subscribe("xr.w", get);
    let (sub, details, payload) = event(&mut wamp2);
    assert_eq!((sub, dict_get(&details, "retained")), (sid, Some(&Value::Bool(true))));
    assert_eq!(payload.values().args, Some(vec![Value::Str("w".into())]));
    // The plain subscriber got no retained event, only live ones.
    publ.publish("xr/m", QoS::AtLeastOnce, false, "2");
    let (_, details, payload) = event(&mut plain);
    assert_eq!(dict_get(&details, "retained"), None);
    assert_eq!(payload.values().args, Some(vec![Value::UInt(2)]));
    r.shutdown();
}

// ---------------------------------------------------------------------------
// Mosquitto command-line clients

#[test]
fn mosquitto_clients_interoperate() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let port = addr.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str()];
    let with = |more: &[&str]| -> Vec<String> { base.iter().chain(more).map(|s| s.to_string()).collect() };
    let run = |tool: &str, more: &[&str]| {
        let a = with(more);
        ok_stdout(tool, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Retained: published by mosquitto_pub, read by mosquitto_sub (3.1.1 and 5).
    run("mosquitto_pub", &["-t", "mosq/ret", "-m", "hello", "-r", "-q", "1"]);
    let out = run("mosquitto_sub", &["-t", "mosq/ret", "-C", "1", "-W", "5", "-F", "%r %q %t %p"]);
    assert_eq!(out.trim(), "1 0 mosq/ret hello");
    let out =
        run("mosquitto_sub", &["-V", "mqttv5", "-q", "1", "-t", "mosq/+", "-C", "1", "-W", "5", "-F", "%r %q %t %p"]);
    assert_eq!(out.trim(), "1 1 mosq/ret hello");

    // A persistent mosquitto_sub session collects what is published while it is away.
    let sub = ["-c", "-i", "mosq-sub", "-q", "2", "-t", "mosq/live/#"];
    run("mosquitto_sub", &[&sub[..], &["-E"]].concat());
    run("mosquitto_pub", &["-t", "mosq/live/a", "-m", "[1,2]", "-q", "2"]);
    run("mosquitto_pub", &["-V", "mqttv5", "-t", "mosq/live/b", "-m", "second", "-q", "1"]);
    let out = run("mosquitto_sub", &[&sub[..], &["-C", "2", "-W", "5", "-F", "%q %t %p"]].concat());
    // libmosquitto hands a QoS 2 message over at PUBREL, so the QoS 1 one may print first.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["1 mosq/live/b second", "2 mosq/live/a [1,2]"]);

    // rumqttc and mosquitto_pub, v5 properties through to mosquitto_sub.
    let mut m = Mq::connect(addr, "mosq-rumqttc", true);
    m.subscribe("mosq/v5", QoS::AtLeastOnce);
    let v5sub = ["-V", "mqttv5", "-c", "-x", "60", "-i", "mosq-v5", "-q", "1", "-t", "mosq/v5"];
    run("mosquitto_sub", &[&v5sub[..], &["-E"]].concat());
    run(
        "mosquitto_pub",
        &[
            "-V",
            "mqttv5",
            "-t",
            "mosq/v5",
            "-m",
            "{\"x\":1}",
            "-q",
            "1",
            "-D",
            "publish",
            "content-type",
            "application/json",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
    );
    assert_eq!(m.recv_text(), ("mosq/v5".into(), "{\"x\":1}".into()));
    let out = run("mosquitto_sub", &[&v5sub[..], &["-C", "1", "-W", "5", "-F", "%t %p %C %P"]].concat());
    assert_eq!(out.trim(), "mosq/v5 {\"x\":1} application/json k:v");
    r.shutdown();
}

// ---------------------------------------------------------------------------
// More sessions and protocol errors

/// A session resumed with session present has its subscriptions routed
/// by the time the CONNACK is sent: a QoS 1 message published right after
/// that CONNACK reaches the client (3.1.1 section 4.3.2 / MQTT 5 4.3.2: QoS 1
/// messages matching the session's subscriptions are delivered), whichever
/// worker the client comes back on. (Before f741d66 the moved session's
/// subscriptions were re-acquired after the CONNACK and such messages were
/// lost.)
#[test]
fn resumed_session_is_routed_at_connack() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut publ = Mq::connect(addr, "rs-pub", true);
    let mut lost = Vec::new();
    // Topics owned by worker 0 and worker 1 (`owner_of`); the client comes
    // back on the same worker (a filler connection in between) or the other
    // one, after a DISCONNECT or a dropped connection.
    for topic in ["rs/b", "rs/a"] {
        for (drop_it, same_worker) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut c = Mq::connect(addr, "rs-client", false);
            c.subscribe(topic, QoS::AtLeastOnce);
            if drop_it {
                drop(c);
            } else {
                c.disconnect();
            }
            let _filler = same_worker.then(|| Raw::connected(addr, 4, "rs-filler", true, 0));
            let mut c = Mq::connect(addr, "rs-client", false);
            assert!(c.session_present);
            let how = if drop_it { "dropped" } else { "disconnected" };
            let worker = if same_worker { "same" } else { "other" };
            let payload = format!("{topic}, {how}, back on the {worker} worker");
            publ.publish(topic, QoS::AtLeastOnce, false, payload.clone());
            match c.try_recv(Duration::from_secs(2)) {
                Some(p) => assert_eq!(String::from_utf8_lossy(&p.payload), payload),
                None => lost.push(payload),
            }
            c.client.unsubscribe(topic).unwrap();
            c.wait("UNSUBACK", |ev| matches!(ev, Event::Incoming(Packet::UnsubAck(_))).then_some(()));
            c.disconnect();
        }
    }
    // Takeover of a live persistent session by a connection on the other worker.
    let mut a = Mq::connect(addr, "rs-take", false);
    a.subscribe("rs/take", QoS::AtLeastOnce);
    let mut b = Mq::connect(addr, "rs-take", false);
    assert!(b.session_present);
    publ.publish("rs/take", QoS::AtLeastOnce, false, "after takeover");
    if b.try_recv(Duration::from_secs(2)).is_none() {
        lost.push("after takeover".into());
    }
    a.expect_closed();
    assert!(lost.is_empty(), "QoS 1 messages published right after a session-present CONNACK were lost: {lost:?}");
    r.shutdown();
}

/// MQTT 5, 3.8.3: "A SUBSCRIBE packet with no Payload is a Protocol Error"
/// (0x82).
#[test]
fn v5_subscribe_without_filters_is_a_protocol_error() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let (mut raw, _) = Raw::connected(addr, 5, "sub-empty", true, 0);
    raw.send(&packet(0x82, &[0, 1, 0])); // packet ID 1, no properties, no filters
    let got = raw.closed();
    assert_eq!(got.len(), 1, "{got:02x?}");
    assert_eq!((got[0].0, got[0].1.first()), (0xe0, Some(&0x82)), "DISCONNECT reason: {got:02x?}");
    r.shutdown();
}

// ---------------------------------------------------------------------------
// Found by these tests: each one states the rule and what the broker did.

/// Packets with a fixed remaining length that say otherwise are malformed
/// (3.1.1: PINGREQ 0, PUBACK/PUBREC/PUBREL/PUBCOMP 2; v5: PINGREQ 0) and
/// close the connection, v5 with DISCONNECT 0x81. Found: accepted (PINGREQ
/// answered with PINGRESP, the extra bytes ignored), connection kept.
#[test]
fn fixed_length_packets_with_another_length_are_malformed() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let cases: &[(u8, &str, &[u8])] = &[
        (4, "PINGREQ, remaining length 1", &[0xc0, 0x01, 0x00]),
        (5, "PINGREQ, remaining length 1", &[0xc0, 0x01, 0x00]),
        (4, "PUBACK, remaining length 3", &[0x40, 0x03, 0x00, 0x01, 0x00]),
        (4, "PUBREC, remaining length 3", &[0x50, 0x03, 0x00, 0x01, 0x00]),
        (4, "PUBREL, remaining length 3", &[0x62, 0x03, 0x00, 0x01, 0x00]),
        (4, "PUBCOMP, remaining length 3", &[0x70, 0x03, 0x00, 0x01, 0x00]),
    ];
    let mut failures = Vec::new();
    for (level, name, bytes) in cases {
        let (mut raw, _) = Raw::connected(addr, *level, "fixed-len", true, 0);
        raw.send(bytes);
        let got = raw.try_closed_within(Duration::from_secs(1));
        let ok = match (level, got.as_deref()) {
            (5, Ok([(0xe0, body)])) => body.first() == Some(&0x81),
            (4, Ok([])) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("v{level} {name}: got {got:02x?} (Err: still open after 1 s)"));
        }
    }
    assert!(failures.is_empty(), "malformed packets accepted:\n{}", failures.join("\n"));
    r.shutdown();
}

/// MQTT 5 DISCONNECT: "If the Remaining Length is less than 2, a value of 0
/// is used" for the property length (3.14.2.2.1), so a DISCONNECT of one
/// byte (the reason code) is valid; with 0x00 the will is discarded, with
/// 0x04 it is published. Paho sends exactly this for
/// `disconnect(reasoncode=...)` without properties. Found: the broker
/// answers DISCONNECT 0x81 "InsufficientBytes(1)" and, for 0x00, publishes
/// the will.
#[test]
fn v5_disconnect_with_only_a_reason_code_is_valid() {
    let r = router(&["--cores", "2"]);
    let addr = mqtt_addr(&r);
    let mut watcher = Mq::connect(addr, "dc-watcher", true);
    watcher.subscribe("dc/#", QoS::AtLeastOnce);
    let mut problems = Vec::new();
    for (code, will_wanted) in [(0x00u8, false), (0x04, true)] {
        // CONNECT v5 with a will on dc/<code>.
        let topic = format!("dc/{code:02x}");
        let mut b = Vec::new();
        mqtt_str(&mut b, b"MQTT");
        b.extend_from_slice(&[5, 0x02 | 0x04 | 0x08, 0, 0, 0]); // clean, will at QoS 1; keep-alive 0; no props
        mqtt_str(&mut b, format!("dc-{code}").as_bytes());
        b.push(0); // will properties
        mqtt_str(&mut b, topic.as_bytes());
        mqtt_str(&mut b, b"will");
        let mut raw = Raw::open(addr);
        raw.send(&packet(0x10, &b));
        assert_eq!(raw.expect(0x20, "CONNACK")[1], 0);
        raw.send(&[0xe0, 0x01, code]);
        let got = raw.try_closed();
        if !matches!(got.as_deref(), Ok([])) {
            problems.push(format!("DISCONNECT {code:#04x} (remaining length 1): the broker answered {got:02x?}"));
        }
        let will = watcher.try_recv(Duration::from_millis(500));
        if will.is_some() != will_wanted {
            problems.push(format!("DISCONNECT {code:#04x}: will published = {}, want {will_wanted}", will.is_some()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    r.shutdown();
}
