//! The store's bounds (`[store] max_retained_keys`, `max_retained_value`),
//! decided at each key's owner: a retained write over one is refused and
//! its publisher told (WAMP ERROR `fennec.error.limit_exceeded`, MQTT 5
//! PUBACK 0x97, MQTT 3.1.1 a closed connection); a write that replaces or
//! deletes a value is never refused for the count. In-process, `--cores 2`,
//! an in-memory store under `--durability sync` (so publishers wait for
//! their owner's answer).

#[allow(unused_imports)]
mod common;

use common::raw::{publish_packet, Raw};
use common::{args, join, opts, Client};
use fennec::config::{File, StoreFile};
use fennec::router::owner_of;
use fennec::store::MemStore;
use fennec::value::Value;
use fennec::wamp::message::{Msg, Serializer};

fn router() -> fennec::server::Running {
    // 4 keys per realm: 2 per worker.
    let store = StoreFile { max_retained_keys: Some(4), max_retained_value: Some(100), ..Default::default() };
    let file = File { store, ..Default::default() };
    common::router_with_store(&["--realm", "realm1", "--realm", "realm2"], file, Box::new(MemStore::default()))
}

/// A retained, acknowledged publish; `Ok` for PUBLISHED, `Err(uri)` for ERROR.
fn put(c: &mut Client, topic: &str, payload: Vec<Value>) -> Result<(), String> {
    let request = c.request();
    let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(true))]);
    c.send(&Msg::Publish { request, options, topic: topic.into(), payload: args(payload) });
    match c.recv() {
        Msg::Published { request: r, .. } if r == request => Ok(()),
        Msg::Error { request: r, error, .. } if r == request => Err(error),
        other => panic!("expected PUBLISHED or ERROR, got {other:?}"),
    }
}

/// Three topics that worker 0 owns.
fn owned_by_0(prefix: &str) -> Vec<String> {
    (0..).map(|i| format!("{prefix}.{i}")).filter(|t| owner_of("realm1", t, 2) == 0).take(3).collect()
}

#[test]
fn a_realm_full_of_keys_refuses_new_ones_but_not_replacements_or_deletes() {
    let r = router();
    let mut c = join(r.local_addr, Serializer::Json);
    let keys = owned_by_0("bound.count");
    let one = || vec![Value::UInt(1)];
    assert_eq!(put(&mut c, &keys[0], one()), Ok(()));
    assert_eq!(put(&mut c, &keys[1], one()), Ok(()));
    assert_eq!(put(&mut c, &keys[2], one()), Err("fennec.error.limit_exceeded".into()), "worker 0's share is 2");
    assert_eq!(put(&mut c, &keys[0], vec![Value::UInt(2)]), Ok(()), "replacing a value is not a new key");
    assert_eq!(put(&mut c, &keys[1], vec![]), Ok(()), "deleting one");
    assert_eq!(put(&mut c, &keys[2], one()), Ok(()), "room again");
    // Another realm has its own count.
    let mut other = common::join_realm(r.local_addr, Serializer::Json, "realm2");
    assert_eq!(put(&mut other, &keys[1], one()), Ok(()));
}

#[test]
fn a_value_over_the_bound_is_refused_over_wamp_and_mqtt() {
    let r = router();
    let mut c = join(r.local_addr, Serializer::Json);
    let big = vec![Value::Str("x".repeat(200))];
    assert_eq!(put(&mut c, "bound.size", big), Err("fennec.error.limit_exceeded".into()));
    assert_eq!(put(&mut c, "bound.size", vec![Value::Str("small".into())]), Ok(()));
    let mqtt = r.mqtt_addr.unwrap();
    // MQTT 5: PUBACK 0x97 (quota exceeded).
    let mut v5 = Raw::open(mqtt);
    v5.send(&common::raw::connect_packet(5, "bound-v5", true, 60));
    v5.expect(0x20, "CONNACK");
    // A plain publication of that size is no retained value: not bounded.
    v5.send(&publish_packet(5, b"bound/mqtt", 1, 1, false, &[b'y'; 200]));
    let mut publish = publish_packet(5, b"bound/mqtt", 1, 2, false, &[b'y'; 200]);
    publish[0] |= 1; // retain
    v5.send(&publish);
    let _plain = v5.expect(0x40, "PUBACK of the plain one");
    let ack = v5.expect(0x40, "PUBACK of the retained one");
    assert_eq!(ack[..3], [0, 2, 0x97], "quota exceeded: {ack:?}");
    // MQTT 3.1.1 has no way to say so: the connection is closed.
    let (mut v4, _) = Raw::connected(mqtt, 4, "bound-v4", true, 60);
    let mut publish = publish_packet(4, b"bound/mqtt", 1, 1, false, &[b'y'; 200]);
    publish[0] |= 1;
    v4.send(&publish);
    v4.closed();
}
