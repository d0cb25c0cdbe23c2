//! A worker thread: one `mio::Poll`, its connections' sockets, its inbox,
//! and the `Shard` it drives. The loop is thin: readiness in, bytes to the
//! protocol layer, bytes out. Nothing here blocks: sockets are
//! non-blocking, peer queues are bounded and overflow into per-peer lists,
//! and the inbox is drained with `try_recv`.
//!
//! - `shard.rs`: what sessions see (routing state, connection effects).
//! - `peers.rs`: sending to other workers (bounded channel + overflow + wake).
//! - `core.rs`: the protocol-neutral operations (subscribe, publish, call
//!   routing) and the handling of every `ShardMsg`.
//! - `raw.rs`: RawSocket input (handshake, frames).
//! - `crate::wamp::session`, `crate::mqtt::session`: protocol messages to
//!   core operations and back, on a `&mut Shard`.

pub mod core;
mod keys;
pub mod link;
pub mod peers;
mod raw;
pub mod reduce;
pub mod shard;
pub mod tables;
/// Shards driven without sockets: for tests, and the pipeline benchmark
/// (feature `testkit`, which the crate's own dev-dependency turns on).
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use crate::config::Config;
use crate::conn::{Buf, Conn, Fragmented, Proto};
use crate::metrics::{CloseReason, Snapshot, Source};
use crate::mqtt::session::MqttConn;
use crate::router::{Listener, Member, ShardMsg, SubKey, WorkerId};
use crate::wamp::session::{Framing, WampConn};
use crate::ws::frame::{self, Opcode};
use crate::ws::handshake::{self, Endpoint, Outcome};
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
pub use shard::{Shard, ShardSetup};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const WAKER: Token = Token(usize::MAX);

/// Size of the per-worker read buffer.
const SCRATCH: usize = 64 * 1024;
/// Most bytes read from one connection per readiness event before the others
/// get a turn (the rest is read in a later iteration).
const READ_BUDGET: usize = 256 * 1024;
/// Most inbox messages handled per loop iteration.
const INBOX_BATCH: usize = 4096;
/// Housekeeping tick: slow-consumer grace, lingering closes, metrics.
const TICK: Duration = Duration::from_millis(50);
/// How long a closed connection may take to flush and see the peer's EOF.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// A subscription key as seen by this worker.
pub enum LocalKey {
    /// Acquire sent to the owner; these subscribers wait for the grant.
    Pending(Vec<SubWaiter>),
    Active(u64),
}

pub struct SubWaiter {
    pub member: Member,
    pub session: u64,
    pub request: u64,
    pub started: Instant,
}

/// The local subscribers of one subscription.
pub struct LocalSub {
    pub key: SubKey,
    /// The key's `filter`, parsed once.
    pub filter: Option<crate::value::Value>,
    pub members: Vec<Member>,
    /// Round-robin position among members (shared subscriptions).
    pub next: usize,
}

