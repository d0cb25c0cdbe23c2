//! Codec micro-benchmarks: decoding a PUBLISH (and, for comparison, what
//! decoding did before: the whole message as a Value tree), encoding +
//! framing an EVENT (payload spliced in, or converted from the other
//! serializer), in JSON and MessagePack, with a 64-byte payload; decoding
//! an MQTT PUBLISH (3.1.1, and 5 with a user property and a content type).
//! Run: cargo bench --bench codec

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fennec::mqtt::codec::{self as mqtt, Decoded, PubOut, PubProps, Version};
use fennec::payload::Payload;
use fennec::value::{Dict, Value};
use fennec::wamp::message::{decode, encode, Field, Msg, Serializer, EVENT};
use fennec::wamp::session::{frame_fields, Framing};

fn publish(ser: Serializer) -> Vec<u8> {
    let msg = Msg::Publish {
        request: 12345,
        options: vec![("acknowledge".into(), Value::Bool(true))],
        topic: "com.example.bench.topic".into(),
        payload: Payload::args(vec![Value::Str("x".repeat(64))]),
    };
    let mut out = Vec::new();
    encode(ser, &msg, &mut out);
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    for (name, ser) in [("json", Serializer::Json), ("msgpack", Serializer::MsgPack)] {
        let bytes = publish(ser);
        g.bench_function(format!("decode_publish_{name}"), |b| b.iter(|| decode(ser, black_box(&bytes)).unwrap()));
        // What decoding did before: the whole message as a Value tree.
        g.bench_function(format!("value_tree_publish_{name}"), |b| {
            b.iter(|| match ser {
                Serializer::Json => serde_json::from_slice::<Value>(black_box(&bytes)).unwrap(),
                _ => rmp_serde::from_slice::<Value>(black_box(&bytes)).unwrap(),
            })
        });
        // The EVENT for a subscriber of the publisher's serializer (the
        // payload spliced in as it came), and for one of the other (the
        // payload's values, decoded once, encoded).
        let Msg::Publish { payload, .. } = decode(ser, &bytes).unwrap() else { unreachable!() };
        let other = if ser == Serializer::Json { Serializer::MsgPack } else { Serializer::Json };
        let details = Dict::new();
        for (label, to) in [("", ser), ("_converted", other)] {
            g.bench_function(format!("encode_event_framed_{name}{label}"), |b| {
                b.iter(|| {
                    let fields = [
                        Field::Int(EVENT),
                        Field::Int(black_box(77)),
                        Field::Int(123456789),
                        Field::Dict(&details),
                        Field::Payload(&payload),
                    ];
                    frame_fields(to, Framing::WebSocket, &fields)
                })
            });
        }
    }
    let props = PubProps {
        content_type: Some("application/json".into()),
        user: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    for (name, version, props) in [("v4", Version::V4, None), ("v5_props", Version::V5, Some(&props))] {
        let out = PubOut {
            qos: 1,
            retain: false,
            dup: false,
            pkid: 7,
            alias: None,
            send_topic: true,
            sub_ids: &[],
            props,
            expiry: None,
        };
        let bytes = mqtt::publish(version, "com/example/bench/topic", &[b'x'; 64], &out);
        g.bench_function(format!("decode_mqtt_publish_{name}"), |b| {
            b.iter(|| match mqtt::decode(Some(version), black_box(&bytes), 1 << 20) {
                Ok(Decoded::Packet(p, _)) => p,
                other => panic!("{other:?}"),
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
