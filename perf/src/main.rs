//! fennec-load: a WAMP v2 (WebSocket) and MQTT 3.1.1/5 (TCP) load
//! generator for any router or broker, including MQTT -> WAMP through a
//! router that speaks both.
//!
//! See perf/README.md for usage.

mod codec;
mod mqtt;
mod passive;
mod worker;
mod ws;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use codec::Ser;
use worker::{Config, Fail, Proto, Role, Scenario, Shared, Stats, Worker, MQTT_MIN_PAYLOAD, TS_LEN};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SerArg {
    Json,
    Msgpack,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScenarioArg {
    Pubsub,
    Rpc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProtoArg {
    Wamp,
    Mqtt,
}

impl ProtoArg {
    fn proto(self) -> Proto {
        match self {
            ProtoArg::Wamp => Proto::Wamp,
            ProtoArg::Mqtt => Proto::Mqtt,
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            ProtoArg::Wamp => "ws://127.0.0.1:8080/ws",
            ProtoArg::Mqtt => "mqtt://127.0.0.1:1883",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PayloadArg {
    /// The payload bytes as they are.
    Raw,
    /// A JSON array with one string, `["..."]` (a router mapping MQTT to
    /// WAMP turns it into the event's args).
    JsonArray,
}

/// WAMP v2 (WebSocket) and MQTT 3.1.1/5 (TCP) load generator: pub/sub,
/// RPC, MQTT -> WAMP, idle connections.
#[derive(Parser, Debug)]
#[command(name = "fennec-load", version)]
struct Args {
    /// Protocol of the publishers/callers, and of the subscribers unless
    /// --subscriber-protocol says otherwise.
    #[arg(long, value_enum, default_value = "wamp")]
    protocol: ProtoArg,
    /// URL for --protocol: ws://HOST:PORT/PATH (WAMP over WebSocket) or
    /// mqtt://HOST:PORT (MQTT over plain TCP). Default:
    /// ws://127.0.0.1:8080/ws or mqtt://127.0.0.1:1883.
    #[arg(long)]
    url: Option<String>,
    /// Pub/sub: protocol of the subscribers (default: --protocol).
    /// `--protocol mqtt --subscriber-protocol wamp`: MQTT publishers, WAMP
    /// subscribers, through one router that speaks both.
    #[arg(long, value_enum)]
    subscriber_protocol: Option<ProtoArg>,
    /// URL for the subscribers when --subscriber-protocol differs from
    /// --protocol (default: that protocol's default URL). With WAMP on
    /// both sides, another router than --url (a node of a cluster): the
    /// subscribers, and with --scenario rpc the callees, connect there.
    #[arg(long)]
    subscriber_url: Option<String>,
    /// MQTT: QoS of every PUBLISH and SUBSCRIBE (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// MQTT protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    mqtt_version: u8,
    /// MQTT keep-alive (s) in CONNECT; 0 disables it. Default: 60 under
    /// load (PINGREQ every 30 s), --hold + 300 in idle mode (no PINGREQ).
    #[arg(long)]
    keepalive: Option<u16>,
    /// MQTT publishers' payload format. Default: json-array when the
    /// subscribers speak WAMP, raw otherwise.
    #[arg(long, value_enum)]
    payload: Option<PayloadArg>,
    /// WAMP realm to join.
    #[arg(long, default_value = "realm1")]
    realm: String,
    /// WAMP serializer (WebSocket subprotocol wamp.2.<serializer>).
    #[arg(long, value_enum, default_value = "json")]
    serializer: SerArg,
    #[arg(long, value_enum, default_value = "pubsub")]
    scenario: ScenarioArg,
    /// Pub/sub: number of publisher sessions.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Pub/sub: number of subscriber sessions (each subscribes to all topics).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Pub/sub: number of topics PREFIX.0..T-1 (`--topic-prefix`).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Pub/sub: the topics' common prefix (WAMP form; MQTT gets it with
    /// `/`), so that loads run at once do not share topics.
    #[arg(long, default_value = "bench.topic")]
    topic_prefix: String,
    /// RPC: number of caller sessions.
    #[arg(long, default_value_t = 1)]
    callers: usize,
    /// RPC: number of callee sessions (callee i registers bench.proc.i).
    #[arg(long, default_value_t = 1)]
    callees: usize,
    /// Payload size in bytes (one ASCII string argument; min 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Total target rate in messages/s over all senders (0 = max rate,
    /// bounded by --window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Max in-flight messages per sender: unacknowledged publishes
    /// (max-rate pub/sub; MQTT QoS 1: PUBLISH without PUBACK, also in rate
    /// mode), outstanding calls (RPC), or, MQTT QoS 0 at max rate, messages
    /// ahead of what the subscribers received (see README).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Measurement duration in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before measuring (load runs, nothing is recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the last send for outstanding deliveries.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Load-tool threads; connections are spread over them.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the JSON result line to this file (appended).
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Free-form label copied into the JSON result.
    #[arg(long, default_value = "")]
    label: String,
    /// Pub/sub: extra subscriber sessions that subscribe to every topic and
    /// then never read their socket again (slow consumers). Not counted in
    /// `expected`/`delivered`.
    #[arg(long, default_value_t = 0)]
    stalled: usize,
    /// Idle mode: open N sessions (WAMP: HELLO -> WELCOME; MQTT: CONNECT ->
    /// CONNACK; then nothing), hold them for --hold seconds, close them and
    /// exit. No load is generated. Uses --protocol and --url.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Idle mode: seconds to hold the idle sessions once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Set TCP_QUICKACK after every read: the load tool ACKs at once rather
    /// than delaying ACKs (Linux). Against a broker that does not set
    /// TCP_NODELAY this avoids Nagle/delayed-ACK stalls of a full window.
    #[arg(long)]
    quickack: bool,
    /// PID of the router process (same machine): its VmRSS/VmHWM from
    /// /proc/PID/status are sampled and reported.
    #[arg(long)]
    router_pid: Option<u32>,
}

#[derive(Serialize)]
struct Report {
    label: String,
    scenario: &'static str,
    /// Publishers' (callers') and subscribers' protocol: wamp or mqtt.
    protocol: &'static str,
    subscriber_protocol: &'static str,
    /// WAMP serializer, "none" when no connection speaks WAMP.
    serializer: &'static str,
    /// MQTT only (null otherwise).
    qos: Option<u8>,
    mqtt_version: Option<u8>,
    /// MQTT publishers' payload: raw or json-array (null for WAMP).
    payload: Option<&'static str>,
    /// What bounds a sender at max rate: "ack" (WAMP PUBLISHED), "call"
    /// (RESULT), "puback" (MQTT QoS 1), "seq" (MQTT QoS 0: sequence numbers
    /// seen by subscribers); "rate" for --rate.
    window_mode: &'static str,
    quickack: bool,
    /// Smallest MQTT 5 Receive Maximum the broker announced (caps the QoS 1
    /// window); null if none.
    mqtt_receive_max: Option<u64>,
    url: String,
    subscriber_url: String,
    publishers: usize,
    subscribers: usize,
    topics: usize,
    callers: usize,
    callees: usize,
    size: usize,
    rate_target: f64,
    window: usize,
    threads: usize,
    warmup_s: f64,
    duration_s: f64,
    /// PUBLISH/CALL sent over the whole run (warm-up included).
    sent: u64,
    /// EVENT/RESULT received over the whole run (warm-up + drain included).
    delivered: u64,
    expected: u64,
    lost: i64,
    sent_measured: u64,
    delivered_measured: u64,
    sent_per_s: f64,
    delivered_per_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    errors: u64,
    bad_payload: u64,
    behind_schedule: u64,
    cpu_pct: f64,
    problems: usize,
    /// MQTT PINGREQs sent (keep-alive).
    pings: u64,
    /// Stalled subscriber sessions (--stalled).
    stalled: usize,
    /// ... of which the router had closed by the end of the run.
    stalled_closed: usize,
    /// Router VmRSS (KiB) before the load starts (after setup), sampled
    /// every 50 ms during the measurement (max), at the end of it, and the
    /// router's VmHWM at the end. Null without --router-pid.
    router_rss_start_kb: Option<u64>,
    router_rss_max_kb: Option<u64>,
    router_rss_end_kb: Option<u64>,
    router_hwm_kb: Option<u64>,
}

#[derive(Serialize)]
struct IdleReport {
    label: String,
    mode: &'static str,
    protocol: &'static str,
    serializer: &'static str,
    mqtt_version: Option<u8>,
    /// MQTT keep-alive sent in CONNECT (null for WAMP).
    keepalive_s: Option<u16>,
    url: String,
    idle: usize,
    opened: usize,
    open_s: f64,
    hold_s: f64,
    /// Sessions whose connection the router had closed by the end of the hold.
    closed_by_router: usize,
    router_rss_before_kb: Option<u64>,
    /// 1 s after the last session was opened.
    router_rss_open_kb: Option<u64>,
    /// At the end of the hold.
    router_rss_end_kb: Option<u64>,
    router_hwm_kb: Option<u64>,
    /// (router_rss_end_kb - router_rss_before_kb) * 1024 / opened.
    bytes_per_session: Option<f64>,
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn usable_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn die(code: i32, msg: &str) -> ! {
    eprintln!("fennec-load: error: {msg}");
    std::process::exit(code);
}

fn secs(x: f64, what: &str) -> Duration {
    if !(0.0..1e6).contains(&x) {
        die(64, &format!("--{what} must be a non-negative number of seconds"));
    }
    Duration::from_secs_f64(x)
}

fn main() {
    let args = Args::parse();
    let ser = match args.serializer {
        SerArg::Json => Ser::Json,
        SerArg::Msgpack => Ser::Msgpack,
    };
    let scenario = match args.scenario {
        ScenarioArg::Pubsub => Scenario::PubSub,
        ScenarioArg::Rpc => Scenario::Rpc,
    };
    let ep = endpoints(&args).unwrap_or_else(|e| die(64, &e));
    if scenario == Scenario::Rpc && (ep.pub_proto != ProtoArg::Wamp || ep.sub_proto != ProtoArg::Wamp) {
        die(64, "--scenario rpc is WAMP only");
    }
    let mqtt_pub = ep.pub_proto == ProtoArg::Mqtt;
    let payload_json = match args.payload {
        Some(_) if !mqtt_pub => die(64, "--payload applies to MQTT publishers (--protocol mqtt)"),
        Some(p) => p == PayloadArg::JsonArray,
        None => mqtt_pub && ep.sub_proto == ProtoArg::Wamp,
    };
    if mqtt_pub && args.qos > 0 && args.window > u16::MAX as usize && args.idle == 0 {
        die(64, "--qos 1: --window must be <= 65535 (MQTT packet identifiers)");
    }
    let mut size = args.size;
    let min_size = match (mqtt_pub, payload_json) {
        (false, _) => TS_LEN,
        (true, false) => MQTT_MIN_PAYLOAD,
        (true, true) => MQTT_MIN_PAYLOAD + 4,
    };
    if size < min_size && args.idle == 0 {
        eprintln!("fennec-load: note: --size raised to {min_size} (room for the timestamp and sequence number)");
        size = min_size;
    }
    let duration = secs(args.duration, "duration");
    let warmup = secs(args.warmup, "warmup");
    let drain = secs(args.drain, "drain");
    if duration.is_zero() {
        die(64, "--duration must be > 0");
    }
    if args.threads == 0 || args.window == 0 || args.rate.is_nan() || args.rate < 0.0 {
        die(64, "--threads and --window must be >= 1, --rate >= 0");
    }

    if args.idle > 0 {
        idle_mode(&args, &ep, ser);
        return;
    }
    let mem = |i: usize| args.router_pid.and_then(passive::proc_mem_kb).map(|m| if i == 0 { m.0 } else { m.1 });

    // Connection list: receivers first so they are spread like senders.
    let mut specs: Vec<(Role, usize)> = Vec::new();
    let (senders, fanout) = match scenario {
        Scenario::PubSub => {
            if args.publishers == 0 || args.subscribers == 0 || args.topics == 0 {
                die(64, "--publishers, --subscribers and --topics must be >= 1");
            }
            specs.extend((0..args.subscribers).map(|i| (Role::Subscriber, i)));
            specs.extend((0..args.publishers).map(|i| (Role::Publisher, i)));
            (args.publishers, args.subscribers as u64)
        }
        Scenario::Rpc => {
            if args.callers == 0 || args.callees == 0 {
                die(64, "--callers and --callees must be >= 1");
            }
            specs.extend((0..args.callees).map(|i| (Role::Callee, i)));
            specs.extend((0..args.callers).map(|i| (Role::Caller, i)));
            (args.callers, 1)
        }
    };
    let threads = args.threads.min(specs.len());
    let interval_ns = if args.rate > 0.0 { ((1e9 * senders as f64 / args.rate) as u64).max(1) } else { 0 };
    let version = if args.mqtt_version == 5 { mqtt::Version::V5 } else { mqtt::Version::V311 };
    let seq_window = mqtt_pub && args.qos == 0 && args.rate == 0.0 && scenario == Scenario::PubSub;
    let (publishers, subscribers) =
        if scenario == Scenario::PubSub { (args.publishers, args.subscribers) } else { (0, 0) };
    let cfg = Arc::new(Config {
        wamp_url: ep.wamp.clone(),
        far_wamp_url: ep.far.clone(),
        mqtt_url: ep.mqtt.clone(),
        pub_proto: ep.pub_proto.proto(),
        sub_proto: ep.sub_proto.proto(),
        qos: args.qos,
        mqtt_version: version,
        keepalive: args.keepalive.unwrap_or(60),
        payload_json,
        seq_window,
        publishers,
        subscribers,
        realm: args.realm.clone(),
        ser,
        topics: args.topics,
        topic_prefix: args.topic_prefix.clone(),
        callees: args.callees,
        size,
        interval_ns,
        window: args.window,
        warmup,
        duration,
        drain,
        quickack: args.quickack,
        threads,
        fanout,
    });
    let shared = Arc::new(Shared::new(publishers));

    // Stalled subscribers: subscribed before any load thread starts, so
    // they are in place before the first PUBLISH; never read afterwards.
    let mut stalled = Vec::with_capacity(args.stalled);
    if args.stalled > 0 {
        if scenario != Scenario::PubSub {
            die(64, "--stalled needs --scenario pubsub");
        }
        let url = cfg.far_wamp_url.as_ref().or(cfg.wamp_url.as_ref());
        let Some(url) = url.filter(|_| cfg.sub_proto == Proto::Wamp) else {
            die(64, "--stalled needs WAMP subscribers")
        };
        let topics: Vec<String> = (0..args.topics).map(|t| format!("{}.{t}", args.topic_prefix)).collect();
        for _ in 0..args.stalled {
            let mut s = passive::Session::open(url, ser, &args.realm)
                .unwrap_or_else(|e| die(2, &format!("stalled subscriber: {e}")));
            s.subscribe(ser, &topics).unwrap_or_else(|e| die(4, &format!("stalled subscriber: {e}")));
            s.shrink_rcvbuf();
            stalled.push(s);
        }
    }

    let mut per_thread: Vec<Vec<(Role, usize)>> = vec![Vec::new(); threads];
    for (i, s) in specs.into_iter().enumerate() {
        per_thread[i % threads].push(s);
    }
    let handles: Vec<_> = per_thread
        .into_iter()
        .enumerate()
        .map(|(tid, sp)| {
            let cfg = cfg.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("load-{tid}"))
                .spawn(move || Worker::new(cfg, shared.clone(), tid, sp).and_then(|w| w.run()))
                .expect("spawn thread")
        })
        .collect();

    // Wait for every session to be set up (WELCOME, SUBSCRIBED, REGISTERED).
    while shared.ready.load(Ordering::SeqCst) < threads && !shared.failed.load(Ordering::SeqCst) {
        if handles.iter().any(|h| h.is_finished()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut cpu_window = None;
    let rss_start = mem(0);
    let mut rss_max = rss_start;
    let mut rss_end = None;
    if shared.ready.load(Ordering::SeqCst) == threads && !shared.failed.load(Ordering::SeqCst) {
        shared.start_ns.store(shared.now_ns(), Ordering::SeqCst);
        shared.go.store(true, Ordering::SeqCst);
        let start = Instant::now();
        std::thread::sleep(warmup);
        let (c0, t0) = (cpu_time(), Instant::now());
        let end = start + warmup + duration;
        while Instant::now() < end && !shared.failed.load(Ordering::SeqCst) {
            std::thread::sleep(end.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
            rss_max = rss_max.max(mem(0));
        }
        cpu_window = Some((cpu_time() - c0, t0.elapsed()));
        rss_end = mem(0);
    }

    let mut stats = Stats::new();
    let mut fail: Option<Fail> = None;
    let hwm = mem(1);
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.merge(s),
            Ok(Err(f)) => {
                // Prefer the root cause over "another thread failed".
                let secondary = f.msg().starts_with("aborted: another thread failed");
                if fail.is_none() || (!secondary && fail.as_ref().is_some_and(|x| x.msg().starts_with("aborted:"))) {
                    fail = Some(f);
                }
            }
            Err(_) => fail = Some(Fail::Protocol("load thread panicked".into())),
        }
    }
    if let Some(f) = fail {
        let code = match f {
            Fail::Connect(_) => 2,
            Fail::Abort(_) => 3,
            Fail::Protocol(_) => 4,
        };
        die(code, f.msg());
    }

    let (cpu, wall) = cpu_window.unwrap_or_default();
    let cpu_pct = if wall.is_zero() { 0.0 } else { 100.0 * cpu.as_secs_f64() / wall.as_secs_f64() };
    let meas = duration.as_secs_f64();
    let expected = stats.sent * fanout;
    let h = &stats.hist;
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            us(h.value_at_quantile(p))
        }
    };
    let report = Report {
        label: args.label.clone(),
        scenario: match scenario {
            Scenario::PubSub => "pubsub",
            Scenario::Rpc => "rpc",
        },
        protocol: ep.pub_proto.proto().name(),
        subscriber_protocol: ep.sub_proto.proto().name(),
        serializer: if ep.any(ProtoArg::Wamp) { ser.name() } else { "none" },
        qos: ep.any(ProtoArg::Mqtt).then_some(args.qos),
        mqtt_version: ep.any(ProtoArg::Mqtt).then_some(args.mqtt_version),
        payload: mqtt_pub.then_some(if payload_json { "json-array" } else { "raw" }),
        window_mode: if args.rate > 0.0 {
            "rate"
        } else if scenario == Scenario::Rpc {
            "call"
        } else if !mqtt_pub {
            "ack"
        } else if args.qos > 0 {
            "puback"
        } else {
            "seq"
        },
        quickack: args.quickack,
        mqtt_receive_max: Some(shared.receive_max.load(Ordering::SeqCst)).filter(|&x| x != u64::MAX),
        url: ep.pub_url.clone(),
        subscriber_url: ep.sub_url.clone(),
        publishers: if scenario == Scenario::PubSub { args.publishers } else { 0 },
        subscribers: if scenario == Scenario::PubSub { args.subscribers } else { 0 },
        topics: if scenario == Scenario::PubSub { args.topics } else { 0 },
        callers: if scenario == Scenario::Rpc { args.callers } else { 0 },
        callees: if scenario == Scenario::Rpc { args.callees } else { 0 },
        size,
        rate_target: args.rate,
        window: args.window,
        threads,
        warmup_s: warmup.as_secs_f64(),
        duration_s: meas,
        sent: stats.sent,
        delivered: stats.delivered,
        expected,
        lost: expected as i64 - stats.delivered as i64,
        sent_measured: stats.sent_win,
        delivered_measured: stats.delivered_win,
        sent_per_s: (stats.sent_win as f64 / meas).round(),
        delivered_per_s: (stats.delivered_win as f64 / meas).round(),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: if h.is_empty() { 0.0 } else { us(h.max()) },
        mean_us: if h.is_empty() { 0.0 } else { (h.mean() / 100.0).round() / 10.0 },
        errors: stats.errors,
        bad_payload: stats.bad_payload,
        behind_schedule: stats.behind,
        cpu_pct: (cpu_pct * 10.0).round() / 10.0,
        problems: stats.problems.len(),
        pings: stats.pings,
        stalled: stalled.len(),
        stalled_closed: stalled
            .iter_mut()
            .filter_map(|s| s.drain_and_check_closed(Duration::from_millis(300)).then_some(()))
            .count(),
        router_rss_start_kb: rss_start,
        router_rss_max_kb: rss_max,
        router_rss_end_kb: rss_end,
        router_hwm_kb: hwm,
    };
    let line = serde_json::to_string(&report).expect("json");
    // Ignore stdout errors (e.g. piped into `head`); the file is what counts.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", table(&report));
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Some(path) = &args.json_out {
        use std::io::Write;
        let r =
            std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = r {
            die(5, &format!("cannot write {}: {e}", path.display()));
        }
    }
    if let Some(e) = shared.first_error.lock().unwrap().as_ref() {
        eprintln!("fennec-load: first router error: {e}");
    }
    let cores = usable_cores().min(threads) as f64;
    if cpu_pct > 90.0 * cores {
        eprintln!(
            "fennec-load: warning: load tool used {cpu_pct:.0}% CPU with {threads} thread(s) \
             ({cores} usable core(s)); it may be the bottleneck"
        );
    }
    if stats.no_goodbye > 0 {
        eprintln!("fennec-load: note: {} session(s) got no GOODBYE reply", stats.no_goodbye);
    }
    if !stats.problems.is_empty() {
        die(4, &format!("{} connection problem(s) during the run, first: {}", stats.problems.len(), stats.problems[0]));
    }
}

/// `--idle N`: open N sessions, hold them, report the router's memory.
fn idle_mode(args: &Args, ep: &Endpoints, ser: Ser) {
    enum Idle {
        Wamp(passive::Session),
        Mqtt(passive::MqttSession),
    }
    let hold = secs(args.hold, "hold");
    let mqtt_ka = args.keepalive.unwrap_or_else(|| (hold.as_secs() + 300).min(u16::MAX as u64) as u16);
    let version = if args.mqtt_version == 5 { mqtt::Version::V5 } else { mqtt::Version::V311 };
    let mem = || args.router_pid.and_then(passive::proc_mem_kb);
    let before = mem();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    let mut sessions = Vec::with_capacity(args.idle);
    let pid = std::process::id();
    for i in 0..args.idle {
        if Instant::now() > deadline {
            die(2, &format!("idle: only {i} of {} sessions opened within 300 s", args.idle));
        }
        let r = match (&ep.wamp, &ep.mqtt) {
            (_, Some(u)) if ep.pub_proto == ProtoArg::Mqtt => {
                passive::MqttSession::open(u, version, &format!("fennec-load-idle-{pid}-{i}"), mqtt_ka).map(Idle::Mqtt)
            }
            (Some(u), _) => passive::Session::open(u, ser, &args.realm).map(Idle::Wamp),
            _ => Err("no URL".into()),
        };
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => die(2, &format!("idle: session {i} of {}: {e}", args.idle)),
        }
        if (i + 1) % 1000 == 0 {
            eprintln!("fennec-load: idle: {} sessions open", i + 1);
        }
    }
    let open_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1).min(hold));
    let at_open = mem();
    eprintln!("fennec-load: idle: {} sessions open after {open_s:.1} s, holding {} s", sessions.len(), args.hold);
    std::thread::sleep(hold.saturating_sub(Duration::from_secs(1)));
    let end = mem();
    let closed = sessions
        .iter_mut()
        .filter_map(|s| {
            match s {
                Idle::Wamp(s) => s.drain_and_check_closed(Duration::ZERO),
                Idle::Mqtt(s) => s.drain_and_check_closed(),
            }
            .then_some(())
        })
        .count();
    for s in &mut sessions {
        if let Idle::Mqtt(s) = s {
            s.close();
        }
    }
    let per = match (before, end) {
        (Some(b), Some(e)) if !sessions.is_empty() => {
            Some(((e.0 as f64 - b.0 as f64) * 1024.0 / sessions.len() as f64).round())
        }
        _ => None,
    };
    let report = IdleReport {
        label: args.label.clone(),
        mode: "idle",
        protocol: ep.pub_proto.proto().name(),
        serializer: if ep.pub_proto == ProtoArg::Wamp { ser.name() } else { "none" },
        mqtt_version: (ep.pub_proto == ProtoArg::Mqtt).then_some(args.mqtt_version),
        keepalive_s: (ep.pub_proto == ProtoArg::Mqtt).then_some(mqtt_ka),
        url: ep.pub_url.clone(),
        idle: args.idle,
        opened: sessions.len(),
        open_s: (open_s * 100.0).round() / 100.0,
        hold_s: hold.as_secs_f64(),
        closed_by_router: closed,
        router_rss_before_kb: before.map(|m| m.0),
        router_rss_open_kb: at_open.map(|m| m.0),
        router_rss_end_kb: end.map(|m| m.0),
        router_hwm_kb: end.map(|m| m.1),
        bytes_per_session: per,
    };
    let line = serde_json::to_string(&report).expect("json");
    println!("{line}");
    if let Some(path) = &args.json_out {
        use std::io::Write;
        let r =
            std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = r {
            die(5, &format!("cannot write {}: {e}", path.display()));
        }
    }
}

/// Where the publishers (callers, idle sessions) and subscribers connect.
struct Endpoints {
    pub_proto: ProtoArg,
    sub_proto: ProtoArg,
    pub_url: String,
    sub_url: String,
    wamp: Option<ws::WsUrl>,
    mqtt: Option<mqtt::MqttUrl>,
    /// WAMP subscribers and callees on another router (`--subscriber-url`).
    far: Option<ws::WsUrl>,
}

impl Endpoints {
    fn any(&self, p: ProtoArg) -> bool {
        self.pub_proto == p || self.sub_proto == p
    }
}

fn endpoints(args: &Args) -> Result<Endpoints, String> {
    let pub_proto = args.protocol;
    let sub_proto = args.subscriber_protocol.unwrap_or(pub_proto);
    let pub_url = args.url.clone().unwrap_or_else(|| pub_proto.default_url().to_string());
    let mut far = None;
    let sub_url = if sub_proto == pub_proto {
        match &args.subscriber_url {
            Some(u) if *u != pub_url && pub_proto == ProtoArg::Wamp => {
                far = Some(ws::parse_url(u)?);
                u.clone()
            }
            Some(u) if *u != pub_url => {
                return Err("--subscriber-url differs from --url with MQTT on both sides (WAMP only)".into())
            }
            _ => pub_url.clone(),
        }
    } else {
        args.subscriber_url.clone().unwrap_or_else(|| sub_proto.default_url().to_string())
    };
    let mut ep = Endpoints { pub_proto, sub_proto, pub_url, sub_url, wamp: None, mqtt: None, far: None };
    for (p, u) in [(pub_proto, &ep.pub_url), (sub_proto, &ep.sub_url)] {
        match p {
            ProtoArg::Wamp => ep.wamp = Some(ws::parse_url(u)?),
            ProtoArg::Mqtt => ep.mqtt = Some(mqtt::parse_url(u)?),
        }
    }
    if far.is_some() {
        ep.wamp = Some(ws::parse_url(&ep.pub_url)?);
        ep.far = far;
    }
    Ok(ep)
}

fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let shape = if r.scenario == "pubsub" {
        let proto = |p: &str| match (p, r.qos, r.mqtt_version) {
            ("mqtt", Some(q), Some(v)) => format!("mqtt{} qos{q}", if v == 5 { "5" } else { "3.1.1" }),
            (p, _, _) => p.to_string(),
        };
        format!(
            "{} {} pub -> {} {} sub, {} topic(s)",
            r.publishers,
            proto(r.protocol),
            r.subscribers,
            proto(r.subscriber_protocol),
            r.topics
        )
    } else {
        format!("{} caller -> {} callee", r.callers, r.callees)
    };
    let rate =
        if r.rate_target > 0.0 { format!("{} msg/s", r.rate_target) } else { format!("max (window {})", r.window) };
    let _ = writeln!(
        s,
        "scenario   {} ({shape}), {} B, {}, rate {rate}, {} thread(s), {} s (+{} s warm-up)",
        r.scenario, r.size, r.serializer, r.threads, r.duration_s, r.warmup_s
    );
    let _ = writeln!(
        s,
        "{:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "sent", "delivered", "lost", "deliv/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us", "errors", "cpu %"
    );
    let _ = writeln!(
        s,
        "{:>10} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}",
        r.sent,
        r.delivered,
        r.lost,
        r.delivered_per_s,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.errors,
        r.cpu_pct
    );
    s
}
