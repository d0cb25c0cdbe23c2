//! A store that fails writes (through the `Store` trait, in-process): the
//! publishers of retained writes get the error (WAMP ERROR
//! `fennec.error.store_failed`, MQTT 5 PUBACK 0x80, MQTT 3.1.1 a closed
//! connection), and nothing else stops: live routing goes on, and writes
//! succeed again once the store does.

#[allow(unused_imports)]
mod common;

use common::raw::{publish_packet, Raw};
use common::{args, join, opts};
use fennec::config::File;
use fennec::store::{MemStore, Pairs, Store, StoreError, Write};
use fennec::value::Value;
use fennec::wamp::message::{Msg, Serializer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A `MemStore` whose commits fail while `fail` is set.
struct Flaky {
    inner: MemStore,
    fail: Arc<AtomicBool>,
}

impl Store for Flaky {
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("no space left on device (injected)".into());
        }
        self.inner.commit(writes)
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.inner.scan(prefix)
    }
}

#[test]
fn a_failing_store_fails_retained_writes_only() {
    let fail = Arc::new(AtomicBool::new(true));
    let store = Flaky { inner: MemStore::default(), fail: fail.clone() };
    let r = common::router_with_store(&[], File::default(), Box::new(store));
    let mqtt = r.mqtt_addr.unwrap();

    let mut sub = join(r.local_addr, Serializer::Json);
    let request = sub.request();
    sub.send(&Msg::Subscribe { request, options: vec![], topic: "faults.t".into() });
    assert!(matches!(sub.recv(), Msg::Subscribed { .. }));

    let mut pubr = join(r.local_addr, Serializer::Json);
    let publish = |c: &mut common::Client, retain: bool, v: u64| {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true)), ("retain", Value::Bool(retain))]);
        c.send(&Msg::Publish { request, options, topic: "faults.t".into(), payload: args(vec![Value::UInt(v)]) });
        c.recv()
    };
    // A retained write fails: its publisher is told.
    match publish(&mut pubr, true, 1) {
        Msg::Error { error, .. } => assert_eq!(error, "fennec.error.store_failed"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    // Live routing goes on: the subscriber got that event, and a plain publish works.
    assert!(matches!(sub.recv(), Msg::Event { .. }));
    assert!(matches!(publish(&mut pubr, false, 2), Msg::Published { .. }));
    assert!(matches!(sub.recv(), Msg::Event { .. }));

    // MQTT 5: PUBACK 0x80; MQTT 3.1.1: the connection is closed.
    let (mut v5, _) = Raw::connected(mqtt, 5, "faults-v5", true, 0);
    let mut packet = publish_packet(5, b"faults/m", 1, 1, false, b"x");
    packet[0] |= 1;
    v5.send(&packet);
    let ack = v5.expect(0x40, "PUBACK");
    assert_eq!(ack[..3], [0, 1, 0x80], "PUBACK with 0x80: {ack:?}");
    let (mut v4, _) = Raw::connected(mqtt, 4, "faults-v4", true, 0);
    let mut packet = publish_packet(4, b"faults/m", 1, 1, false, b"x");
    packet[0] |= 1;
    v4.send(&packet);
    let rest = v4.closed();
    assert!(rest.iter().all(|(b, _)| *b != 0x40), "no PUBACK for a write that failed: {rest:?}");

    // The store recovers: writes succeed again.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(publish(&mut pubr, true, 3), Msg::Published { .. }));
    r.shutdown();
}

/// A `MemStore` whose commits wait while the gate is shut.
struct Gated {
    inner: MemStore,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Store for Gated {
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let (lock, cv) = &*self.open;
        let _open = cv.wait_while(lock.lock().unwrap(), |open| !*open).unwrap();
        self.inner.commit(writes)
    }

    fn scan(&mut self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.inner.scan(prefix)
    }
}

/// Under `sync`, a QoS 2 PUBLISH resent while its first copy's PUBREC
/// still waits for the disk gets no early PUBREC: one PUBREC, once it is
/// stored.
#[test]
fn a_qos2_resend_is_not_acknowledged_before_the_first_is_stored() {
    let open = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let store = Gated { inner: MemStore::default(), open: open.clone() };
    let r = common::router_with_store(&[], File::default(), Box::new(store));
    // A persistent session: its QoS 2 packet IDs go to the store.
    let (mut p, _) = Raw::connected(r.mqtt_addr.unwrap(), 4, "gated-q2", false, 0);
    p.send(&publish_packet(4, b"gated/t", 2, 9, false, b"x"));
    p.quiet();
    p.send(&publish_packet(4, b"gated/t", 2, 9, true, b"x"));
    p.quiet();
    {
        let (lock, cv) = &*open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    assert_eq!(p.expect(0x50, "PUBREC"), vec![0, 9]);
    p.quiet();
    r.shutdown();
}
