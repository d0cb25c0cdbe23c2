//! The WAMP hot path end to end, without sockets: one shard
//! (`worker::testkit`), clients over WebSocket framing, 64-byte payloads.
//! Each iteration hands the router one client message the way the worker
//! loop does (`wamp::session::on_message`), lets the shard settle, and takes
//! what it queued for the receiving clients (written to a sink, as the
//! worker's flush writes it to the socket).
//! So the figures are the router's own CPU per message, without the
//! kernel's share, which on a shared VM is the noisy part.
//!
//! - `publish_event_{json,msgpack}`: PUBLISH in, EVENT queued, 1 -> 1.
//! - `publish_event_json_to_msgpack`: the same across serializers.
//! - `publish_event_json_fanout_100`: PUBLISH in, 100 EVENTs queued.
//! - `call_result_{json,msgpack}`: CALL in, INVOCATION out, YIELD in,
//!   RESULT out (two client messages per iteration; the figure includes
//!   encoding the YIELD, which carries the INVOCATION's request ID).
//! - `inspect/report_10k_sessions`: the admin listener's report of a worker
//!   with 10,000 idle sessions (what one open console costs it each second).
//! - `inspect/snapshot_10k_sessions`: the same worker's metrics snapshot
//!   (histograms cloned, per-realm figures gathered), once per interval.
//!
//! Run: cargo bench --bench pipeline

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fennec::payload::Payload;
use fennec::value::{Dict, Value};
use fennec::wamp::message::{encode, Msg, Serializer};
use fennec::wamp::session::{on_message, Framing};
use fennec::worker::testkit::{Client, Cluster};

const WS: Framing = Framing::WebSocket;

fn bytes(ser: Serializer, msg: &Msg) -> Vec<u8> {
    let mut out = Vec::new();
    encode(ser, msg, &mut out);
    out
}

fn hello(c: &mut Cluster, who: Client, ser: Serializer) {
    let roles = vec![(
        "roles".to_owned(),
        Value::Dict(
            ["publisher", "subscriber", "caller", "callee"]
                .iter()
                .map(|r| (r.to_string(), Value::Dict(Dict::new())))
                .collect(),
        ),
    )];
    on_message(&mut c.shards[0], who.handle, &bytes(ser, &Msg::Hello { realm: "realm1".into(), details: roles }));
    c.settle();
    assert_eq!(c.take_frames(who).len(), 1, "WELCOME");
}

fn client(c: &mut Cluster, ser: Serializer) -> Client {
    let who = c.wamp_with(0, ser, WS);
    hello(c, who, ser);
    who
}

fn payload() -> Payload {
    Payload::args(vec![Value::Str("x".repeat(64))])
}

/// A publisher and `subs` subscribers of `sub_ser` on one topic; the PUBLISH.
fn pubsub(pub_ser: Serializer, sub_ser: Serializer, subs: usize) -> (Cluster, Client, Vec<Client>, Vec<u8>) {
    let mut c = Cluster::new(1);
    let publisher = client(&mut c, pub_ser);
    let subscribers: Vec<Client> = (0..subs)
        .map(|_| {
            let s = client(&mut c, sub_ser);
            let sub = Msg::Subscribe { request: 1, options: Dict::new(), topic: "bench.topic".into() };
            on_message(&mut c.shards[0], s.handle, &bytes(sub_ser, &sub));
            c.settle();
            assert_eq!(c.take_frames(s).len(), 1, "SUBSCRIBED");
            s
        })
        .collect();
    let publish = Msg::Publish { request: 1, options: Dict::new(), topic: "bench.topic".into(), payload: payload() };
    (c, publisher, subscribers, bytes(pub_ser, &publish))
}

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for (name, ps, ss, n) in [
        ("publish_event_json", Serializer::Json, Serializer::Json, 1),
        ("publish_event_msgpack", Serializer::MsgPack, Serializer::MsgPack, 1),
        ("publish_event_json_to_msgpack", Serializer::Json, Serializer::MsgPack, 1),
        ("publish_event_json_fanout_100", Serializer::Json, Serializer::Json, 100),
    ] {
        let (mut c, publisher, subscribers, publish) = pubsub(ps, ss, n);
        g.bench_function(name, |b| {
            b.iter(|| {
                on_message(&mut c.shards[0], publisher.handle, &publish);
                c.settle();
                for &s in &subscribers {
                    let written = c.drain(s);
                    debug_assert!(written > 0);
                }
            })
        });
    }
    for (name, ser) in [("call_result_json", Serializer::Json), ("call_result_msgpack", Serializer::MsgPack)] {
        let mut c = Cluster::new(1);
        let caller = client(&mut c, ser);
        let callee = client(&mut c, ser);
        let reg = Msg::Register { request: 1, options: Dict::new(), procedure: "bench.proc".into() };
        on_message(&mut c.shards[0], callee.handle, &bytes(ser, &reg));
        c.settle();
        assert_eq!(c.take_frames(callee).len(), 1, "REGISTERED");
        let call = bytes(
            ser,
            &Msg::Call { request: 1, options: Dict::new(), procedure: "bench.proc".into(), payload: payload() },
        );
        let mut request = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                on_message(&mut c.shards[0], caller.handle, &call);
                c.settle();
                let written = c.drain(callee);
                // The router numbers INVOCATIONs 1, 2, 3, ... per callee.
                request += 1;
                debug_assert!(written > 0);
                let answer = Msg::Yield { request, options: Dict::new(), payload: payload() };
                on_message(&mut c.shards[0], callee.handle, &bytes(ser, &answer));
                c.settle();
                let written = c.drain(caller);
                debug_assert!(written > 0);
            })
        });
    }
    g.finish();
    // What a console costs a worker: one report a second per open console
    // (`inspect::report`), here over 10,000 idle sessions with one
    // subscription each (the list stops at 2,000).
    // The snapshot's fixed part (the histograms), without sessions.
    let mut empty = Cluster::new(1);
    let mut g = cr.benchmark_group("inspect");
    g.sample_size(20);
    g.bench_function("snapshot_no_sessions", |b| b.iter(|| fennec::inspect::snapshot(&mut empty.shards[0])));
    g.finish();
    let mut c = Cluster::new(1);
    for i in 0..10_000 {
        let s = client(&mut c, Serializer::Json);
        let sub = Msg::Subscribe { request: 1, options: Dict::new(), topic: format!("idle.{}", i % 100) };
        on_message(&mut c.shards[0], s.handle, &bytes(Serializer::Json, &sub));
        c.settle();
        c.take_frames(s);
    }
    let mut g = cr.benchmark_group("inspect");
    g.sample_size(20);
    g.bench_function("report_10k_sessions", |b| b.iter(|| fennec::inspect::report(&c.shards[0])));
    // What the metrics cost a worker each interval: its snapshot, with the
    // per-realm pass over the same 10,000 sessions.
    g.bench_function("snapshot_10k_sessions", |b| b.iter(|| fennec::inspect::snapshot(&mut c.shards[0])));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
