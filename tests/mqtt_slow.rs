//! A slow MQTT 5 subscriber is closed after the grace period with
//! DISCONNECT 0x97 (quota exceeded) as its last packet, and a publisher
//! driven by rumqttc is not held back.

mod common;

use common::{mqtt_wait, router};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut p = vec![byte1, body.len() as u8];
    p.extend_from_slice(body);
    p
}

/// Splits a byte stream into (first byte, body) packets; a partial tail is left.
fn packets(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let (mut len, mut i, mut shift) = (0usize, 1, 0);
        loop {
            let Some(&x) = b.get(i) else { return out };
            len |= usize::from(x & 0x7f) << shift;
            i += 1;
            shift += 7;
            if x & 0x80 == 0 {
                break;
            }
        }
        if b.len() < i + len {
            return out;
        }
        out.push((b[0], b[i..i + len].to_vec()));
        b = &b[i + len..];
    }
    out
}

#[test]
fn slow_v5_subscriber_gets_quota_exceeded_then_close() {
    let r = router(&["--cores", "2", "--outbound-queue-bytes", "4096", "--slow-grace-ms", "200"]);
    let addr = r.mqtt_addr.unwrap();
    // A subscriber with a tiny receive buffer that stops reading.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // CONNECT v5, clean start, client "slow", keep-alive 0; SUBSCRIBE s/# QoS 0.
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0, 4];
    connect.extend_from_slice(b"slow");
    slow.write_all(&packet(0x10, &connect)).unwrap();
    slow.write_all(&packet(0x82, &[0, 1, 0, 0, 3, b's', b'/', b'#', 0])).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while packets(&got).len() < 2 {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "closed before SUBACK");
        got.extend_from_slice(&buf[..n]);
    }
    let first: Vec<u8> = packets(&got).iter().map(|p| p.0).collect();
    assert_eq!(first, vec![0x20, 0x90], "CONNACK then SUBACK");
    got.clear();

    let mut opts = MqttOptions::new("flooder", addr.ip().to_string(), addr.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (publ, mut conn) = Client::new(opts, 64);
    mqtt_wait(&mut conn, "CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(()));
    // Publish until the router gives up on the slow subscriber (well past
    // the grace period), then read what it left in the socket.
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        publ.publish("s/x", QoS::AtMostOnce, false, vec![b'p'; 50_000]).unwrap();
        sent += 1;
        while let Ok(Ok(_)) = conn.recv_timeout(Duration::from_millis(1)) {}
    }
    assert!(sent > 100, "the publisher was held back: {sent} publishes in 1.5 s");
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no end of the slow subscriber's stream within 5 s: {e}"),
        }
    }
    let all = packets(&got);
    let last = all.last().expect("some packets");
    assert_eq!(last.0, 0xE0, "the last packet is DISCONNECT");
    assert_eq!(last.1[0], 0x97, "reason: quota exceeded");
    assert!(all[..all.len() - 1].iter().all(|p| p.0 == 0x30), "PUBLISHes before it");
    drop(publ);
    r.shutdown();
}
