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
//!   RESULT out (two client messages per iteration; the YIELD, which
//!   carries the INVOCATION's request ID, is made from a fixed head and
//!   tail around that number, `Yields`, so the bench's own encoding stays
//!   out of the figure).
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

/// The callee's YIELD for each INVOCATION request ID: the encoding of
/// request 1 split around that number, which is written anew each time
/// (as a client writes its answer), so no `Value` is encoded per call.
struct Yields {
    ser: Serializer,
    head: Vec<u8>,
    tail: Vec<u8>,
    buf: Vec<u8>,
}

impl Yields {
    fn new(ser: Serializer) -> Yields {
        let one = bytes(ser, &Msg::Yield { request: 1, options: Dict::new(), payload: payload() });
        // JSON `[70,1,...`; MessagePack: a fixarray, 70, then 1 (one byte).
        let (at, number) = match ser {
            Serializer::Json => (4, b'1'),
            Serializer::MsgPack => (2, 1),
            other => panic!("no YIELD template for {other:?}"),
        };
        assert_eq!(one[at], number, "the request ID's place in {one:?}");
        Yields { ser, head: one[..at].to_vec(), tail: one[at + 1..].to_vec(), buf: Vec::new() }
    }

    fn get(&mut self, request: u64) -> &[u8] {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&self.head);
        match self.ser {
            Serializer::Json => b.extend_from_slice(request.to_string().as_bytes()),
            _ => match request {
                0..=0x7f => b.push(request as u8),
                0x80..=0xff => b.extend_from_slice(&[0xcc, request as u8]),
                0x100..=0xffff => {
                    b.push(0xcd);
                    b.extend_from_slice(&(request as u16).to_be_bytes());
                }
                0x1_0000..=0xffff_ffff => {
                    b.push(0xce);
                    b.extend_from_slice(&(request as u32).to_be_bytes());
                }
                _ => {
                    b.push(0xcf);
                    b.extend_from_slice(&request.to_be_bytes());
                }
            },
        }
        b.extend_from_slice(&self.tail);
        b
    }
}

/// The WAMP message types of small WebSocket frames (two-byte headers).
fn kinds(ser: Serializer, frames: Vec<bytes::Bytes>) -> Vec<u8> {
    frames
        .iter()
        .map(|f| match ser {
            Serializer::Json => {
                let text = std::str::from_utf8(&f[2..]).expect("JSON");
                text[1..text.find(',').expect("a list")].parse().expect("a type")
            }
            _ => f[3], // a fixarray, then the type
        })
        .collect()
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
        let mut yields = Yields::new(ser);
        // One call checked: the YIELD made from the template answers it.
        on_message(&mut c.shards[0], caller.handle, &call);
        c.settle();
        assert_eq!(kinds(ser, c.take_frames(callee)), [68], "INVOCATION");
        on_message(&mut c.shards[0], callee.handle, yields.get(1));
        c.settle();
        assert_eq!(kinds(ser, c.take_frames(caller)), [50], "RESULT");
        let mut request = 1u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                on_message(&mut c.shards[0], caller.handle, &call);
                c.settle();
                let written = c.drain(callee);
                // The router numbers INVOCATIONs 1, 2, 3, ... per callee.
                request += 1;
                debug_assert!(written > 0);
                on_message(&mut c.shards[0], callee.handle, yields.get(request));
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
