//! Three nodes on one NATS server (`nats-server -js`, Debian's, which
//! `scripts/test` installs): WAMP and MQTT publications cross nodes in
//! order, only toward nodes with subscribers, and a node killed mid-traffic
//! costs the others nothing. Skipped, with a message, where there is no
//! `nats-server` (never under CI, where its absence fails).

mod common;

use common::m::Msg;
use common::process::{start_with, Router};
use common::raw::{publish_packet, subscribe_packet, Raw};
use common::{args, join, opts, Client};
use fennec::value::{Dict, Value};
use fennec::wamp::message::Serializer;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Nats {
    child: Child,
    url: String,
    monitor: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn nats_binary() -> Option<String> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(String::from)
}

/// A NATS server with JetStream on free ports, or `None` (skip) without one.
fn nats() -> Option<Nats> {
    let Some(bin) = nats_binary() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have nats-server (scripts/test installs it)");
        eprintln!("no nats-server here: the cluster tests are skipped");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let (port, monitor) = (free_port(), free_port());
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Nats { child, url: format!("nats://127.0.0.1:{port}"), monitor, _dir: dir })
}

fn node(nats: &Nats, name: &str, data: &tempfile::TempDir) -> Router {
    start_with(data.path(), &["--durability", "none", "--cluster", &nats.url, "--node-name", name])
}

/// Nodes a, b and c on their own data directories (kept with them).
fn three_nodes(nats: &Nats) -> (Vec<tempfile::TempDir>, [Router; 3]) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = [node(nats, "a", &dirs[0]), node(nats, "b", &dirs[1]), node(nats, "c", &dirs[2])];
    (dirs, nodes)
}

/// The messages NATS has had from the connection of node `name` so far
/// (its monitoring port's `/connz`).
fn sent_to_nats(nats: &Nats, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", nats.monitor)).unwrap();
    write!(s, "GET /connz?limit=100 HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = &text[text.find("\r\n\r\n").expect("an HTTP answer") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).expect("connz JSON");
    let want = format!("fennec-{name}");
    v["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .find(|c| c["name"] == want.as_str())
        .and_then(|c| c["in_msgs"].as_u64())
        .unwrap_or_else(|| panic!("no NATS connection named {want}"))
}

fn ack() -> Dict {
    opts(&[("acknowledge", Value::Bool(true))])
}

fn seq_of(payload: &fennec::payload::Payload) -> Option<u64> {
    match payload.values().args.as_deref() {
        Some([Value::UInt(n)]) => Some(*n),
        Some([Value::Int(n)]) => Some(*n as u64),
        _ => None,
    }
}

/// Publishes marker events (args `["probe"]`) on `publisher` until `sub`
/// gets one: the subscriber's interest has reached the publisher's node.
/// The probes still in flight are skipped by the readers below.
fn until_routed(publisher: &mut Client, topic: &str, sub: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(10);
    sub.ws.get_ref().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    loop {
        publisher.publish(topic, args(vec![Value::Str("probe".into())]), true);
        if let Ok(Msg::Event { .. }) = sub.next_message() {
            break;
        }
        assert!(Instant::now() < deadline, "{topic} never reached the other node");
    }
    sub.ws.get_ref().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
}

/// The numbered events of one subscriber, probes skipped, until `n`.
fn numbered(sub: &mut Client, n: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < n as usize {
        match sub.recv() {
            Msg::Event { payload, .. } => got.extend(seq_of(&payload)),
            other => panic!("expected EVENT, got {other:?}"),
        }
    }
    got
}

/// MQTT PUBLISH bodies (QoS 0) from a raw connection until `n` numbered
/// ones came: (topic, payload).
fn mqtt_numbered(sub: &mut Raw, n: usize) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let (b1, body) = sub.read().expect("the broker stays connected");
        if b1 >> 4 != 3 {
            continue;
        }
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + len].to_vec()).unwrap();
        let payload = String::from_utf8_lossy(&body[2 + len..]).to_string();
        if payload.parse::<u64>().is_ok() {
            got.push((topic, payload));
        }
    }
    got
}