/// Everything a worker is started with.
pub struct Setup {
    pub id: WorkerId,
    pub config: Arc<Config>,
    pub poll: Poll,
    pub inbox: Receiver<ShardMsg>,
    pub senders: Vec<Sender<ShardMsg>>,
    pub wakers: Vec<Arc<Waker>>,
    pub metrics: Option<Sender<(Source, Snapshot)>>,
    /// The store thread's channel (none under `--durability none`).
    pub store: Option<Sender<crate::store::thread::StoreReq>>,
    /// The cluster thread's channel (`--cluster`).
    pub cluster: Option<crate::cluster::ClusterChannel>,
    /// Retained values read back from the store, for the topics this worker owns.
    pub retained: Vec<Arc<crate::router::Publication>>,
    /// History events read back from the store, for the topics this worker owns.
    pub history: Vec<crate::router::history::Recorded>,
    /// The aggregate rows this worker owns, rebuilt at start (`tables::rebuild`).
    pub table_rows: Vec<((crate::router::Realm, String), crate::tables::engine::AggRow)>,
    /// MQTT persistent sessions read back from the store, for the client
    /// IDs this worker owns.
    pub mqtt_sessions: Vec<crate::store::mqtt::Loaded>,
    /// Told this worker's ID once those sessions are routed.
    pub ready: Option<Sender<WorkerId>>,
    /// The TLS listeners' server configuration, if there are any.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The event loop: the poll, the inbox, the socket input path, and the
/// shard it drives. Protocol sessions never see this struct: they get the
/// `Shard`.
pub struct Worker {
    pub sh: Shard,
    poll: Poll,
    inbox: Receiver<ShardMsg>,
    metrics_tx: Option<Sender<(Source, Snapshot)>>,
    next_metrics: Option<Instant>,
    endpoints: Vec<Endpoint>,
    scratch: Buf,
    /// New connections and their open deadline, oldest first.
    opening: std::collections::VecDeque<(usize, u64, Instant)>,
    next_serial: u64,
    shutdown_deadline: Option<Instant>,
    /// Restored when the loop starts (their subscriptions need it).
    restored: Vec<crate::store::mqtt::Loaded>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Worker {
    pub fn new(s: Setup) -> Worker {
        let now = Instant::now();
        let mut endpoints = vec![Endpoint {
            path: s.config.path.clone(),
            protocols: &["wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"],
        }];
        if let Some(path) = &s.config.mqtt.ws_path {
            endpoints.push(Endpoint { path: path.clone(), protocols: &["mqtt"] });
        }
        let next_metrics = s.metrics.as_ref().and(crate::metrics::interval(&s.config.metrics)).map(|i| now + i);
        let sh = Shard::new(ShardSetup {
            id: s.id,
            config: s.config,
            senders: s.senders,
            wakers: s.wakers,
            store: s.store,
            cluster: s.cluster,
            retained: s.retained,
            history: s.history,
            table_rows: s.table_rows,
            ready: s.ready,
            now,
        });
        Worker {
            sh,
            poll: s.poll,
            inbox: s.inbox,
            metrics_tx: s.metrics,
            next_metrics,
            endpoints,
            scratch: Buf::with_capacity(SCRATCH),
            opening: std::collections::VecDeque::new(),
            next_serial: 0,
            shutdown_deadline: None,
            restored: s.mqtt_sessions,
            tls: s.tls,
        }
    }

    /// Runs until shutdown is complete.
    pub fn run(mut self) {
        crate::mqtt::session::restore_at_start(&mut self.sh, std::mem::take(&mut self.restored));
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut inbox_more = false;
        loop {
            let busy = inbox_more || !self.sh.peers.local.is_empty() || !self.sh.resume.is_empty();
            let timeout = if busy { Duration::ZERO } else { next_tick.saturating_duration_since(Instant::now()) };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("worker {}: poll failed: {e}", self.sh.id);
                }
            }
            self.sh.now = Instant::now();
            // Inbox first: a route change that arrived with a PUBLISH in the
            // same wake-up is applied before the PUBLISH is routed.
            inbox_more = self.drain_inbox();
            for ev in events.iter() {
                let Token(handle) = ev.token();
                if ev.token() == WAKER || !self.sh.conns.contains(handle) {
                    continue;
                }
                if ev.is_writable() {
                    self.sh.mark_dirty(handle);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    // A short read ends the reading unless the peer has also
                    // closed (its EOF is read now: no later event says so).
                    let drained_on_short = !(ev.is_read_closed() || ev.is_error());
                    self.read_conn(handle, drained_on_short);
                }
            }
            inbox_more |= self.drain_inbox();
            if !self.sh.congested() {
                for handle in std::mem::take(&mut self.sh.resume) {
                    if let Some(c) = self.sh.conns.get_mut(handle) {
                        c.resume = false;
                        self.read_conn(handle, false);
                    }
                }
            }
            self.flush_dirty();
            self.sh.peers.flush();
            if let Some(store) = &mut self.sh.store {
                store.flush();
            }
            self.sh.flush_cluster();
            if self.sh.now >= next_tick {
                next_tick = self.sh.now + TICK;
                self.housekeeping();
                if self.shutdown_complete() {
                    break;
                }
            }
        }
        if let Some(tx) = self.metrics_tx.take() {
            let _ = tx.try_send((Source::Worker(self.sh.id as usize), crate::inspect::snapshot(&mut self.sh)));
        }
    }

