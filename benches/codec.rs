//! Codec micro-benchmarks: decoding a PUBLISH and encoding + framing an
//! EVENT, in JSON and MessagePack, with a 64-byte payload; decoding an MQTT
//! PUBLISH (3.1.1, and 5 with a user property and a content type).
//! Run: cargo bench --bench codec

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fennec::mqtt::codec::{self as mqtt, Decoded, PubOut, PubProps, Version};
use fennec::value::{Dict, Payload, Value};
use fennec::wamp::message::{decode, encode, Field, Msg, Serializer, EVENT};
use fennec::wamp::session::{frame_fields, Framing};

fn publish(ser: Serializer) -> Vec<u8> {
    let msg = Msg::Publish {
        request: 12345,
        options: vec![("acknowledge".into(), Value::Bool(true))],
        topic: "com.example.bench.topic".into(),
        payload: Payload { args: Some(vec![Value::Str("x".repeat(64))]), kwargs: None },
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
        let payload = Payload { args: Some(vec![Value::Str("x".repeat(64))]), kwargs: None };
        let details = Dict::new();
        g.bench_function(format!("encode_event_framed_{name}"), |b| {
            b.iter(|| {
                let fields = [
                    Field::Int(EVENT),
                    Field::Int(black_box(77)),
                    Field::Int(123456789),
                    Field::Dict(&details),
                    Field::Payload(&payload),
                ];
                frame_fields(ser, Framing::WebSocket, &fields)
            })
        });
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