#[test]
fn publications_cross_nodes_in_order_only_where_wanted() {
    let Some(nats) = nats() else { return };
    let (_dirs, [a, b, c]) = three_nodes(&nats);

    // Subscribers on b (exact, WAMP JSON) and c (prefix, MessagePack;
    // MQTT with a `+` filter); the publisher on a, which also subscribes
    // itself (exclude_me: it never gets its own) beside a local subscriber.
    let mut on_b = join(b.wamp, Serializer::Json);
    on_b.subscribe("room.1", Dict::new());
    let mut on_c = join(c.wamp, Serializer::MsgPack);
    on_c.subscribe("room", opts(&[("match", Value::Str("prefix".into()))]));
    let (mut mqtt_c, _) = Raw::connected(c.mqtt, 4, "mqtt-on-c", true, 0);
    mqtt_c.send(&subscribe_packet(b"room/+"));
    mqtt_c.expect(0x90, "SUBACK");
    let mut publisher = join(a.wamp, Serializer::Json);
    // SUBSCRIBED on b means every node routes to it: a publication on a
    // right after it arrives, with no probing.
    on_b.subscribe("first.word", Dict::new());
    publisher.publish("first.word", args(vec![Value::UInt(1)]), true);
    assert_eq!(numbered(&mut on_b, 1), vec![1], "SUBSCRIBED on b is cluster-wide");
    publisher.subscribe("room.1", Dict::new());
    let mut local = join(a.wamp, Serializer::Json);
    local.subscribe("room.1", Dict::new());
    until_routed(&mut publisher, "room.1", &mut on_b);
    until_routed(&mut publisher, "room.1", &mut on_c);

    const N: u64 = 500;
    for i in 0..N {
        let request = publisher.request();
        publisher.write(&Msg::Publish {
            request,
            options: Dict::new(),
            topic: "room.1".into(),
            payload: args(vec![Value::UInt(i)]),
        });
    }
    publisher.flush();
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(numbered(&mut on_b, N), want, "exact subscriber on b: every event, in order");
    assert_eq!(numbered(&mut on_c, N), want, "prefix subscriber on c: every event, in order");
    assert_eq!(numbered(&mut local, N), want, "the publisher's own node still delivers");
    let mqtt = mqtt_numbered(&mut mqtt_c, N as usize);
    assert!(mqtt.iter().all(|(t, _)| t == "room/1"), "MQTT sees the topic in its own form");
    let mqtt_seq: Vec<u64> = mqtt.iter().map(|(_, p)| p.parse().unwrap()).collect();
    assert_eq!(mqtt_seq, want, "MQTT subscriber on c: every event, in order");
    // exclude_me holds: the publisher got no EVENT (its next message is
    // the answer to this acknowledged publish), and the event keeps its
    // publication ID on the other node.
    let request = publisher.request();
    publisher.send(&Msg::Publish { request, options: ack(), topic: "room.1".into(), payload: args(vec![]) });
    let published = match publisher.recv() {
        Msg::Published { request: r, publication } if r == request => publication,
        other => panic!("expected PUBLISHED (and no EVENT of its own), got {other:?}"),
    };
    match on_b.recv() {
        Msg::Event { publication, .. } => assert_eq!(publication, published, "one ID on both nodes"),
        other => panic!("expected EVENT, got {other:?}"),
    }

    // MQTT to WAMP across nodes: a publisher on b, the subscriber on a.
    let mut sensor = join(a.wamp, Serializer::Json);
    sensor.subscribe("sensor.7", Dict::new());
    let (mut mqtt_b, _) = Raw::connected(b.mqtt, 4, "mqtt-on-b", true, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    sensor.ws.get_ref().set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let got = loop {
        mqtt_b.send(&publish_packet(4, b"sensor/7", 0, 0, false, b"21.5"));
        if let Ok(Msg::Event { payload, .. }) = sensor.next_message() {
            break payload;
        }
        assert!(Instant::now() < deadline, "MQTT from b never reached WAMP on a");
    };
    assert_eq!(got.values().args, Some(vec![Value::Float(21.5)]), "MQTT JSON bytes become WAMP arguments");

    // Interest goes with the subscribers: once nobody on b or c listens to
    // room.1, a's publications stay on a (what a sends NATS grows by
    // heartbeats only, not by 500 publications).
    drop(on_b);
    drop(on_c);
    drop(mqtt_c);
    std::thread::sleep(Duration::from_millis(1500));
    let before = sent_to_nats(&nats, "a");
    for i in 0..N {
        publisher.publish("room.1", args(vec![Value::UInt(i)]), false);
    }
    publisher.publish("room.1", args(vec![]), true);
    assert_eq!(numbered(&mut local, N), want, "local delivery goes on");
    let after = sent_to_nats(&nats, "a");
    assert!(after - before < 20, "a sent {} messages to NATS with nobody elsewhere listening", after - before);
}

#[test]
fn a_killed_node_costs_the_others_nothing() {
    let Some(nats) = nats() else { return };
    let (dirs, [a, b, c]) = three_nodes(&nats);
    let mut on_b = join(b.wamp, Serializer::Json);
    on_b.subscribe("feed", Dict::new());
    let mut on_c = join(c.wamp, Serializer::Json);
    on_c.subscribe("feed", Dict::new());
    let mut publisher = join(a.wamp, Serializer::Json);
    until_routed(&mut publisher, "feed", &mut on_b);
    until_routed(&mut publisher, "feed", &mut on_c);

    // Mid-traffic, c dies; b gets every event before, during and after.
    const N: u64 = 3000;
    for i in 0..N / 3 {
        publisher.publish("feed", args(vec![Value::UInt(i)]), i % 100 == 99);
    }
    common::process::kill9(c);
    for i in N / 3..N {
        publisher.publish("feed", args(vec![Value::UInt(i)]), i % 100 == 99);
    }
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(numbered(&mut on_b, N), want, "b lost nothing to c's death");
    drop(on_c);

    // A new node joins under c's name and is reachable at once.
    let c2 = node(&nats, "c", &dirs[2]);
    let mut on_c2 = join(c2.wamp, Serializer::Json);
    on_c2.subscribe("feed", Dict::new());
    until_routed(&mut publisher, "feed", &mut on_c2);
    publisher.publish("feed", args(vec![Value::UInt(7)]), true);
    assert_eq!(numbered(&mut on_c2, 1), vec![7]);
    assert_eq!(numbered(&mut on_b, 1), vec![7]);

    // A node that joins now knows the others' subscribers before it takes
    // its first client: its first publication reaches them, unprobed.
    let d_dir = tempfile::tempdir().unwrap();
    let d = node(&nats, "d", &d_dir);
    let mut from_d = join(d.wamp, Serializer::Json);
    from_d.publish("feed", args(vec![Value::UInt(8)]), true);
    assert_eq!(numbered(&mut on_b, 1), vec![8], "the new node routed to b at once");
    assert_eq!(numbered(&mut on_c2, 1), vec![8]);
}
