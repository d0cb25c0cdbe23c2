//! One load-tool thread: owns a set of client connections (WAMP over
//! WebSocket and/or MQTT over TCP) and drives them with a single
//! non-blocking `mio` event loop.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::codec::{json_u64, mp_arr, mp_map, mp_str_hdr, mp_u64, Ser, V};
use crate::mqtt;
use crate::ws;

const READ_CHUNK: usize = 256 * 1024;
/// Max reads per connection per loop turn before moving on (fairness).
const READS_PER_TURN: usize = 8;
/// Stop generating new messages on a connection whose unsent output
/// exceeds this (router not reading fast enough).
const MAX_PENDING_OUT: usize = 4 * 1024 * 1024;
/// Max messages generated per sender per loop turn in rate mode.
const RATE_BURST: u32 = 2000;
/// Length of the hex timestamp at the start of each payload.
pub const TS_LEN: usize = 16;
/// MQTT publishers follow the timestamp with their index (4 hex digits) and
/// the message's sequence number (12 hex digits), see `Config::seq_window`.
const PUB_LEN: usize = 4;
const SEQ_LEN: usize = 12;
/// Minimum payload of an MQTT publisher (timestamp, index, sequence).
pub const MQTT_MIN_PAYLOAD: usize = TS_LEN + PUB_LEN + SEQ_LEN;
pub const HIST_MAX_NS: u64 = 100_000_000_000;
/// Bound on connection setup and on HELLO/SUBSCRIBE/REGISTER completion.
const SETUP_TIMEOUT_S: u64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    PubSub,
    Rpc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
    Caller,
    Callee,
}

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Wamp,
    Mqtt,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Wamp => "wamp",
            Proto::Mqtt => "mqtt",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Router URL for WAMP connections (None: no WAMP connection).
    pub wamp_url: Option<ws::WsUrl>,
    /// WAMP subscribers and callees on another router (a cluster's node).
    pub far_wamp_url: Option<ws::WsUrl>,
    /// Broker address for MQTT connections (None: no MQTT connection).
    pub mqtt_url: Option<mqtt::MqttUrl>,
    /// Protocol of the publishers and of the subscribers.
    pub pub_proto: Proto,
    pub sub_proto: Proto,
    /// MQTT: QoS of PUBLISH and SUBSCRIBE (0 or 1).
    pub qos: u8,
    pub mqtt_version: mqtt::Version,
    /// MQTT keep-alive sent in CONNECT (seconds); PINGREQ every half of it
    /// (or of the server's Server Keep Alive, MQTT 5).
    pub keepalive: u16,
    /// MQTT publishers send the payload as a one-string JSON array
    /// (`["<ts>..."]`, for MQTT -> WAMP) instead of raw bytes.
    pub payload_json: bool,
    /// QoS 0 at max rate: no acknowledgement exists, so a publisher's
    /// window is counted from sequence numbers in the payload: it may be at
    /// most `window` messages ahead of the mean (over subscribers) of the
    /// highest sequence number each subscriber has received from it.
    pub seq_window: bool,
    pub publishers: usize,
    pub subscribers: usize,
    pub realm: String,
    pub ser: Ser,
    pub topics: usize,
    /// The topics' common prefix (WAMP form).
    pub topic_prefix: String,
    pub callees: usize,
    pub size: usize,
    /// Per-sender interval between messages in ns (0 = max rate).
    pub interval_ns: u64,
    pub window: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    /// Set TCP_QUICKACK on every socket after each read (Linux): ACK at
    /// once instead of delaying, see README.
    pub quickack: bool,
    pub threads: usize,
    /// Deliveries expected per message sent (subscribers for pub/sub, 1 for RPC).
    pub fanout: u64,
}

/// Failure kinds, mapped to distinct exit codes by `main`.
#[derive(Debug, Clone)]
pub enum Fail {
    Connect(String),
    Abort(String),
    Protocol(String),
}

impl Fail {
    pub fn msg(&self) -> &str {
        match self {
            Fail::Connect(m) | Fail::Abort(m) | Fail::Protocol(m) => m,
        }
    }
}

/// State shared by all threads.
pub struct Shared {
    pub epoch: Instant,
    pub ready: AtomicUsize,
    pub failed: AtomicBool,
    pub go: AtomicBool,
    /// Load start, ns since `epoch` (valid once `go` is set).
    pub start_ns: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub stopped: AtomicUsize,
    pub first_error: Mutex<Option<String>>,
    /// Per publisher (QoS 0 sequence window): sum over all subscribers of
    /// the highest sequence number each has received from it.
    pub pub_seen: Vec<AtomicU64>,
    /// Smallest MQTT 5 Receive Maximum any CONNACK announced (u64::MAX if
    /// none); caps the QoS 1 window.
    pub receive_max: AtomicU64,
}

