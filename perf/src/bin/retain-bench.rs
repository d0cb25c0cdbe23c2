//! Acknowledged durable writes: MQTT 3.1.1 QoS 1 PUBLISHes with the
//! retain flag, each publisher keeping `--window` unacknowledged, the
//! latency of each measured from its PUBLISH to its PUBACK. Under Fennec's
//! `--durability sync` a PUBACK means the value is on disk, so this is the
//! rate and latency of durable writes. `--keys distinct` writes a new key
//! each time (per publisher, cycling over `--key-space`), `--keys hot` one
//! key for all. `--rate` (writes/s per publisher) paces the sends, for the
//! latency at a given load rather than at saturation.
//!
//! The payload is `--size` bytes of `x` by default, which is not JSON.
//! `--json` (or `--json string`) sends a JSON string of the same size
//! (`"xx..x"`), `--json number` a JSON number (`11..1`), for routers that
//! parse retained payloads as JSON (fox-wamp 0.7.28 does not store a non-JSON one).
//!
//! retain-bench --addr 127.0.0.1:1883 --publishers 10 --keys distinct --duration 5

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// distinct | hot
    #[arg(long, default_value = "distinct")]
    keys: String,
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Writes per second per publisher (0: as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Send a JSON payload of `--size` bytes: a string (the default when
    /// given without a value) or a number. Without it, `--size` bytes of `x`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "string")]
    json: Option<Json>,
}

#[derive(ValueEnum, Clone, Copy)]
enum Json {
    String,
    Number,
}

fn payload(size: usize, json: Option<Json>) -> Vec<u8> {
    match json {
        None => vec![b'x'; size],
        Some(Json::String) => {
            assert!(size >= 2, "--json string needs --size of at least 2");
            let mut p = vec![b'x'; size];
            p[0] = b'"';
            p[size - 1] = b'"';
            p
        }
        Some(Json::Number) => {
            assert!(size >= 1, "--json number needs --size of at least 1");
            vec![b'1'; size]
        }
    }
}

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn publisher(a: Args, i: usize) -> (u64, Histogram<u64>) {
    let mut s = TcpStream::connect(&a.addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    string(&mut body, format!("retain-bench-{i}-{}", std::process::id()).as_bytes());
    s.write_all(&packet(0x10, &body)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack[3], 0, "CONNACK refused");
    let payload = payload(a.size, a.json);
    let mut sent_at = vec![None::<Instant>; 65536];
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut next_pkid, mut inflight, mut acked, mut seq) = (1u16, 0usize, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(a.duration);
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut out = Vec::with_capacity(64 * 1024);
    while Instant::now() < end || inflight > 0 {
        let sending = Instant::now() < end;
        while sending && inflight < a.window {
            if a.rate > 0 && seq >= (start.elapsed().as_secs_f64() * a.rate as f64) as u64 {
                break;
            }
            let topic = if a.keys == "hot" { "rb/hot".to_owned() } else { format!("rb/{i}/{}", seq % a.key_space) };
            let mut b = Vec::with_capacity(topic.len() + a.size + 8);
            string(&mut b, topic.as_bytes());
            b.extend_from_slice(&next_pkid.to_be_bytes());
            b.extend_from_slice(&payload);
            out.extend_from_slice(&packet(0x33, &b));
            sent_at[next_pkid as usize] = Some(Instant::now());
            next_pkid = if next_pkid == u16::MAX { 1 } else { next_pkid + 1 };
            inflight += 1;
            seq += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).unwrap();
            out.clear();
        }
        if inflight == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        s.set_read_timeout(Some(Duration::from_millis(if a.rate > 0 { 1 } else { 2000 }))).unwrap();
        match s.read(&mut buf[have..]) {
            Ok(0) => panic!("the broker closed the connection"),
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
        let mut at = 0;
        while have - at >= 4 {
            assert_eq!(buf[at], 0x40, "expected PUBACK, got {:#x}", buf[at]);
            let pkid = u16::from_be_bytes([buf[at + 2], buf[at + 3]]);
            if let Some(t) = sent_at[pkid as usize].take() {
                let _ = hist.record(t.elapsed().as_micros() as u64);
                inflight -= 1;
                acked += 1;
            }
            at += 4;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    (acked, hist)
}

fn main() {
    let a = Args::parse();
    let t0 = Instant::now();
    let threads: Vec<_> = (0..a.publishers)
        .map(|i| {
            let a = a.clone();
            std::thread::spawn(move || publisher(a, i))
        })
        .collect();
    let mut total = 0;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for t in threads {
        let (n, h) = t.join().unwrap();
        total += n;
        hist.add(h).unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"publishers\":{},\"keys\":\"{}\",\"rate\":{},\"acked\":{},\"acked_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        a.publishers,
        a.keys,
        a.rate,
        total,
        total as f64 / secs,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
}
