//! The aggregate engine through the built binary (issue 14): fox-wamp's
//! README example (invoices summed into a total per customer), fed from
//! WAMP and MQTT, amended, killed with SIGKILL and started again on the
//! same data directory: every acknowledged invoice is there and every
//! total is exact, rebuilt from the invoices (and a built-in reducer's count
//! is kept, like any retained value). Two workers: publishers,
//! invoices and totals are spread over them.

#[allow(unused_imports)]
mod common;

use common::process::{kill9, start_with};
use common::raw::{publish_packet, Raw};
use common::{args, join, opts};
use fennec::tables::decimal::Decimal;
use fennec::value::{Dict, Value};
use fennec::wamp::message::{Msg, Serializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// fox-wamp's README example, as the interop suite has it.
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tables.json");

fn invoice(date: u32, customer: u32, cents: u64, kind: &str) -> Value {
    let mut d = Dict::new();
    d.push(("date".into(), Value::Str(format!("2024-01-{:02}", date % 28 + 1))));
    d.push(("customer".into(), Value::Str(format!("c{customer}"))));
    d.push(("amount".into(), Value::Str(format!("{}.{:02}", cents / 100, cents % 100))));
    d.push(("type".into(), Value::Str(kind.into())));
    Value::Dict(d)
}

/// Every `detail` row: customer -> total.
fn totals(addr: SocketAddr, expect: usize) -> BTreeMap<String, String> {
    let mut c = join(addr, Serializer::MsgPack);
    let request = c.request();
    let options = opts(&[("match", Value::Str("prefix".into())), ("get_retained", Value::Bool(true))]);
    c.send(&Msg::Subscribe { request, options, topic: "detail.".into() });
    assert!(matches!(c.recv(), Msg::Subscribed { .. }));
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < expect && Instant::now() < deadline {
        match c.next_message() {
            Ok(Msg::Event { payload, .. }) => {
                let row = payload.values().args.as_ref().and_then(|a| a.first()).cloned().expect("a row");
                let field = |k: &str| match &row {
                    Value::Dict(d) => d.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_str()).map(str::to_owned),
                    _ => None,
                };
                got.insert(field("customer").expect("customer"), field("total").expect("total"));
            }
            Ok(other) => panic!("expected EVENT, got {other:?}"),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn totals_are_exact_and_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(SCHEMA, dir.path().join("tables.json")).unwrap();
    let config = dir.path().join("fennec.toml");
    let schema = dir.path().join("tables.json");
    // And a built-in reducer, whose value is a retained value like any.
    let text = format!(
        "[[realm]]\nname = \"realm1\"\nschema = {:?}\n[[realm.reducer]]\nuri = \"counter\"\nkind = \"count\"\n",
        schema.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let flags = ["--durability", "sync", "--config", config.to_str().unwrap()];
    let r = start_with(data.path(), &flags);

    // The expected state: the last version of each invoice.
    let mut invoices: BTreeMap<(u32, u32), (u64, &str)> = BTreeMap::new();
    let mut c = join(r.wamp, Serializer::Json);
    for i in 0..300u32 {
        // Invoices of 7 customers over 20 dates; every fifth amends an
        // earlier one; every seventh is a refund (not summed).
        let (date, customer) = if i % 5 == 4 { (i % 20, (i / 5) % 7) } else { (i % 20, i % 7) };
        let kind = if i % 7 == 6 { "refund" } else { "sale" };
        let cents = u64::from(i) * 137 % 10_000 + 1;
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true))]);
        let payload = args(vec![invoice(date, customer, cents, kind)]);
        c.send(&Msg::Publish { request, options, topic: "invoice".into(), payload });
        match c.recv() {
            Msg::Published { .. } => {}
            other => panic!("expected PUBLISHED, got {other:?}"),
        }
        invoices.insert((date % 28, customer), (cents, kind));
    }
    // MQTT QoS 1: more invoices (JSON payloads), one PUBACK each.
    let (mut m, _) = Raw::connected(r.mqtt, 4, "tables-pub", true, 0);
    for i in 0..50u16 {
        let (date, customer, cents) = (u32::from(i) % 3 + 20, u32::from(i) % 7, u64::from(i) * 31 + 5);
        let json = serde_json::to_vec(&invoice(date, customer, cents, "sale")).unwrap();
        m.send(&publish_packet(4, b"invoice", 1, i + 1, false, &json));
        let ack = m.expect(0x40, "PUBACK");
        assert_eq!(ack[..2], (i + 1).to_be_bytes());
        invoices.insert((date % 28, customer), (cents, "sale"));
    }
    let mut expected: BTreeMap<String, Decimal> = BTreeMap::new();
    for ((_, customer), (cents, kind)) in &invoices {
        if *kind == "sale" {
            let amount = Decimal::parse(&format!("{}.{:02}", cents / 100, cents % 100)).unwrap();
            let t = expected.entry(format!("c{customer}")).or_insert(Decimal::ZERO);
            *t = t.checked_add(amount).unwrap();
        }
    }
    let expected: BTreeMap<String, String> = expected.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    for _ in 0..25 {
        let request = c.request();
        let options = opts(&[("acknowledge", Value::Bool(true))]);
        c.send(&Msg::Publish { request, options, topic: "counter".into(), payload: args(vec![Value::Null]) });
        assert!(matches!(c.recv(), Msg::Published { .. }), "PUBLISHED once counted and stored");
    }
    // Propagation reaches the totals shortly after the acknowledgements.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = totals(r.wamp, expected.len());
    while before != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        before = totals(r.wamp, expected.len());
    }
    assert_eq!(before, expected, "the totals of the current invoices, to the cent");
    kill9(r);

    let r = start_with(data.path(), &flags);
    assert_eq!(totals(r.wamp, expected.len()), expected, "the same totals after SIGKILL and a restart");
    let mut c = join(r.wamp, Serializer::Json);
    let request = c.request();
    c.send(&Msg::Call {
        request,
        options: Dict::new(),
        procedure: "wamp.table.get".into(),
        payload: args(vec![Value::Str("detail".into()), Value::Str("c3".into())]),
    });
    match c.recv() {
        Msg::Result { payload, .. } => {
            let row = payload.values().args.as_ref().and_then(|a| a.first()).cloned().expect("a row");
            let Value::Dict(d) = row else { panic!("a row: {row:?}") };
            assert!(d.iter().any(|(k, v)| k == "total" && v.as_str() == Some(expected["c3"].as_str())), "{d:?}");
        }
        other => panic!("expected RESULT, got {other:?}"),
    }
    let request = c.request();
    let options = opts(&[("get_retained", Value::Bool(true))]);
    c.send(&Msg::Subscribe { request, options, topic: "counter".into() });
    assert!(matches!(c.recv(), Msg::Subscribed { .. }));
    match c.recv() {
        Msg::Event { payload, .. } => {
            assert_eq!(payload.values().args.as_deref(), Some(&[Value::UInt(25)][..]), "the count, kept");
        }
        other => panic!("expected the retained count, got {other:?}"),
    }
    // And the engine goes on from there: one more sale for c0.
    let mut c = join(r.wamp, Serializer::MsgPack);
    let request = c.request();
    let options = opts(&[("acknowledge", Value::Bool(true))]);
    c.send(&Msg::Publish { request, options, topic: "invoice".into(), payload: args(vec![invoice(27, 0, 1, "sale")]) });
    assert!(matches!(c.recv(), Msg::Published { .. }));
    let c0 = Decimal::parse(&expected["c0"]).unwrap().checked_add(Decimal::parse("0.01").unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while totals(r.wamp, expected.len()).get("c0") != Some(&c0.to_string()) {
        assert!(Instant::now() < deadline, "c0's total took the new sale");
        std::thread::sleep(Duration::from_millis(50));
    }
}