impl Shared {
    pub fn new(publishers: usize) -> Self {
        Shared {
            epoch: Instant::now(),
            ready: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            go: AtomicBool::new(false),
            start_ns: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            stopped: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            pub_seen: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            receive_max: AtomicU64::new(u64::MAX),
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

pub struct Stats {
    /// Messages sent (PUBLISH or CALL) over the whole run.
    pub sent: u64,
    /// Messages sent during the measurement window.
    pub sent_win: u64,
    /// EVENTs (pub/sub) or RESULTs (RPC) received over the whole run.
    pub delivered: u64,
    /// ... of which received during the measurement window.
    pub delivered_win: u64,
    /// ERROR replies to PUBLISH/CALL.
    pub errors: u64,
    pub acks: u64,
    pub invocations: u64,
    pub bad_payload: u64,
    /// Rate-mode sends dropped because the sender was > 1 s behind schedule
    /// or the RPC window was full.
    pub behind: u64,
    /// Connections that did not get a GOODBYE reply at the end.
    pub no_goodbye: u64,
    /// MQTT PINGREQs sent (keep-alive).
    pub pings: u64,
    /// Non-fatal problems seen during the run (e.g. connection closed).
    pub problems: Vec<String>,
    pub hist: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            sent: 0,
            sent_win: 0,
            delivered: 0,
            delivered_win: 0,
            errors: 0,
            acks: 0,
            invocations: 0,
            bad_payload: 0,
            behind: 0,
            no_goodbye: 0,
            pings: 0,
            problems: Vec::new(),
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("histogram"),
        }
    }

    pub fn merge(&mut self, o: Stats) {
        self.sent += o.sent;
        self.sent_win += o.sent_win;
        self.delivered += o.delivered;
        self.delivered_win += o.delivered_win;
        self.errors += o.errors;
        self.acks += o.acks;
        self.invocations += o.invocations;
        self.bad_payload += o.bad_payload;
        self.behind += o.behind;
        self.no_goodbye += o.no_goodbye;
        self.pings += o.pings;
        self.problems.extend(o.problems);
        self.hist.add(&o.hist).expect("histogram merge");
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// HELLO (MQTT: CONNECT) sent, waiting for WELCOME (CONNACK).
    Hello,
    /// SUBSCRIBE/REGISTER sent, waiting for acks.
    Setup,
    Ready,
    GoodbyeSent,
    Done,
}

struct Conn {
    role: Role,
    proto: Proto,
    /// Index within its role (publisher #3, callee #0, ...).
    idx: usize,
    stream: TcpStream,
    rbuf: Vec<u8>,
    rstart: usize,
    rlen: usize,
    frag: Vec<u8>,
    frag_op: u8,
    wbuf: Vec<u8>,
    wpos: usize,
    writable: bool,
    readable: bool,
    eof: bool,
    st: St,
    pending: usize,
    next_req: u64,
    inflight: usize,
    rr: usize,
    next_due: u64,
    rng: u64,
    /// MQTT publisher: sequence number of the last message sent.
    seq: u64,
    /// MQTT publisher: next packet identifier (QoS 1).
    pkid: u16,
    /// Subscriber (sequence window): highest sequence number received from
    /// each publisher.
    last_seq: Vec<u64>,
    /// MQTT: next PINGREQ due (ns since epoch) and the interval.
    next_ping: u64,
    ping_ns: u64,
}

impl Conn {
    fn mask(&mut self) -> [u8; 4] {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }

    fn send_msg(&mut self, ser: Ser, msg: &[u8]) {
        let op = match ser {
            Ser::Json => ws::OP_TEXT,
            Ser::Msgpack => ws::OP_BIN,
        };
        let m = self.mask();
        ws::write_frame(&mut self.wbuf, op, msg, m);
    }

    fn send_v(&mut self, ser: Ser, v: &V<'_>, scratch: &mut Vec<u8>) {
        scratch.clear();
        ser.encode(v, scratch);
        self.send_msg(ser, scratch);
    }

    fn req(&mut self) -> u64 {
        self.next_req += 1;
        self.next_req
    }

    fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    fn next_pkid(&mut self) -> u16 {
        self.pkid = if self.pkid == u16::MAX { 1 } else { self.pkid + 1 };
        self.pkid
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    Setup,
    Warmup,
    Measure,
    Drain,
    Goodbye,
}

pub struct Worker {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    tid: usize,
    conns: Vec<Conn>,
    poll: Poll,
    stats: Stats,
    phase: Phase,
    scratch: Vec<u8>,
    payload: Vec<u8>,
    topic_names: Vec<String>,
    /// MQTT topic names bench/topic/0..T-1 (Fennec maps them to WAMP
    /// bench.topic.0..T-1).
    mqtt_topics: Vec<String>,
    proc_names: Vec<String>,
    /// Offset of the timestamp in `payload` (2 for a JSON array payload).
    payload_off: usize,
    /// Sequence window: per publisher, increase of this thread's
    /// subscribers' highest sequence numbers not yet added to
    /// `shared.pub_seen`.
    seen_delta: Vec<u64>,
    seen_dirty: bool,
    next_ping_check: u64,
    warm_end: u64,
    meas_end: u64,
    /// Delivered count already added to `shared.delivered`.
    published_delivered: u64,
    reported_error: bool,
}

/// Re-arms TCP_QUICKACK (the kernel clears it again on its own).
fn quickack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads sizeof(c_int) bytes from &one, a valid c_int.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Writes the low `out.len()` hex digits of `v` into `out`.
fn put_hex(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        let shift = (n - 1 - i) * 4;
        *b = if shift >= 64 { b'0' } else { HEX[((v >> shift) & 0xf) as usize] };
    }
}

fn get_hex(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | d as u64;
    }
    Some(v)
}

fn hex_ts(ns: u64, out: &mut [u8]) {
    put_hex(ns, &mut out[..TS_LEN]);
}

fn parse_ts(b: &[u8]) -> Option<u64> {
    get_hex(b.get(..TS_LEN)?)
}

/// Writes an MQTT publisher's payload header: timestamp, publisher index,
/// sequence number (hex).
fn fill_payload(out: &mut [u8], ts: u64, publisher: usize, seq: u64) {
    hex_ts(ts, out);
    put_hex(publisher as u64, &mut out[TS_LEN..TS_LEN + PUB_LEN]);
    put_hex(seq, &mut out[TS_LEN + PUB_LEN..MQTT_MIN_PAYLOAD]);
}

/// The start of the string in a received MQTT payload that is JSON: a
/// one-string array `["..."]` (our --payload json-array) or a JSON string
/// `"..."` (what a WAMP publication with one string argument becomes in
/// Fennec's WAMP -> MQTT mapping). Raw payloads are returned unchanged.
fn strip_json(p: &[u8]) -> &[u8] {
    if let Some(r) = p.strip_prefix(b"[\"") {
        r
    } else if let Some(r) = p.strip_prefix(b"\"") {
        r
    } else {
        p
    }
}

/// Publisher index and sequence number after the timestamp (MQTT
/// publishers' payloads).
fn parse_pub_seq(b: &[u8]) -> Option<(usize, u64)> {
    let p = get_hex(b.get(TS_LEN..TS_LEN + PUB_LEN)?)?;
    let s = get_hex(b.get(TS_LEN + PUB_LEN..MQTT_MIN_PAYLOAD)?)?;
    Some((p as usize, s))
}

fn err_text(a: &[V<'_>], from: usize) -> String {
    a.iter().skip(from).map(|v| v.show()).collect::<Vec<_>>().join(" ")
}

impl Worker {
    pub fn new(cfg: Arc<Config>, shared: Arc<Shared>, tid: usize, specs: Vec<(Role, usize)>) -> Result<Self, Fail> {
        let poll = Poll::new().map_err(|e| Fail::Protocol(format!("epoll: {e}")))?;
        let mut conns = Vec::with_capacity(specs.len());
        for (i, (role, idx)) in specs.into_iter().enumerate() {
            if shared.failed.load(Ordering::Relaxed) {
                return Err(Fail::Protocol("aborted: another thread failed".into()));
            }
            if shared.epoch.elapsed() > Duration::from_secs(SETUP_TIMEOUT_S) {
                return Err(Fail::Connect(format!(
                    "timeout: could not open all connections within {SETUP_TIMEOUT_S} s"
                )));
            }
            let proto = match role {
                Role::Publisher => cfg.pub_proto,
                Role::Subscriber => cfg.sub_proto,
                Role::Caller | Role::Callee => Proto::Wamp,
            };
            let (std_stream, rest) = match proto {
                Proto::Wamp => {
                    let far = matches!(role, Role::Subscriber | Role::Callee).then_some(cfg.far_wamp_url.as_ref());
                    let url = far.flatten().or(cfg.wamp_url.as_ref());
                    let url = url.ok_or_else(|| Fail::Connect("no WAMP URL".into()))?;
                    ws::connect(url, cfg.ser.subprotocol()).map_err(Fail::Connect)?
                }
                Proto::Mqtt => {
                    let url = cfg.mqtt_url.as_ref().ok_or_else(|| Fail::Connect("no MQTT URL".into()))?;
                    let s = std::net::TcpStream::connect_timeout(&url.addr, Duration::from_secs(5))
                        .map_err(|e| Fail::Connect(format!("cannot connect to {}: {e}", url.addr)))?;
                    s.set_nodelay(true).ok();
                    (s, Vec::new())
                }
            };
            std_stream.set_nonblocking(true).map_err(|e| Fail::Connect(format!("set_nonblocking: {e}")))?;
            let mut stream = TcpStream::from_std(std_stream);
            poll.registry()
                .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| Fail::Protocol(format!("epoll register: {e}")))?;
            let mut rbuf = vec![0u8; READ_CHUNK];
            let rlen = rest.len();
            if rlen > rbuf.len() {
                rbuf.resize(rlen, 0);
            }
            rbuf[..rlen].copy_from_slice(&rest);
            conns.push(Conn {
                role,
                proto,
                idx,
                stream,
                rbuf,
                rstart: 0,
                rlen,
                frag: Vec::new(),
                frag_op: 0,
                wbuf: Vec::with_capacity(64 * 1024),
                wpos: 0,
                writable: true,
                readable: true,
                eof: false,
                st: St::Hello,
                pending: 0,
                next_req: 0,
                inflight: 0,
                rr: idx,
                next_due: 0,
                rng: 0x9E37_79B9_7F4A_7C15 ^ ((tid as u64) << 32) ^ (i as u64 + 1),
                seq: 0,
                pkid: 0,
                last_seq: if cfg.seq_window && role == Role::Subscriber { vec![0; cfg.publishers] } else { Vec::new() },
                next_ping: u64::MAX,
                ping_ns: 0,
            });
        }
        let payload_off = if cfg.pub_proto == Proto::Mqtt && cfg.payload_json { 2 } else { 0 };
        let mut payload = vec![b'x'; cfg.size];
        if payload_off > 0 {
            payload[..2].copy_from_slice(b"[\"");
            let n = payload.len();
            payload[n - 2..].copy_from_slice(b"\"]");
        }
        payload[payload_off..payload_off + TS_LEN].fill(b'0');
        Ok(Worker {
            topic_names: (0..cfg.topics).map(|t| format!("{}.{t}", cfg.topic_prefix)).collect(),
            mqtt_topics: (0..cfg.topics).map(|t| format!("{}/{t}", cfg.topic_prefix.replace('.', "/"))).collect(),
            proc_names: (0..cfg.callees).map(|t| format!("bench.proc.{t}")).collect(),
            payload_off,
            seen_delta: vec![0; if cfg.seq_window { cfg.publishers } else { 0 }],
            seen_dirty: false,
            next_ping_check: 0,
            cfg,
            shared,
            tid,
            conns,
            poll,
            stats: Stats::new(),
            phase: Phase::Setup,
            scratch: Vec::with_capacity(64 * 1024),
            payload,
            warm_end: 0,
            meas_end: 0,
            published_delivered: 0,
            reported_error: false,
        })
    }

    pub fn run(mut self) -> Result<Stats, Fail> {
        let r = self.run_inner();
        if r.is_err() {
            self.shared.failed.store(true, Ordering::SeqCst);
        }
        r.map(|_| self.stats)
    }

    fn run_inner(&mut self) -> Result<(), Fail> {
        // ---- setup: HELLO, SUBSCRIBE / REGISTER
        let hello = V::Arr(vec![
            V::U(1),
            V::s(&self.cfg.realm),
            V::Map(vec![
                (
                    V::s("roles"),
                    V::Map(vec![
                        (V::s("publisher"), V::Map(vec![])),
                        (V::s("subscriber"), V::Map(vec![])),
                        (V::s("caller"), V::Map(vec![])),
                        (V::s("callee"), V::Map(vec![])),
                    ]),
                ),
                (V::s("agent"), V::s("fennec-load")),
            ]),
        ]);
        let ser = self.cfg.ser;
        let pid = std::process::id();
        for (i, c) in self.conns.iter_mut().enumerate() {
            match c.proto {
                Proto::Wamp => c.send_v(ser, &hello, &mut self.scratch),
                Proto::Mqtt => {
                    let id = format!("fennec-load-{pid}-{}-{i}", self.tid);
                    mqtt::connect(&mut c.wbuf, self.cfg.mqtt_version, &id, self.cfg.keepalive);
                }
            }
        }
        let setup_deadline = self.shared.now_ns() + SETUP_TIMEOUT_S * 1_000_000_000;
        let mut events = Events::with_capacity(1024);
        loop {
            self.flush_all()?;
            self.turn(&mut events, Duration::from_millis(5))?;
            if self.conns.iter().all(|c| c.st == St::Ready) {
                break;
            }
            if self.shared.failed.load(Ordering::Relaxed) {
                return Err(Fail::Protocol("aborted: another thread failed".into()));
            }
            if self.shared.now_ns() > setup_deadline {
                let n = self.conns.iter().filter(|c| c.st != St::Ready).count();
                return Err(Fail::Protocol(format!(
                    "timeout: {n} connection(s) did not finish HELLO/SUBSCRIBE/REGISTER \
                     (MQTT: CONNECT/SUBSCRIBE) within {SETUP_TIMEOUT_S} s"
                )));
            }
        }
        self.shared.ready.fetch_add(1, Ordering::SeqCst);
        while !self.shared.go.load(Ordering::SeqCst) {
            if self.shared.failed.load(Ordering::Relaxed) {
                return Err(Fail::Protocol("aborted: another thread failed".into()));
            }
            std::thread::sleep(Duration::from_micros(200));
        }

        // ---- load
        let start = self.shared.start_ns.load(Ordering::SeqCst);
        self.warm_end = start + self.cfg.warmup.as_nanos() as u64;
        self.meas_end = self.warm_end + self.cfg.duration.as_nanos() as u64;
        let drain_end = self.meas_end + self.cfg.drain.as_nanos() as u64;
        self.phase = Phase::Warmup;
        for c in &mut self.conns {
            c.next_due = start;
        }
        loop {
            let now = self.shared.now_ns();
            if now >= self.meas_end {
                break;
            }
            if now >= self.warm_end {
                self.phase = Phase::Measure;
            }
            self.flush_seen();
            self.generate(now);
            self.keepalive(now);
            self.flush_all()?;
            let timeout = self.next_timeout(now);
            self.turn(&mut events, timeout)?;
        }

        // ---- drain: stop sending, keep receiving until everything arrived
        self.phase = Phase::Drain;
        self.shared.sent.fetch_add(self.stats.sent, Ordering::SeqCst);
        self.publish_delivered();
        self.shared.stopped.fetch_add(1, Ordering::SeqCst);
        loop {
            self.keepalive(self.shared.now_ns());
            self.flush_all()?;
            self.publish_delivered();
            if self.drained() || self.shared.now_ns() >= drain_end {
                break;
            }
            self.turn(&mut events, Duration::from_millis(2))?;
        }

        // ---- GOODBYE
        self.phase = Phase::Goodbye;
        let bye = V::Arr(vec![V::U(6), V::Map(vec![]), V::s("wamp.close.close_realm")]);
        for c in &mut self.conns {
            if c.st != St::Done && !c.eof {
                match c.proto {
                    Proto::Wamp => {
                        c.send_v(ser, &bye, &mut self.scratch);
                        c.st = St::GoodbyeSent;
                    }
                    Proto::Mqtt => {
                        // DISCONNECT has no reply.
                        mqtt::disconnect(&mut c.wbuf);
                        c.st = St::Done;
                    }
                }
            }
        }
        let bye_end = self.shared.now_ns() + 2_000_000_000;
        loop {
            self.flush_all()?;
            if self.conns.iter().all(|c| c.st == St::Done || c.eof) || self.shared.now_ns() >= bye_end {
                break;
            }
            self.turn(&mut events, Duration::from_millis(5))?;
        }
        for c in &mut self.conns {
            if c.st != St::Done {
                self.stats.no_goodbye += 1;
            }
            if !c.eof && c.proto == Proto::Wamp {
                let m = c.mask();
                ws::write_frame(&mut c.wbuf, ws::OP_CLOSE, &1000u16.to_be_bytes(), m);
                let _ = c.stream.write(&c.wbuf[c.wpos..]);
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        Ok(())
    }

    fn publish_delivered(&mut self) {
        let d = self.stats.delivered - self.published_delivered;
        if d > 0 {
            self.shared.delivered.fetch_add(d, Ordering::SeqCst);
            self.published_delivered = self.stats.delivered;
        }
    }

    fn drained(&self) -> bool {
        let sh = &self.shared;
        sh.stopped.load(Ordering::SeqCst) == self.cfg.threads
            && sh.delivered.load(Ordering::SeqCst) >= sh.sent.load(Ordering::SeqCst) * self.cfg.fanout
    }

    fn next_timeout(&self, now: u64) -> Duration {
        if self.conns.iter().any(|c| c.readable) {
            return Duration::ZERO;
        }
        if self.cfg.seq_window
            && self.cfg.threads > 1
            && self.phase < Phase::Drain
            && self.conns.iter().any(|c| c.role == Role::Publisher)
        {
            // The window opens on deliveries seen by other threads: poll.
            return Duration::from_micros(100);
        }
        let mut until = self.meas_end.min(if now < self.warm_end { self.warm_end } else { u64::MAX });
        if self.cfg.interval_ns > 0 {
            for c in &self.conns {
                if matches!(c.role, Role::Publisher | Role::Caller) {
                    until = until.min(c.next_due);
                }
            }
        }
        Duration::from_nanos(until.saturating_sub(now).min(10_000_000))
    }

    /// One poll + read/process pass.
    fn turn(&mut self, events: &mut Events, timeout: Duration) -> Result<(), Fail> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Fail::Protocol(format!("poll: {e}"))),
        }
        for ev in events.iter() {
            let c = &mut self.conns[ev.token().0];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                c.readable = true;
            }
            if ev.is_writable() {
                c.writable = true;
            }
        }
        for i in 0..self.conns.len() {
            if self.conns[i].readable {
                self.read_conn(i)?;
            }
        }
        Ok(())
    }

    fn read_conn(&mut self, i: usize) -> Result<(), Fail> {
        let mut reads = 0;
        loop {
            let c = &mut self.conns[i];
            if c.eof {
                c.readable = false;
                return Ok(());
            }
            if reads == READS_PER_TURN {
                // Leave `readable` set: continue next turn.
                return Ok(());
            }
            // Make room.
            if c.rstart > 0 && (c.rstart == c.rlen || c.rbuf.len() - c.rlen < READ_CHUNK / 4) {
                c.rbuf.copy_within(c.rstart..c.rlen, 0);
                c.rlen -= c.rstart;
                c.rstart = 0;
            }
            if c.rbuf.len() - c.rlen < READ_CHUNK / 4 {
                let n = c.rbuf.len() * 2;
                c.rbuf.resize(n, 0);
            }
            let rlen = c.rlen;
            match c.stream.read(&mut c.rbuf[rlen..]) {
                Ok(0) => {
                    c.eof = true;
                    c.readable = false;
                    let st = c.st;
                    c.st = St::Done;
                    if st != St::Done && st != St::GoodbyeSent {
                        let msg = format!("connection {:?}#{} closed by the router (state {st:?})", c.role, c.idx);
                        if self.phase == Phase::Setup {
                            return Err(Fail::Protocol(msg));
                        }
                        self.problem(msg);
                    }
                    return Ok(());
                }
                Ok(n) => {
                    if self.cfg.quickack {
                        quickack(&c.stream);
                    }
                    // A short read means the socket is drained: with
                    // edge-triggered epoll any later data raises a new
                    // event, so skip the extra read that would return
                    // WouldBlock.
                    let drained = n < c.rbuf.len() - rlen;
                    c.rlen += n;
                    reads += 1;
                    if drained {
                        c.readable = false;
                    }
                    self.process(i)?;
                    if drained {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    c.eof = true;
                    c.readable = false;
                    let msg = format!("read error on {:?}#{}: {e}", c.role, c.idx);
                    let st = c.st;
                    c.st = St::Done;
                    if self.phase == Phase::Setup {
                        return Err(Fail::Protocol(msg));
                    }
                    if st != St::GoodbyeSent && st != St::Done {
                        self.problem(msg);
                    }
                    return Ok(());
                }
            }
        }
    }

    fn problem(&mut self, msg: String) {
        if self.stats.problems.len() < 20 {
            eprintln!("fennec-load: warning: {msg}");
            self.stats.problems.push(msg);
        }
    }

    /// Parses and handles all complete frames buffered on connection `i`.
    fn process(&mut self, i: usize) -> Result<(), Fail> {
        if self.conns[i].proto == Proto::Mqtt {
            return self.process_mqtt(i);
        }
        let now = self.shared.now_ns();
        let mut rbuf = std::mem::take(&mut self.conns[i].rbuf);
        let mut frag = std::mem::take(&mut self.conns[i].frag);
        let mut pos = self.conns[i].rstart;
        let end = self.conns[i].rlen;
        let mut result = Ok(());
        while pos < end {
            let f = match ws::parse_frame(&mut rbuf[pos..end]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    result = Err(Fail::Protocol(e));
                    break;
                }
            };
            let (s, e) = (pos + f.start, pos + f.end);
            pos += f.end;
            let r = match f.opcode {
                ws::OP_TEXT | ws::OP_BIN if f.fin => self.handle(i, &rbuf[s..e], now),
                ws::OP_TEXT | ws::OP_BIN => {
                    frag.clear();
                    frag.extend_from_slice(&rbuf[s..e]);
                    self.conns[i].frag_op = f.opcode;
                    Ok(())
                }
                ws::OP_CONT => {
                    frag.extend_from_slice(&rbuf[s..e]);
                    if f.fin {
                        let r = self.handle(i, &frag, now);
                        frag.clear();
                        r
                    } else {
                        Ok(())
                    }
                }
                ws::OP_PING => {
                    let c = &mut self.conns[i];
                    let m = c.mask();
                    ws::write_frame(&mut c.wbuf, ws::OP_PONG, &rbuf[s..e], m);
                    Ok(())
                }
                ws::OP_PONG => Ok(()),
                ws::OP_CLOSE => {
                    let c = &mut self.conns[i];
                    let code = if e - s >= 2 { u16::from_be_bytes([rbuf[s], rbuf[s + 1]]) } else { 1005 };
                    let reason = String::from_utf8_lossy(&rbuf[(s + 2).min(e)..e]).into_owned();
                    let m = c.mask();
                    ws::write_frame(&mut c.wbuf, ws::OP_CLOSE, &code.to_be_bytes(), m);
                    let was = c.st;
                    c.st = St::Done;
                    if was != St::GoodbyeSent && was != St::Done {
                        let msg = format!(
                            "router sent WebSocket close {code} {reason:?} on {:?}#{} (state {was:?})",
                            c.role, c.idx
                        );
                        if self.phase == Phase::Setup {
                            Err(Fail::Protocol(msg))
                        } else {
                            self.problem(msg);
                            Ok(())
                        }
                    } else {
                        Ok(())
                    }
                }
                op => Err(Fail::Protocol(format!("unknown WebSocket opcode {op}"))),
            };
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        let c = &mut self.conns[i];
        c.rbuf = rbuf;
        c.frag = frag;
        c.rstart = pos;
        if c.rstart == c.rlen {
            c.rstart = 0;
            c.rlen = 0;
        }
        result
    }

    /// Records a received payload on connection `i`: `p` is the first
    /// argument (WAMP) or the MQTT payload, starting with the timestamp.
    /// Parses and handles all complete MQTT packets buffered on `i`.
    fn process_mqtt(&mut self, i: usize) -> Result<(), Fail> {
        let now = self.shared.now_ns();
        let rbuf = std::mem::take(&mut self.conns[i].rbuf);
        let mut pos = self.conns[i].rstart;
        let end = self.conns[i].rlen;
        let mut result = Ok(());
        while pos < end {
            let p = match mqtt::parse_packet(&rbuf[pos..end]) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    result = Err(Fail::Protocol(e));
                    break;
                }
            };
            let body = &rbuf[pos + p.start..pos + p.end];
            pos += p.end;
            if let Err(e) = self.handle_mqtt(i, p.kind, p.flags, body, now) {
                result = Err(e);
                break;
            }
        }
        let c = &mut self.conns[i];
        c.rbuf = rbuf;
        c.rstart = pos;
        if c.rstart == c.rlen {
            c.rstart = 0;
            c.rlen = 0;
        }
        result
    }

    fn handle_mqtt(&mut self, i: usize, kind: u8, flags: u8, body: &[u8], now: u64) -> Result<(), Fail> {
        let v = self.cfg.mqtt_version;
        let perr = |e: String| Fail::Protocol(format!("bad packet from broker: {e}"));
        match kind {
            mqtt::PUBLISH => {
                let m = mqtt::publish_parse(v, flags, body).map_err(perr)?;
                if m.qos == 2 {
                    return Err(Fail::Protocol("broker sent a QoS 2 PUBLISH (we subscribed at QoS <= 1)".into()));
                }
                self.stats.delivered += 1;
                let p = strip_json(&body[m.payload.0..m.payload.1]);
                self.record_payload(i, Some(p), now);
                if m.qos == 1 {
                    mqtt::puback(&mut self.conns[i].wbuf, m.pkid);
                }
            }
            mqtt::PUBACK => {
                let (_, code) = mqtt::puback_parse(body).map_err(perr)?;
                self.stats.acks += 1;
                let c = &mut self.conns[i];
                c.inflight = c.inflight.saturating_sub(1);
                if code >= 0x80 {
                    self.stats.errors += 1;
                    self.report_error_text(format!("broker refused PUBLISH: PUBACK reason code 0x{code:02x}"));
                }
            }
            mqtt::CONNACK => {
                let ca = mqtt::connack(v, body).map_err(perr)?;
                if ca.code != 0 {
                    return Err(Fail::Abort(format!(
                        "broker refused CONNECT: {} code 0x{:02x}",
                        if v == mqtt::Version::V5 { "reason" } else { "return" },
                        ca.code
                    )));
                }
                if let Some(rm) = ca.receive_max {
                    self.shared.receive_max.fetch_min(rm as u64, Ordering::SeqCst);
                }
                let ka = ca.server_keepalive.unwrap_or(self.cfg.keepalive);
                let c = &mut self.conns[i];
                if c.st != St::Hello {
                    return Err(Fail::Protocol("unexpected CONNACK".into()));
                }
                if ka > 0 {
                    c.ping_ns = ka as u64 * 500_000_000;
                    c.next_ping = now + c.ping_ns;
                }
                match c.role {
                    Role::Subscriber => {
                        for t in &self.mqtt_topics {
                            let id = c.next_pkid();
                            mqtt::subscribe(&mut c.wbuf, v, id, t, self.cfg.qos);
                        }
                        c.pending = self.mqtt_topics.len();
                        c.st = St::Setup;
                    }
                    _ => c.st = St::Ready,
                }
            }
            mqtt::SUBACK => {
                let (_, code) = mqtt::suback(v, body).map_err(perr)?;
                if code >= 0x80 {
                    return Err(Fail::Protocol(format!("broker refused SUBSCRIBE: code 0x{code:02x}")));
                }
                let c = &mut self.conns[i];
                c.pending = c.pending.saturating_sub(1);
                if c.pending == 0 && c.st == St::Setup {
                    c.st = St::Ready;
                }
            }
            mqtt::PINGRESP => {}
            mqtt::DISCONNECT => {
                let c = &mut self.conns[i];
                let was = c.st;
                c.st = St::Done;
                let msg = format!(
                    "broker sent DISCONNECT (reason 0x{:02x}) on {:?}#{} (state {was:?})",
                    mqtt::disconnect_reason(body),
                    c.role,
                    c.idx
                );
                if self.phase == Phase::Setup {
                    return Err(Fail::Protocol(msg));
                }
                if was != St::Done {
                    self.problem(msg);
                }
            }
            k => return Err(Fail::Protocol(format!("unexpected MQTT packet type {k} from broker"))),
        }
        Ok(())
    }

    fn record_payload(&mut self, i: usize, p: Option<&[u8]>, now: u64) {
        let Some(p) = p else {
            self.stats.bad_payload += 1;
            return;
        };
        match parse_ts(p) {
            Some(t) => {
                if now >= self.warm_end && now < self.meas_end {
                    let lat = now.saturating_sub(t).clamp(1, HIST_MAX_NS);
                    let _ = self.stats.hist.record(lat);
                    self.stats.delivered_win += 1;
                }
            }
            None => {
                self.stats.bad_payload += 1;
                return;
            }
        }
        if self.cfg.seq_window {
            if let Some((pb, seq)) = parse_pub_seq(p) {
                let c = &mut self.conns[i];
                if let Some(last) = c.last_seq.get_mut(pb) {
                    if seq > *last {
                        self.seen_delta[pb] += seq - *last;
                        self.seen_dirty = true;
                        *last = seq;
                    }
                }
            }
        }
    }

    /// Adds this thread's subscribers' progress to `shared.pub_seen`.
    fn flush_seen(&mut self) {
        if !self.seen_dirty {
            return;
        }
        self.seen_dirty = false;
        for (p, d) in self.seen_delta.iter_mut().enumerate() {
            if *d > 0 {
                self.shared.pub_seen[p].fetch_add(*d, Ordering::Relaxed);
                *d = 0;
            }
        }
    }

    fn report_error(&mut self, what: &str, a: &[V<'_>]) {
        self.report_error_text(format!("router returned ERROR for {what}: {}", err_text(a, 3)));
    }

    fn report_error_text(&mut self, msg: String) {
        if !self.reported_error {
            self.reported_error = true;
            eprintln!("fennec-load: warning (thread {}): {msg}", self.tid);
            let mut fe = self.shared.first_error.lock().unwrap();
            if fe.is_none() {
                *fe = Some(msg);
            }
        }
    }

    fn handle(&mut self, i: usize, msg: &[u8], now: u64) -> Result<(), Fail> {
        let ser = self.cfg.ser;
        let v = ser.decode(msg).map_err(|e| {
            Fail::Protocol(format!(
                "cannot decode message from router: {e}: {:?}",
                String::from_utf8_lossy(&msg[..msg.len().min(200)])
            ))
        })?;
        let Some(a) = v.as_arr() else {
            return Err(Fail::Protocol(format!("message is not an array: {}", v.show())));
        };
        let Some(code) = a.first().and_then(|x| x.as_u64()) else {
            return Err(Fail::Protocol(format!("bad message type: {}", v.show())));
        };
        match code {
            36 => {
                // EVENT [36, sub, pub, details, args?, kwargs?]
                self.stats.delivered += 1;
                let p = a.get(4).and_then(|a| a.as_arr()).and_then(|a| a.first()).and_then(|v| v.as_bytes());
                self.record_payload(i, p, now);
            }
            50 => {
                // RESULT [50, req, details, args?]
                self.stats.delivered += 1;
                let c = &mut self.conns[i];
                c.inflight = c.inflight.saturating_sub(1);
                let p = a.get(3).and_then(|a| a.as_arr()).and_then(|a| a.first()).and_then(|v| v.as_bytes());
                self.record_payload(i, p, now);
            }
            17 => {
                // PUBLISHED
                self.stats.acks += 1;
                let c = &mut self.conns[i];
                c.inflight = c.inflight.saturating_sub(1);
            }
            68 => {
                // INVOCATION [68, req, reg, details, args?, kwargs?] -> YIELD
                self.stats.invocations += 1;
                let req = a.get(1).and_then(|x| x.as_u64()).unwrap_or(0);
                let mut y = vec![V::U(70), V::U(req), V::Map(vec![])];
                if let Some(args) = a.get(4) {
                    y.push(args.clone());
                    if let Some(kw) = a.get(5) {
                        y.push(kw.clone());
                    }
                }
                let c = &mut self.conns[i];
                c.send_v(ser, &V::Arr(y), &mut self.scratch);
            }
            2 => {
                // WELCOME
                let c = &mut self.conns[i];
                if c.st != St::Hello {
                    return Err(Fail::Protocol("unexpected WELCOME".into()));
                }
                match c.role {
                    Role::Publisher | Role::Caller => c.st = St::Ready,
                    Role::Subscriber => {
                        for t in 0..self.topic_names.len() {
                            let req = c.req();
                            let m = V::Arr(vec![V::U(32), V::U(req), V::Map(vec![]), V::s(&self.topic_names[t])]);
                            c.send_v(ser, &m, &mut self.scratch);
                        }
                        c.pending = self.topic_names.len();
                        c.st = St::Setup;
                    }
                    Role::Callee => {
                        let req = c.req();
                        let m = V::Arr(vec![V::U(64), V::U(req), V::Map(vec![]), V::s(&self.proc_names[c.idx])]);
                        c.send_v(ser, &m, &mut self.scratch);
                        c.pending = 1;
                        c.st = St::Setup;
                    }
                }
            }
            33 | 65 => {
                // SUBSCRIBED / REGISTERED
                let c = &mut self.conns[i];
                c.pending = c.pending.saturating_sub(1);
                if c.pending == 0 && c.st == St::Setup {
                    c.st = St::Ready;
                }
            }
            3 => {
                // ABORT [3, details, reason]
                return Err(Fail::Abort(format!(
                    "router ABORTed the session (realm {:?}): {}",
                    self.cfg.realm,
                    err_text(a, 1)
                )));
            }
            4 => {
                return Err(Fail::Abort(
                    "router sent CHALLENGE: authentication is not supported by fennec-load".into(),
                ));
            }
            6 => {
                // GOODBYE
                let c = &mut self.conns[i];
                if c.st == St::GoodbyeSent {
                    c.st = St::Done;
                } else {
                    let bye = V::Arr(vec![V::U(6), V::Map(vec![]), V::s("wamp.close.goodbye_and_out")]);
                    c.send_v(ser, &bye, &mut self.scratch);
                    c.st = St::Done;
                    let msg = format!("router sent GOODBYE: {}", err_text(a, 1));
                    if self.phase == Phase::Setup {
                        return Err(Fail::Protocol(msg));
                    }
                    self.problem(msg);
                }
            }
            8 => {
                // ERROR [8, reqtype, req, details, error, args?, kwargs?]
                let rt = a.get(1).and_then(|x| x.as_u64()).unwrap_or(0);
                match rt {
                    16 | 48 => {
                        self.stats.errors += 1;
                        let c = &mut self.conns[i];
                        c.inflight = c.inflight.saturating_sub(1);
                        self.report_error(if rt == 16 { "PUBLISH" } else { "CALL" }, a);
                    }
                    32 | 64 => {
                        return Err(Fail::Protocol(format!(
                            "router refused {}: {}",
                            if rt == 32 { "SUBSCRIBE" } else { "REGISTER" },
                            err_text(a, 3)
                        )));
                    }
                    _ => self.report_error("request", a),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends an MQTT PUBLISH for publisher connection `i`.
    fn emit_mqtt(&mut self, i: usize, now: u64) {
        let qos = self.cfg.qos;
        let c = &mut self.conns[i];
        let t = c.rr % self.mqtt_topics.len();
        c.rr = c.rr.wrapping_add(1);
        c.seq += 1;
        fill_payload(&mut self.payload[self.payload_off..], now, c.idx, c.seq);
        let pkid = if qos > 0 { c.next_pkid() } else { 0 };
        mqtt::publish(&mut c.wbuf, self.cfg.mqtt_version, self.mqtt_topics[t].as_bytes(), qos, pkid, &self.payload);
        if qos > 0 {
            c.inflight += 1;
        }
        self.stats.sent += 1;
        if self.phase == Phase::Measure {
            self.stats.sent_win += 1;
        }
    }

    /// Messages of sender `i` counted against the window: unacknowledged
    /// PUBLISH (WAMP with acknowledge, MQTT QoS 1), outstanding CALLs, or
    /// (QoS 0 sequence window) messages ahead of the subscribers' mean.
    fn in_window(&self, i: usize) -> usize {
        let c = &self.conns[i];
        if c.proto == Proto::Mqtt && self.cfg.seq_window {
            let seen = self.shared.pub_seen[c.idx].load(Ordering::Relaxed) / self.cfg.subscribers.max(1) as u64;
            c.seq.saturating_sub(seen) as usize
        } else {
            c.inflight
        }
    }

    /// Appends a PUBLISH or CALL for connection `i` to its output buffer.
    fn emit(&mut self, i: usize, now: u64) {
        if self.conns[i].proto == Proto::Mqtt {
            return self.emit_mqtt(i, now);
        }
        let ser = self.cfg.ser;
        let max_rate = self.cfg.interval_ns == 0;
        let c = &mut self.conns[i];
        let req = c.req();
        let (code, name, ack) = match c.role {
            Role::Publisher => {
                let t = c.rr % self.topic_names.len();
                (16u64, &self.topic_names[t], max_rate)
            }
            _ => {
                let k = c.rr % self.proc_names.len();
                (48u64, &self.proc_names[k], false)
            }
        };
        c.rr = c.rr.wrapping_add(1);
        hex_ts(now, &mut self.payload);
        let m = &mut self.scratch;
        m.clear();
        match ser {
            Ser::Json => {
                m.push(b'[');
                json_u64(code, m);
                m.push(b',');
                json_u64(req, m);
                m.extend_from_slice(if ack { b",{\"acknowledge\":true},\"" } else { b",{},\"" });
                m.extend_from_slice(name.as_bytes());
                m.extend_from_slice(b"\",[\"");
                m.extend_from_slice(&self.payload);
                m.extend_from_slice(b"\"]]");
            }
            Ser::Msgpack => {
                mp_arr(5, m);
                mp_u64(code, m);
                mp_u64(req, m);
                if ack {
                    mp_map(1, m);
                    mp_str_hdr(11, m);
                    m.extend_from_slice(b"acknowledge");
                    m.push(0xc3);
                } else {
                    mp_map(0, m);
                }
                mp_str_hdr(name.len(), m);
                m.extend_from_slice(name.as_bytes());
                mp_arr(1, m);
                mp_str_hdr(self.payload.len(), m);
                m.extend_from_slice(&self.payload);
            }
        }
        c.send_msg(ser, m);
        if ack || c.role == Role::Caller {
            c.inflight += 1;
        }
        self.stats.sent += 1;
        if self.phase == Phase::Measure {
            self.stats.sent_win += 1;
        }
    }

    fn generate(&mut self, now: u64) {
        let interval = self.cfg.interval_ns;
        let mut window = self.cfg.window;
        if self.cfg.pub_proto == Proto::Mqtt && self.cfg.qos > 0 {
            // MQTT 5: the broker's Receive Maximum bounds unacked QoS 1.
            window = (window as u64).min(self.shared.receive_max.load(Ordering::Relaxed)) as usize;
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if !matches!(c.role, Role::Publisher | Role::Caller) || c.st != St::Ready {
                continue;
            }
            let Some(interval) = std::num::NonZeroU64::new(interval) else {
                // Refill only once the window is half empty so that many
                // messages go out in one write instead of one per ack.
                let mut inw = self.in_window(i);
                if inw > window / 2 {
                    continue;
                }
                while inw < window && self.conns[i].pending_out() < MAX_PENDING_OUT {
                    self.emit(i, now);
                    inw += 1;
                }
                continue;
            };
            {
                let mut n = 0;
                while self.conns[i].next_due <= now && n < RATE_BURST {
                    let c = &mut self.conns[i];
                    if now - c.next_due > 1_000_000_000 {
                        // More than 1 s behind schedule: skip the backlog.
                        let skipped = (now - c.next_due) / interval;
                        c.next_due += skipped * interval.get();
                        self.stats.behind += skipped;
                        continue;
                    }
                    let capped = c.role == Role::Caller || (c.proto == Proto::Mqtt && self.cfg.qos > 0);
                    if c.pending_out() >= MAX_PENDING_OUT || (capped && c.inflight >= window) {
                        break;
                    }
                    c.next_due += interval.get();
                    self.emit(i, now);
                    n += 1;
                }
            }
        }
    }

    /// MQTT keep-alive: a PINGREQ every half keep-alive interval (checked
    /// at most every 100 ms).
    fn keepalive(&mut self, now: u64) {
        if now < self.next_ping_check {
            return;
        }
        self.next_ping_check = now + 100_000_000;
        for c in &mut self.conns {
            if c.proto == Proto::Mqtt && now >= c.next_ping && !c.eof && c.st != St::Done {
                mqtt::pingreq(&mut c.wbuf);
                c.next_ping = now + c.ping_ns;
                self.stats.pings += 1;
            }
        }
    }

    fn flush_all(&mut self) -> Result<(), Fail> {
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if c.eof || !c.writable || c.wpos == c.wbuf.len() {
                continue;
            }
            loop {
                match c.stream.write(&c.wbuf[c.wpos..]) {
                    Ok(n) => {
                        c.wpos += n;
                        if c.wpos == c.wbuf.len() {
                            c.wbuf.clear();
                            c.wpos = 0;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.writable = false;
                        if c.wpos > c.wbuf.len() / 2 {
                            c.wbuf.drain(..c.wpos);
                            c.wpos = 0;
                        }
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        let msg = format!("write error on {:?}#{}: {e}", c.role, c.idx);
                        c.eof = true;
                        c.wbuf.clear();
                        c.wpos = 0;
                        let st = c.st;
                        c.st = St::Done;
                        if self.phase == Phase::Setup {
                            return Err(Fail::Protocol(msg));
                        }
                        if st != St::GoodbyeSent && st != St::Done {
                            self.problem(msg);
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_roundtrip() {
        let mut b = vec![b'x'; 32];
        for ns in [0u64, 1, 123_456_789_012_345, u64::MAX] {
            hex_ts(ns, &mut b);
            assert_eq!(parse_ts(&b), Some(ns));
        }
        assert_eq!(parse_ts(b"xyz"), None);
    }

    /// An MQTT publisher's payload as built by `emit_mqtt` (JSON array).
    fn json_payload(size: usize, ts: u64, publisher: usize, seq: u64) -> Vec<u8> {
        let mut p = vec![b'x'; size];
        p[..2].copy_from_slice(b"[\"");
        p[size - 2..].copy_from_slice(b"\"]");
        fill_payload(&mut p[2..], ts, publisher, seq);
        p
    }

    #[test]
    fn pub_seq_roundtrip() {
        let mut b = vec![b'x'; 64];
        fill_payload(&mut b, 0x1234_5678_9abc, 7, 0xfff_ffff_fffe);
        assert_eq!(parse_ts(&b), Some(0x1234_5678_9abc));
        assert_eq!(parse_pub_seq(&b), Some((7, 0xfff_ffff_fffe)));
        assert_eq!(&b[MQTT_MIN_PAYLOAD..], &[b'x'; 64 - MQTT_MIN_PAYLOAD][..]);
        assert_eq!(parse_pub_seq(&b[..MQTT_MIN_PAYLOAD - 1]), None);
        // A WAMP load tool payload (timestamp then 'x') has no sequence.
        assert_eq!(parse_pub_seq(b"00000000000000ffxxxxxxxxxxxxxxxxxxxx"), None);
    }

    /// MQTT -> WAMP as Fennec maps it: the MQTT payload is a JSON array,
    /// which becomes the EVENT's args; the WAMP subscriber reads args[0].
    #[test]
    fn mqtt_json_array_payload_read_as_wamp_event_args() {
        let payload = json_payload(64, 0xabc_def0_1234, 3, 42);
        let mut pkt = Vec::new();
        mqtt::publish(&mut pkt, mqtt::Version::V311, b"bench/topic/0", 0, 0, &payload);
        let p = mqtt::parse_packet(&pkt).unwrap().unwrap();
        let body = &pkt[p.start..p.end];
        let m = mqtt::publish_parse(mqtt::Version::V311, p.flags, body).unwrap();
        assert_eq!(&body[m.topic.0..m.topic.1], b"bench/topic/0");
        let mqtt_payload = &body[m.payload.0..m.payload.1];
        // The payload is valid JSON: a one-string array.
        let args = Ser::Json.decode(mqtt_payload).unwrap();
        assert_eq!(args.as_arr().map(|a| a.len()), Some(1));
        for ser in [Ser::Json, Ser::Msgpack] {
            let event = V::Arr(vec![V::U(36), V::U(1), V::U(2), V::Map(vec![]), args.clone()]);
            let mut wire = Vec::new();
            ser.encode(&event, &mut wire);
            let got = ser.decode(&wire).unwrap();
            let a = got.as_arr().unwrap();
            let first = a[4].as_arr().and_then(|x| x.first()).and_then(|v| v.as_bytes()).unwrap();
            assert_eq!(first.len(), 60);
            assert_eq!(parse_ts(first), Some(0xabc_def0_1234));
            assert_eq!(parse_pub_seq(first), Some((3, 42)));
        }
        // An MQTT subscriber of the same publication.
        let inner = strip_json(mqtt_payload);
        assert_eq!(parse_ts(inner), Some(0xabc_def0_1234));
        assert_eq!(parse_pub_seq(inner), Some((3, 42)));
    }

    /// WAMP -> MQTT as Fennec maps it: one string argument becomes its JSON
    /// encoding, `"..."`.
    #[test]
    fn wamp_string_arg_read_as_mqtt_json_string() {
        let mut ts = [b'x'; 40];
        hex_ts(99, &mut ts);
        let mut json = vec![b'"'];
        json.extend_from_slice(&ts);
        json.push(b'"');
        assert_eq!(parse_ts(strip_json(&json)), Some(99));
        assert_eq!(parse_ts(strip_json(&ts)), Some(99));
    }
}