    /// Handles up to `INBOX_BATCH` messages; true if more are waiting.
    fn drain_inbox(&mut self) -> bool {
        let mut n = 0;
        loop {
            while let Some(msg) = self.sh.peers.local.pop_front() {
                self.on_shard_msg(msg);
            }
            if n == INBOX_BATCH {
                return !self.inbox.is_empty();
            }
            match self.inbox.try_recv() {
                Ok(msg) => {
                    n += 1;
                    self.on_shard_msg(msg)
                }
                Err(_) => return false,
            }
        }
    }

    /// A message from another worker (or this one): the loop's own
    /// (a new connection, shutdown) here, the rest to the shard. A takeover
    /// of an MQTT session first reads what its connection still has.
    fn on_shard_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Accept(stream, listener) => self.accept(stream, listener),
            ShardMsg::Shutdown => self.begin_shutdown(),
            ShardMsg::TlsConfig(cfg) => self.tls = Some(cfg),
            msg => {
                if let Some(h) = crate::mqtt::session::read_first(&self.sh, &msg) {
                    self.read_now(h);
                }
                self.sh.on_shard_msg(msg)
            }
        }
    }

    fn accept(&mut self, mut stream: TcpStream, listener: Listener) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.sh.conns.vacant_entry();
        let handle = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(handle), Interest::READABLE | Interest::WRITABLE)
        {
            log::error!("worker {}: cannot register a connection: {e}", self.sh.id);
            return;
        }
        self.next_serial += 1;
        let mut conn = Conn::new(stream, self.next_serial);
        match listener {
            Listener::Mqtt | Listener::MqttTls => conn.proto = Proto::Mqtt(Box::new(MqttConn::new(false, self.sh.now))),
            Listener::RawSocket | Listener::RawSocketTls => conn.proto = Proto::RawHandshake,
            Listener::Http | Listener::HttpTls => {}
        }
        if matches!(listener, Listener::HttpTls | Listener::MqttTls | Listener::RawSocketTls) {
            let Some(cfg) = &self.tls else { return };
            match crate::tls::accept(cfg) {
                Ok(tls) => conn.tls = Some(tls),
                Err(e) => {
                    log::error!("worker {}: TLS: {e}", self.sh.id);
                    return;
                }
            }
        }
        entry.insert(conn);
        self.opening.push_back((handle, self.next_serial, self.sh.now + self.sh.cfg.limits.open_timeout));
    }

    fn flush_dirty(&mut self) {
        for handle in std::mem::take(&mut self.sh.dirty) {
            let Some(c) = self.sh.conns.get_mut(handle) else { continue };
            c.dirty = false;
            let Some(stream) = c.stream.as_mut() else { continue };
            let written = match &mut c.tls {
                None => c.out.write_to(stream, &mut self.sh.out_pool),
                Some(tls) => crate::tls::write(tls, &mut c.out, stream, &mut self.sh.out_pool),
            };
            match written {
                Ok(n) => self.sh.metrics.counters.bytes_out += n as u64,
                Err(_) => {
                    c.out = Default::default();
                    if c.is_closed() {
                        self.drop_conn(handle);
                    } else {
                        self.sh.close(handle, CloseReason::Lost, None);
                    }
                    continue;
                }
            }
            let c = &mut self.sh.conns[handle];
            if c.over_since.is_some() && c.out.bytes() <= self.sh.cfg.limits.outbound_queue_bytes / 2 {
                c.over_since = None;
            }
            let tls_pending = c.tls.as_ref().is_some_and(|t| t.wants_write());
            if c.is_closed() && c.out.is_empty() && !tls_pending && !c.write_shut {
                // Everything said: TLS close_notify, then FIN; then wait
                // (bounded) for the peer's EOF so that unread input does not
                // turn into a RST that could destroy our last frames.
                if let (Some(tls), Some(s)) = (&mut c.tls, &mut c.stream) {
                    tls.send_close_notify();
                    let _ = tls.write_tls(s);
                }
                if let Some(s) = &c.stream {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
                c.write_shut = true;
            }
        }
    }

    /// Reads and handles what the connection's socket holds now, out of the
    /// loop's turn (used when an inbox message depends on that input).
    pub fn read_now(&mut self, handle: usize) {
        if self.sh.conns.contains(handle) && !self.sh.conns[handle].is_closed() {
            self.read_conn(handle, false);
        }
    }

    /// Reads what the socket has and hands it to the protocol layer.
    ///
    /// `drained_on_short`: a read that fills less than the buffer offered
    /// has emptied the socket, so reading stops there instead of making one
    /// more `read` to see `WouldBlock`. Linux's edge-triggered epoll (mio's)
    /// reports the next arrival as a new event, so nothing is missed
    /// (tokio relies on the same). Not for TLS, whose records may hold more
    /// than one read returns, nor where an event said the peer closed.
    fn read_conn(&mut self, handle: usize, drained_on_short: bool) {
        if self.sh.conns[handle].paused {
            return; // resumed explicitly (resume_reading)
        }
        if self.sh.congested() {
            // A peer inbox is full: leave the bytes in the socket so that TCP
            // backpressure reaches the producer. Resumed once it drains.
            let c = &mut self.sh.conns[handle];
            if !c.resume {
                c.resume = true;
                self.sh.resume.push(handle);
            }
            return;
        }
        let c = &mut self.sh.conns[handle];
        let from_scratch = c.input.is_empty();
        let mut buf = if from_scratch { std::mem::take(&mut self.scratch) } else { std::mem::take(&mut c.input) };
        let mut budget = READ_BUDGET;
        let mut eof = false;
        if !from_scratch && !self.sh.conns[handle].is_closed() {
            // Input kept from before a pause may hold whole packets.
            self.process_input(handle, &mut buf);
            if !self.sh.conns.contains(handle) || self.sh.conns[handle].paused {
                return self.keep_input(handle, buf, false);
            }
        }
        loop {
            let c = &mut self.sh.conns[handle];
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(SCRATCH.max(buf.len()));
            } else {
                buf.reserve(4096);
            }
            let Some(stream) = c.stream.as_mut() else { break };
            let offered = buf.spare_mut().len();
            let short_ends = drained_on_short && c.tls.is_none();
            let got = match &mut c.tls {
                None => stream.read(buf.spare_mut()),
                Some(tls) => crate::tls::read(tls, stream, buf.spare_mut()),
            };
            let drained;
            match got {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.filled(n);
                    budget = budget.saturating_sub(n);
                    self.sh.metrics.counters.bytes_in += n as u64;
                    drained = short_ends && n < offered;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
            if self.sh.conns[handle].is_closed() {
                buf.clear(); // lingering: discard
            } else {
                self.process_input(handle, &mut buf);
            }
            if !self.sh.conns.contains(handle) || self.sh.conns[handle].paused {
                break;
            }
            // Out of budget, or a peer inbox filled up: stop, and read again
            // on a later turn. The socket may still hold input, and readiness
            // is edge-triggered: no new event will say so if the peer has
            // already sent everything (it waits for our answer).
            if budget == 0 || self.sh.congested() {
                let c = &mut self.sh.conns[handle];
                if !c.resume {
                    c.resume = true;
                    self.sh.resume.push(handle);
                }
                break;
            }
            if drained {
                break;
            }
        }
        self.keep_input(handle, buf, from_scratch);
        // TLS records to send (the handshake, alerts) come from reading too.
        if self.sh.conns.get(handle).is_some_and(|c| c.tls.as_ref().is_some_and(|t| t.wants_write())) {
            self.sh.mark_dirty(handle);
        }
        if eof && self.sh.conns.contains(handle) {
            if self.sh.conns[handle].is_closed() {
                self.drop_conn(handle);
            } else {
                self.sh.close(handle, CloseReason::Lost, None);
                self.drop_conn(handle);
            }
        }
    }

    /// Gives the buffer back: the worker's scratch, or the connection's own
    /// input when a partial frame remains.
    fn keep_input(&mut self, handle: usize, mut buf: Buf, is_scratch: bool) {
        match self.sh.conns.get_mut(handle) {
            Some(c) if !buf.is_empty() => {
                if is_scratch {
                    let mut own = Buf::with_capacity(buf.len().max(4096));
                    own.append(buf.data());
                    c.input = own;
                    buf.clear();
                    self.scratch = buf;
                } else {
                    c.input = buf;
                }
            }
            _ => {
                if is_scratch {
                    buf.clear();
                    self.scratch = buf;
                }
                // else: a connection buffer fully consumed is freed (dropped).
            }
        }
    }

    /// Parses as many complete units (HTTP head, WebSocket frames) as `buf`
    /// holds and dispatches them.
    fn process_input(&mut self, handle: usize, buf: &mut Buf) {
        let max = self.sh.cfg.limits.max_message_size;
        loop {
            if buf.is_empty() {
                return;
            }
            let Some(c) = self.sh.conns.get_mut(handle) else { return };
            if c.paused {
                // A message waits (MQTT CONNECT / SUBSCRIBE, a WAMP message
                // at the authorizer): the rest is kept for after it.
                return;
            }
            match &c.proto {
                Proto::Closed => {
                    buf.clear();
                    return;
                }
                Proto::Http => match handshake::handle(buf.data(), &self.endpoints) {
                    Outcome::Incomplete => return,
                    Outcome::Reject { response } => {
                        buf.clear();
                        self.sh.send_control(handle, &response);
                        self.sh.end_conn(handle, CloseReason::Handshake);
                        return;
                    }
                    Outcome::Upgrade { protocol, response, consumed, .. } => {
                        buf.consume(consumed);
                        self.sh.conns[handle].proto = if protocol == "mqtt" {
                            Proto::Mqtt(Box::new(MqttConn::new(true, self.sh.now)))
                        } else {
                            let ser = crate::wamp::message::Serializer::from_subprotocol(protocol).expect("offered");
                            Proto::Wamp(Box::new(WampConn::new(ser, Framing::WebSocket)))
                        };
                        self.sh.send_control(handle, &response);
                    }
                },
                Proto::RawHandshake => {
                    if !self.raw_handshake(handle, buf) {
                        return;
                    }
                }
                Proto::Wamp(w) if w.framing != Framing::WebSocket => {
                    if !self.raw_frame(handle, buf, max) {
                        return;
                    }
                }
                Proto::Mqtt(m) if !m.ws => return crate::mqtt::session::on_bytes(&mut self.sh, handle, buf),
                Proto::Wamp(_) | Proto::Mqtt(_) => {
                    let mut need = 0;
                    let f = match frame::parse(buf.data_mut(), max, &mut need) {
                        Ok(Some(f)) => f,
                        Ok(None) => {
                            if need > buf.capacity() {
                                buf.reserve(need - buf.len());
                            }
                            return;
                        }
                        Err(e) => {
                            buf.clear();
                            self.ws_fail(handle, e.close_code, e.reason);
                            return;
                        }
                    };
                    let payload = &buf.data()[f.payload_start..f.end()];
                    self.on_frame(handle, f.fin, f.opcode, payload);
                    buf.consume(f.end());
                }
            }
        }
    }

    fn on_frame(&mut self, handle: usize, fin: bool, opcode: Opcode, payload: &[u8]) {
        match opcode {
            Opcode::Ping => self.sh.send_control(handle, &frame::frame(Opcode::Pong, payload)),
            Opcode::Pong => {}
            Opcode::Close => {
                // Echo the status code, then close.
                let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1000 };
                let echo = if code == 1005 || code == 1006 || code == 1015 { frame::CLOSE_NORMAL } else { code };
                self.sh.close(handle, CloseReason::Client, Some((echo, "")));
            }
            Opcode::Text | Opcode::Binary if fin => {
                if self.sh.conns[handle].fragmented.is_some() {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "expected a continuation frame");
                }
                self.on_message(handle, payload);
            }
            Opcode::Text | Opcode::Binary => {
                let c = &mut self.sh.conns[handle];
                if c.fragmented.is_some() {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "expected a continuation frame");
                }
                c.fragmented = Some(Box::new(Fragmented { data: payload.to_vec() }));
            }
            Opcode::Continuation => {
                let max = self.sh.cfg.limits.max_message_size;
                let c = &mut self.sh.conns[handle];
                let Some(f) = c.fragmented.as_deref_mut() else {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "continuation without a start");
                };
                if f.data.len() + payload.len() > max {
                    return self.ws_fail(handle, frame::CLOSE_TOO_BIG, "message too big");
                }
                f.data.extend_from_slice(payload);
                if fin {
                    let whole = c.fragmented.take().expect("looked at above").data;
                    self.on_message(handle, &whole);
                }
            }
        }
    }

    /// A WebSocket-level violation: close with a status code.
    fn ws_fail(&mut self, handle: usize, code: u16, reason: &str) {
        let reason = if code == frame::CLOSE_TOO_BIG {
            format!("{reason}: the limit is {} bytes", self.sh.cfg.limits.max_message_size)
        } else {
            reason.to_owned()
        };
        self.sh.close(handle, CloseReason::ProtocolViolation, Some((code, &reason)));
    }

    fn on_message(&mut self, handle: usize, payload: &[u8]) {
        if let Proto::Mqtt(_) = self.sh.conns[handle].proto {
            return crate::mqtt::session::on_ws_message(&mut self.sh, handle, payload);
        }
        self.sh.metrics.counters.messages_in += 1;
        self.sh.conns[handle].stats.msgs_in += 1;
        crate::wamp::session::on_message(&mut self.sh, handle, payload);
    }

    /// Forgets the connection (closes the socket).
    fn drop_conn(&mut self, handle: usize) {
        if !self.sh.conns.contains(handle) {
            return;
        }
        if !self.sh.conns[handle].is_closed() {
            self.sh.close(handle, CloseReason::Lost, None);
        }
        let mut c = self.sh.conns.remove(handle);
        if let Some(s) = &mut c.stream {
            let _ = self.poll.registry().deregister(s);
        }
    }

    fn housekeeping(&mut self) {
        let now = self.sh.now;
        self.sh.tick();
        // Connections that did not open a session in time.
        while let Some(&(h, serial, deadline)) = self.opening.front() {
            if deadline > now {
                break;
            }
            self.opening.pop_front();
            let Some(c) = self.sh.conns.get(h).filter(|c| c.serial == serial) else { continue };
            match &c.proto {
                Proto::Http | Proto::RawHandshake => self.sh.end_conn(h, CloseReason::Handshake),
                Proto::Wamp(w) if w.session.is_none() => {
                    let text = format!("no HELLO within {} ms", self.sh.cfg.limits.open_timeout.as_millis());
                    self.sh.close(h, CloseReason::Handshake, Some((frame::CLOSE_POLICY, &text)));
                }
                Proto::Mqtt(m) if m.version.is_none() => {
                    self.sh.close(h, CloseReason::Handshake, Some((frame::CLOSE_POLICY, "no CONNECT in time")))
                }
                _ => {}
            }
        }
        // Closed connections past their deadline, flushed or not.
        let mut lingering = std::mem::take(&mut self.sh.lingering);
        lingering.retain(|&h| match self.sh.conns.get(h).and_then(|c| c.close_deadline) {
            Some(until) if now >= until => {
                self.drop_conn(h);
                false
            }
            Some(_) => true,
            None => false,
        });
        self.sh.lingering.append(&mut lingering);
        // Metrics.
        if let Some(at) = self.next_metrics {
            if now >= at {
                self.next_metrics = Some(at + self.sh.cfg.metrics.interval);
                if let Some(tx) = &self.metrics_tx {
                    let _ = tx.try_send((Source::Worker(self.sh.id as usize), crate::inspect::snapshot(&mut self.sh)));
                }
            }
        }
    }

    /// Starts shutdown: every session gets GOODBYE, queues flush for a bounded time.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutdown_deadline = Some(self.sh.now + self.sh.cfg.shutdown_grace);
        let handles: Vec<usize> = self.sh.conns.iter().map(|(h, _)| h).collect();
        for h in handles {
            match self.sh.conns[h].proto {
                Proto::Wamp(_) => {
                    crate::wamp::session::shutdown(&mut self.sh, h);
                    self.sh.close(h, CloseReason::Shutdown, Some((frame::CLOSE_GOING_AWAY, "server shutdown")));
                }
                Proto::Mqtt(_) => {
                    crate::mqtt::session::shutdown(&mut self.sh, h);
                    self.sh.close(h, CloseReason::Shutdown, Some((frame::CLOSE_GOING_AWAY, "server shutdown")));
                }
                Proto::Http | Proto::RawHandshake => self.sh.end_conn(h, CloseReason::Shutdown),
                Proto::Closed => {}
            }
        }
    }

    fn shutdown_complete(&mut self) -> bool {
        let Some(deadline) = self.shutdown_deadline else { return false };
        let flushed = self.sh.conns.iter().all(|(_, c)| c.out.is_empty());
        if flushed || self.sh.now >= deadline {
            let handles: Vec<usize> = self.sh.conns.iter().map(|(h, _)| h).collect();
            for h in handles {
                self.drop_conn(h);
            }
            return true;
        }
        false
    }
}
