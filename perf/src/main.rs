//! fennec-load: a WAMP v2 load generator for any WebSocket WAMP router.
//!
//! See perf/README.md for usage.

mod codec;
mod passive;
mod worker;
mod ws;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use codec::Ser;
use worker::{Config, Fail, Role, Scenario, Shared, Stats, Worker, TS_LEN};

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

/// WAMP v2 load generator (pub/sub and RPC) over WebSocket.
#[derive(Parser, Debug)]
#[command(name = "fennec-load", version)]
struct Args {
    /// Router WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
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
    /// Pub/sub: number of topics bench.topic.0..T-1.
    #[arg(long, default_value_t = 1)]
    topics: usize,
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
    /// (max-rate pub/sub) or outstanding calls (RPC).
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
    /// Idle mode: open N sessions (HELLO -> WELCOME, then nothing), hold
    /// them for --hold seconds, close them and exit. No load is generated.
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Idle mode: seconds to hold the idle sessions once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// PID of the router process (same machine): its VmRSS/VmHWM from
    /// /proc/PID/status are sampled and reported.
    #[arg(long)]
    router_pid: Option<u32>,
}

#[derive(Serialize)]
struct Report {
    label: String,
    scenario: &'static str,
    serializer: &'static str,
    url: String,
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
    serializer: &'static str,
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
    let url = ws::parse_url(&args.url).unwrap_or_else(|e| die(64, &e));
    let ser = match args.serializer {
        SerArg::Json => Ser::Json,
        SerArg::Msgpack => Ser::Msgpack,
    };
    let scenario = match args.scenario {
        ScenarioArg::Pubsub => Scenario::PubSub,
        ScenarioArg::Rpc => Scenario::Rpc,
    };
    let mut size = args.size;
    if size < TS_LEN {
        eprintln!("fennec-load: note: --size raised to {TS_LEN} (room for the timestamp)");
        size = TS_LEN;
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
        idle_mode(&args, &url, ser);
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
    let cfg = Arc::new(Config {
        url,
        realm: args.realm.clone(),
        ser,
        topics: args.topics,
        callees: args.callees,
        size,
        interval_ns,
        window: args.window,
        warmup,
        duration,
        drain,
        threads,
        fanout,
    });
    let shared = Arc::new(Shared::new());

    // Stalled subscribers: subscribed before any load thread starts, so
    // they are in place before the first PUBLISH; never read afterwards.
    let mut stalled = Vec::with_capacity(args.stalled);
    if args.stalled > 0 {
        if scenario != Scenario::PubSub {
            die(64, "--stalled needs --scenario pubsub");
        }
        let topics: Vec<String> = (0..args.topics).map(|t| format!("bench.topic.{t}")).collect();
        for _ in 0..args.stalled {
            let mut s = passive::Session::open(&cfg.url, ser, &args.realm)
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
        serializer: ser.name(),
        url: args.url.clone(),
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
        stalled: stalled.len(),
        stalled_closed: stalled.iter_mut().filter_map(|s| s.drain_and_check_closed().then_some(())).count(),
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
fn idle_mode(args: &Args, url: &ws::WsUrl, ser: Ser) {
    let hold = secs(args.hold, "hold");
    let mem = || args.router_pid.and_then(passive::proc_mem_kb);
    let before = mem();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    let mut sessions = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        if Instant::now() > deadline {
            die(2, &format!("idle: only {i} of {} sessions opened within 300 s", args.idle));
        }
        match passive::Session::open(url, ser, &args.realm) {
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
    let closed = sessions.iter_mut().filter_map(|s| s.drain_and_check_closed().then_some(())).count();
    let per = match (before, end) {
        (Some(b), Some(e)) if !sessions.is_empty() => {
            Some(((e.0 as f64 - b.0 as f64) * 1024.0 / sessions.len() as f64).round())
        }
        _ => None,
    };
    let report = IdleReport {
        label: args.label.clone(),
        mode: "idle",
        serializer: ser.name(),
        url: args.url.clone(),
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

fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let shape = if r.scenario == "pubsub" {
        format!("{} pub -> {} sub, {} topic(s)", r.publishers, r.subscribers, r.topics)
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
