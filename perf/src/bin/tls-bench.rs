//! The cost of TLS: WAMP 1 -> 1 pub/sub (JSON, one topic) over wss://
//! against ws://, with the same blocking client for both, so the
//! difference is the router's TLS work. The publisher sends batches of
//! `--batch` acknowledged PUBLISHes and waits for their PUBLISHED (so the
//! subscriber's queue never overflows); the subscriber counts EVENTs. With
//! `--router-pid`, the router's CPU per delivered event (from /proc).
//!
//! tls-bench --url wss://localhost:8443/ws --ca ca.pem --duration 8 --router-pid PID
//! tls-bench --url ws://127.0.0.1:8080/ws --duration 8 --router-pid PID

use clap::Parser;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

#[derive(Parser)]
struct Args {
    /// ws://HOST:PORT/ws or wss://HOST:PORT/ws
    #[arg(long)]
    url: String,
    /// PEM CA the server certificate is checked against (wss).
    #[arg(long)]
    ca: Option<String>,
    #[arg(long, default_value_t = 64)]
    size: usize,
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    duration: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long)]
    router_pid: Option<u32>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn connect(args: &Args) -> WebSocket<Box<dyn Stream>> {
    let tls = args.url.starts_with("wss://");
    let rest = args.url.split("://").nth(1).expect("a URL");
    let hostport = rest.split('/').next().unwrap();
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).to_owned();
    let tcp = TcpStream::connect(hostport).expect("connect");
    tcp.set_nodelay(true).unwrap();
    let stream: Box<dyn Stream> = if tls {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(args.ca.as_ref().expect("--ca for wss")).unwrap();
        for c in rustls_pemfile::certs(&mut &pem[..]) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from(host).unwrap()).unwrap();
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    let mut req = args.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "wamp.2.json".parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, stream).expect("WebSocket handshake");
    ws.send(Message::text(r#"[1,"realm1",{"roles":{"publisher":{},"subscriber":{}}}]"#)).unwrap();
    expect(&mut ws, "[2,");
    ws
}

fn expect(ws: &mut WebSocket<Box<dyn Stream>>, prefix: &str) {
    match ws.read().expect("a message") {
        Message::Text(t) if t.starts_with(prefix) => {}
        other => panic!("expected {prefix}..., got {other:?}"),
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    let args = Args::parse();
    let mut sub = connect(&args);
    sub.send(Message::text(r#"[32,1,{},"bench.tls"]"#)).unwrap();
    expect(&mut sub, "[33,");
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Message::Text(_)) = sub.read() {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut publ = connect(&args);
    let body = "x".repeat(args.size);
    let frame = format!(r#"[16,1,{{"acknowledge":true}},"bench.tls",["{body}"]]"#);
    let start = Instant::now();
    let (mut t0, mut n0, mut c0) = (None, 0, 0);
    let end = start + Duration::from_secs(args.warmup + args.duration);
    while Instant::now() < end {
        if t0.is_none() && start.elapsed() >= Duration::from_secs(args.warmup) {
            t0 = Some(Instant::now());
            n0 = got.load(Ordering::Relaxed);
            c0 = args.router_pid.map_or(0, cpu_ticks);
        }
        for _ in 0..args.batch {
            publ.write(Message::text(frame.clone())).unwrap();
        }
        publ.flush().unwrap();
        for _ in 0..args.batch {
            expect(&mut publ, "[17,");
        }
    }
    let secs = t0.expect("measured").elapsed().as_secs_f64();
    let delivered = got.load(Ordering::Relaxed) - n0;
    let rate = delivered as f64 / secs;
    let cpu = args.router_pid.map(|p| (cpu_ticks(p) - c0) as f64 / 100.0);
    stop.store(true, Ordering::Relaxed);
    print!("{{\"url\":\"{}\",\"delivered_per_s\":{rate:.0}", args.url);
    if let Some(cpu) = cpu {
        print!(",\"router_cpu_s\":{cpu:.2},\"router_us_per_delivery\":{:.3}", cpu / delivered as f64 * 1e6);
    }
    println!("}}");
    // The subscriber's read blocks: end without waiting for it.
    drop(counter);
    std::process::exit(0);
}
