//! A worker thread: one `mio::Poll`, its connections, its inbox, its copy of
//! the routing tables. The loop is thin: readiness in, bytes to the protocol
//! layer, bytes out. Nothing here blocks: sockets are non-blocking, peer
//! queues are bounded and overflow into per-peer lists, and the inbox is
//! drained with `try_recv`.
//!
//! - `peers.rs`: sending to other workers (bounded channel + overflow + wake).
//! - `core.rs`: the protocol-neutral operations (subscribe, publish, call
//!   routing) and the handling of every `ShardMsg`.
//! - `crate::wamp::session`: WAMP messages to core operations and back.

pub mod core;
mod keys;
pub mod peers;
mod raw;

use crate::config::Config;
use crate::conn::{Buf, Conn, Proto};
use crate::metrics::{CloseReason, Snapshot, WorkerMetrics};
use crate::mqtt::session::{MqttConn, MqttState};
use crate::router::owner::Owner;
use crate::router::procs::ProcTable;
use crate::router::retained::RetainedStore;
use crate::router::topics::TopicTable;
use crate::router::{IdGen, Listener, Member, ShardMsg, SubKey, WorkerId};
use crate::wamp::session::{Framing, WampConn};
use crate::ws::frame::{self, Opcode};
use crate::ws::handshake::{self, Endpoint, Outcome};
use ahash::AHashMap;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use peers::Peers;
use slab::Slab;
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
const LINGER: Duration = Duration::from_secs(2);

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
    pub metrics: Option<Sender<(usize, Snapshot)>>,
    /// The store thread's channel (none under `--durability none`).
    pub store: Option<Sender<crate::store::thread::StoreReq>>,
    /// Retained values read back from the store, for the topics this worker owns.
    pub retained: Vec<Arc<crate::router::Publication>>,
    /// History events read back from the store, for the topics this worker owns.
    pub history: Vec<crate::router::history::Recorded>,
}

pub struct Worker {
    pub id: WorkerId,
    pub workers: usize,
    pub cfg: Arc<Config>,
    poll: Poll,
    inbox: Receiver<ShardMsg>,
    pub peers: Peers,
    pub conns: Slab<Conn>,
    /// Session ID -> connection handle, for sessions on this worker.
    pub sessions: AHashMap<u64, usize>,
    pub topics: TopicTable,
    pub procs: ProcTable,
    pub owner: Owner,
    pub ids: IdGen,
    pub local_keys: AHashMap<SubKey, LocalKey>,
    pub local_subs: AHashMap<u64, LocalSub>,
    pub mqtt: MqttState,
    pub retained: RetainedStore,
    pub metrics: WorkerMetrics,
    metrics_tx: Option<Sender<(usize, Snapshot)>>,
    next_metrics: Option<Instant>,
    endpoints: Vec<Endpoint>,
    scratch: Buf,
    dirty: Vec<usize>,
    resume: Vec<usize>,
    /// Connections whose outbound queue refused an event.
    slow: Vec<usize>,
    /// Connections lingering after their close.
    lingering: Vec<usize>,
    /// New connections and their open deadline, oldest first.
    opening: std::collections::VecDeque<(usize, u64, Instant)>,
    next_serial: u64,
    /// Coarse time of this loop iteration.
    pub now: Instant,
    shutdown_deadline: Option<Instant>,
    pub(crate) publish_targets: Vec<bool>,
    pub(crate) match_scratch: Vec<(u64, crate::router::MatchPolicy)>,
    pub(crate) mqtt_hits: Vec<(usize, u64)>,
    pub(crate) share_rr: usize,
    /// WAMP call timeouts of this worker's callers: (deadline, caller
    /// session, request), earliest first. An entry leaves when its call
    /// ends, so there is at most one per call in flight with a timeout.
    pub(crate) call_deadlines: std::collections::BTreeSet<(Instant, u64, u64)>,
    /// WAMP meta calls waiting for other workers' answers, by gather ID.
    pub(crate) gathers: AHashMap<u64, crate::wamp::session::Gathering>,
    pub(crate) next_gather: u64,
    /// This worker's end of the store channel.
    pub(crate) store: Option<crate::store::thread::StoreLink>,
    /// Acknowledgements waiting for the store, by ticket.
    pub(crate) pending_acks: AHashMap<u64, core::PendingAck>,
    pub(crate) next_ticket: u64,
    /// History of the topics this worker owns.
    pub history: crate::router::history::History,
}

impl Worker {
    pub fn new(s: Setup) -> Worker {
        let workers = s.senders.len();
        let now = Instant::now();
        let mut endpoints = vec![Endpoint {
            path: s.config.path.clone(),
            protocols: &["wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"],
        }];
        if let Some(path) = &s.config.mqtt.ws_path {
            endpoints.push(Endpoint { path: path.clone(), protocols: &["mqtt"] });
        }
        let mut retained = RetainedStore::default();
        for p in s.retained {
            retained.set(p);
        }
        let mut history = crate::router::history::History::default();
        for e in s.history {
            history.restore(e);
        }
        Worker {
            id: s.id,
            workers,
            poll: s.poll,
            inbox: s.inbox,
            peers: Peers::new(s.id, s.senders, s.wakers),
            conns: Slab::new(),
            sessions: AHashMap::new(),
            topics: TopicTable::default(),
            procs: ProcTable::default(),
            owner: Owner::new(s.id, workers),
            ids: IdGen::new(s.id, workers),
            local_keys: AHashMap::new(),
            local_subs: AHashMap::new(),
            mqtt: MqttState::new(s.id, s.config.mqtt.sys_interval, now),
            retained,
            metrics: WorkerMetrics::default(),
            next_metrics: s.metrics.as_ref().and(crate::metrics::interval(&s.config.metrics)).map(|i| now + i),
            metrics_tx: s.metrics,
            endpoints,
            scratch: Buf::with_capacity(SCRATCH),
            dirty: Vec::new(),
            resume: Vec::new(),
            slow: Vec::new(),
            lingering: Vec::new(),
            opening: std::collections::VecDeque::new(),
            next_serial: 0,
            now,
            shutdown_deadline: None,
            publish_targets: vec![false; workers],
            match_scratch: Vec::new(),
            mqtt_hits: Vec::new(),
            share_rr: 0,
            call_deadlines: Default::default(),
            gathers: AHashMap::new(),
            next_gather: 0,
            store: s.store.map(crate::store::thread::StoreLink::new),
            pending_acks: AHashMap::new(),
            next_ticket: 0,
            history,
            cfg: s.config,
        }
    }

    /// Runs until shutdown is complete.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut inbox_more = false;
        loop {
            let busy = inbox_more || !self.peers.local.is_empty() || !self.resume.is_empty();
            let timeout = if busy { Duration::ZERO } else { next_tick.saturating_duration_since(Instant::now()) };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("worker {}: poll failed: {e}", self.id);
                }
            }
            self.now = Instant::now();
            // Inbox first: a route change that arrived with a PUBLISH in the
            // same wake-up is applied before the PUBLISH is routed.
            inbox_more = self.drain_inbox();
            for ev in events.iter() {
                let Token(handle) = ev.token();
                if ev.token() == WAKER || !self.conns.contains(handle) {
                    continue;
                }
                if ev.is_writable() {
                    self.mark_dirty(handle);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.readable(handle);
                }
            }
            inbox_more |= self.drain_inbox();
            if !self.congested() {
                for handle in std::mem::take(&mut self.resume) {
                    if let Some(c) = self.conns.get_mut(handle) {
                        c.resume = false;
                        self.readable(handle);
                    }
                }
            }
            self.flush_dirty();
            self.peers.flush();
            if let Some(store) = &mut self.store {
                store.flush();
            }
            if self.now >= next_tick {
                next_tick = self.now + TICK;
                self.housekeeping();
                if self.shutdown_complete() {
                    break;
                }
            }
        }
        if let Some(tx) = self.metrics_tx.take() {
            let _ = tx.try_send((self.id as usize, self.metrics.snapshot()));
        }
    }

    /// A peer inbox or the store channel is full: sockets are not read
    /// until it drains (TCP backpressure reaches the producers).
    fn congested(&self) -> bool {
        self.peers.congested() || self.store.as_ref().is_some_and(|s| s.congested())
    }

    /// Handles up to `INBOX_BATCH` messages; true if more are waiting.
    fn drain_inbox(&mut self) -> bool {
        let mut n = 0;
        loop {
            while let Some(msg) = self.peers.local.pop_front() {
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

    pub(crate) fn accept(&mut self, mut stream: TcpStream, listener: Listener) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let handle = entry.key();
        if let Err(e) =
            self.poll.registry().register(&mut stream, Token(handle), Interest::READABLE | Interest::WRITABLE)
        {
            eprintln!("fennec: worker {}: cannot register connection: {e}", self.id);
            return;
        }
        self.next_serial += 1;
        let mut conn = Conn::new(stream, self.next_serial);
        match listener {
            Listener::Mqtt => conn.proto = Proto::Mqtt(Box::new(MqttConn::new(false, self.now))),
            Listener::RawSocket => conn.proto = Proto::RawHandshake,
            Listener::Http => {}
        }
        entry.insert(conn);
        self.opening.push_back((handle, self.next_serial, self.now + self.cfg.limits.open_timeout));
    }

    fn mark_dirty(&mut self, handle: usize) {
        let c = &mut self.conns[handle];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(handle);
        }
    }

    /// Queues bytes that must reach the client (replies, control frames).
    /// Over twice the queue bound, the session is closed as a slow consumer:
    /// a client that keeps asking without reading gets no unbounded memory.
    pub fn send_bytes(&mut self, handle: usize, bytes: Bytes) {
        let limits = &self.cfg.limits;
        let c = &mut self.conns[handle];
        if c.out.bytes() + bytes.len() > 2 * limits.outbound_queue_bytes
            || c.out.messages() >= 2 * limits.outbound_queue_messages
        {
            if !c.is_closed() {
                self.close(handle, CloseReason::SlowConsumer, Some((frame::CLOSE_POLICY, "outbound queue full")));
            }
            return;
        }
        self.metrics.counters.messages_out += 1;
        c.out.push(bytes);
        self.mark_dirty(handle);
    }

    /// Queues an event, or drops and counts it if the queue is full. Returns
    /// whether it was queued.
    pub fn send_event(&mut self, handle: usize, bytes: Bytes) -> bool {
        let limits = &self.cfg.limits;
        let c = &mut self.conns[handle];
        // An empty queue takes any one event, however large (up to the
        // message bound), so a message over the queue's byte bound is not
        // undeliverable: the queue then holds at most bound + one message.
        let full = c.out.bytes() + bytes.len() > limits.outbound_queue_bytes && !c.out.is_empty();
        if full || c.out.messages() >= limits.outbound_queue_messages {
            self.metrics.counters.events_dropped += 1;
            if c.over_since.is_none() {
                c.over_since = Some(self.now);
                self.slow.push(handle);
            }
            return false;
        }
        self.metrics.counters.messages_out += 1;
        c.out.push(bytes);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(handle);
        }
        true
    }

    fn flush_dirty(&mut self) {
        for handle in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(handle) else { continue };
            c.dirty = false;
            match c.out.write_to(&mut c.stream) {
                Ok(n) => self.metrics.counters.bytes_out += n as u64,
                Err(_) => {
                    c.out = Default::default();
                    if c.is_closed() {
                        self.drop_conn(handle);
                    } else {
                        self.close(handle, CloseReason::Lost, None);
                    }
                    continue;
                }
            }
            let c = &mut self.conns[handle];
            if c.over_since.is_some() && c.out.bytes() <= self.cfg.limits.outbound_queue_bytes / 2 {
                c.over_since = None;
            }
            if c.is_closed() && c.out.is_empty() && !c.write_shut {
                // Everything said: send FIN, then wait (bounded) for the
                // peer's EOF so that unread input does not turn into a RST
                // that could destroy our last frames.
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                c.write_shut = true;
            }
        }
    }

    /// Reads the connection's input again (after a pause).
    pub fn resume_reading(&mut self, handle: usize) {
        let c = &mut self.conns[handle];
        if !c.resume {
            c.resume = true;
            self.resume.push(handle);
        }
    }

    /// Reads and handles what the connection's socket holds now, out of the
    /// loop's turn (used when an inbox message depends on that input).
    pub fn read_now(&mut self, handle: usize) {
        if self.conns.contains(handle) && !self.conns[handle].is_closed() {
            self.readable(handle);
        }
    }

    /// Reads what the socket has and hands it to the protocol layer.
    fn readable(&mut self, handle: usize) {
        if self.conns[handle].paused {
            return; // resumed explicitly (resume_reading)
        }
        if self.congested() {
            // A peer inbox is full: leave the bytes in the socket so that TCP
            // backpressure reaches the producer. Resumed once it drains.
            let c = &mut self.conns[handle];
            if !c.resume {
                c.resume = true;
                self.resume.push(handle);
            }
            return;
        }
        let c = &mut self.conns[handle];
        let from_scratch = c.input.is_empty();
        let mut buf = if from_scratch { std::mem::take(&mut self.scratch) } else { std::mem::take(&mut c.input) };
        let mut budget = READ_BUDGET;
        let mut eof = false;
        if !from_scratch && !self.conns[handle].is_closed() {
            // Input kept from before a pause may hold whole packets.
            self.process_input(handle, &mut buf);
            if !self.conns.contains(handle) || self.conns[handle].paused {
                return self.keep_input(handle, buf, false);
            }
        }
        loop {
            let c = &mut self.conns[handle];
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(SCRATCH.max(buf.len()));
            } else {
                buf.reserve(4096);
            }
            match c.stream.read(buf.spare_mut()) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    buf.filled(n);
                    budget = budget.saturating_sub(n);
                    self.metrics.counters.bytes_in += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
            if self.conns[handle].is_closed() {
                buf.clear(); // lingering: discard
            } else {
                self.process_input(handle, &mut buf);
            }
            if !self.conns.contains(handle) || self.conns[handle].paused {
                break;
            }
            // Out of budget, or a peer inbox filled up: stop, and read again
            // on a later turn. The socket may still hold input, and readiness
            // is edge-triggered: no new event will say so if the peer has
            // already sent everything (it waits for our answer).
            if budget == 0 || self.congested() {
                let c = &mut self.conns[handle];
                if !c.resume {
                    c.resume = true;
                    self.resume.push(handle);
                }
                break;
            }
        }
        self.keep_input(handle, buf, from_scratch);
        if eof && self.conns.contains(handle) {
            if self.conns[handle].is_closed() {
                self.drop_conn(handle);
            } else {
                self.close(handle, CloseReason::Lost, None);
                self.drop_conn(handle);
            }
        }
    }

    /// Gives the buffer back: the worker's scratch, or the connection's own
    /// input when a partial frame remains.
    fn keep_input(&mut self, handle: usize, mut buf: Buf, is_scratch: bool) {
        match self.conns.get_mut(handle) {
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
        let max = self.cfg.limits.max_message_size;
        loop {
            if buf.is_empty() {
                return;
            }
            let Some(c) = self.conns.get_mut(handle) else { return };
            match &c.proto {
                Proto::Closed => {
                    buf.clear();
                    return;
                }
                Proto::Http => match handshake::handle(buf.data(), &self.endpoints) {
                    Outcome::Incomplete => return,
                    Outcome::Reject { response } => {
                        buf.clear();
                        self.send_bytes(handle, Bytes::from(response));
                        self.end_conn(handle, CloseReason::Handshake);
                        return;
                    }
                    Outcome::Upgrade { protocol, response, consumed, .. } => {
                        buf.consume(consumed);
                        self.conns[handle].proto = if protocol == "mqtt" {
                            Proto::Mqtt(Box::new(MqttConn::new(true, self.now)))
                        } else {
                            let ser = crate::wamp::message::Serializer::from_subprotocol(protocol).expect("offered");
                            Proto::Wamp(Box::new(WampConn::new(ser, Framing::WebSocket)))
                        };
                        self.send_bytes(handle, Bytes::from(response));
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
                Proto::Mqtt(m) if !m.ws => return crate::mqtt::session::on_bytes(self, handle, buf),
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
            Opcode::Ping => self.send_bytes(handle, Bytes::from(frame::frame(Opcode::Pong, payload))),
            Opcode::Pong => {}
            Opcode::Close => {
                // Echo the status code, then close.
                let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1000 };
                let echo = if code == 1005 || code == 1006 || code == 1015 { frame::CLOSE_NORMAL } else { code };
                self.close(handle, CloseReason::Client, Some((echo, "")));
            }
            Opcode::Text | Opcode::Binary if fin => {
                if self.conns[handle].fragment_opcode.is_some() {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "expected a continuation frame");
                }
                self.on_message(handle, payload);
            }
            Opcode::Text | Opcode::Binary => {
                let c = &mut self.conns[handle];
                if c.fragment_opcode.is_some() {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "expected a continuation frame");
                }
                c.fragment_opcode = Some(opcode);
                c.fragments = payload.to_vec();
            }
            Opcode::Continuation => {
                let max = self.cfg.limits.max_message_size;
                let c = &mut self.conns[handle];
                if c.fragment_opcode.is_none() {
                    return self.ws_fail(handle, frame::CLOSE_PROTOCOL_ERROR, "continuation without a start");
                }
                if c.fragments.len() + payload.len() > max {
                    return self.ws_fail(handle, frame::CLOSE_TOO_BIG, "message too big");
                }
                c.fragments.extend_from_slice(payload);
                if fin {
                    c.fragment_opcode = None;
                    let whole = std::mem::take(&mut c.fragments);
                    self.on_message(handle, &whole);
                }
            }
        }
    }

    /// A WebSocket-level violation: close with a status code.
    fn ws_fail(&mut self, handle: usize, code: u16, reason: &str) {
        let reason = if code == frame::CLOSE_TOO_BIG {
            format!("{reason}: the limit is {} bytes", self.cfg.limits.max_message_size)
        } else {
            reason.to_owned()
        };
        self.close(handle, CloseReason::ProtocolViolation, Some((code, &reason)));
    }

    fn on_message(&mut self, handle: usize, payload: &[u8]) {
        if let Proto::Mqtt(_) = self.conns[handle].proto {
            return crate::mqtt::session::on_ws_message(self, handle, payload);
        }
        self.metrics.counters.messages_in += 1;
        crate::wamp::session::on_message(self, handle, payload);
    }

    /// Ends the session on `handle` (cleaning up its state on every shard),
    /// sends a WebSocket close frame if given, and closes the connection once
    /// its queue is flushed.
    pub fn close(&mut self, handle: usize, reason: CloseReason, ws_close: Option<(u16, &str)>) {
        if !self.conns.contains(handle) || self.conns[handle].is_closed() {
            return;
        }
        let c = &mut self.conns[handle];
        let ws = match &c.proto {
            Proto::Wamp(w) => w.framing == Framing::WebSocket,
            Proto::Mqtt(m) => m.ws,
            Proto::Http | Proto::RawHandshake | Proto::Closed => false,
        };
        if let (Some((code, text)), true) = (ws_close, ws) {
            // Bypass the bound: the close frame is the last thing sent.
            c.out.push(Bytes::from(frame::close_frame(code, text)));
        }
        self.end_conn(handle, reason);
    }

    /// Marks the connection closed after cleaning up its session.
    fn end_conn(&mut self, handle: usize, reason: CloseReason) {
        let proto = std::mem::replace(&mut self.conns[handle].proto, Proto::Closed);
        match proto {
            Proto::Wamp(w) => crate::wamp::session::on_close(self, handle, *w, reason),
            Proto::Mqtt(m) => crate::mqtt::session::on_close(self, handle, *m, reason),
            _ if reason == CloseReason::Handshake => self.metrics.closed(reason),
            _ => {}
        }
        let c = &mut self.conns[handle];
        c.fragments = Vec::new();
        c.input.release();
        c.close_deadline = Some(self.now + LINGER);
        self.lingering.push(handle);
        self.mark_dirty(handle);
    }

    /// Forgets the connection (closes the socket).
    fn drop_conn(&mut self, handle: usize) {
        if !self.conns.contains(handle) {
            return;
        }
        if !self.conns[handle].is_closed() {
            self.close(handle, CloseReason::Lost, None);
        }
        let mut c = self.conns.remove(handle);
        let _ = self.poll.registry().deregister(&mut c.stream);
    }

    fn housekeeping(&mut self) {
        let now = self.now;
        // Slow consumers past their grace period.
        let grace = self.cfg.limits.slow_grace;
        let mut slow = std::mem::take(&mut self.slow);
        slow.retain(|&h| {
            let Some(c) = self.conns.get(h) else { return false };
            let Some(since) = c.over_since else { return false };
            if c.is_closed() {
                return false;
            }
            if now.duration_since(since) >= grace && crate::wamp::session::closes_when_slow(self, h) {
                let text = format!("slow consumer: outbound queue full for more than {} ms", grace.as_millis());
                crate::mqtt::session::slow(self, h, &text);
                self.close(h, CloseReason::SlowConsumer, Some((frame::CLOSE_POLICY, &text)));
                return false;
            }
            true
        });
        self.slow.append(&mut slow);
        // Connections that did not open a session in time.
        while let Some(&(h, serial, deadline)) = self.opening.front() {
            if deadline > now {
                break;
            }
            self.opening.pop_front();
            let Some(c) = self.conns.get(h).filter(|c| c.serial == serial) else { continue };
            match &c.proto {
                Proto::Http | Proto::RawHandshake => self.end_conn(h, CloseReason::Handshake),
                Proto::Wamp(w) if w.session.is_none() => {
                    let text = format!("no HELLO within {} ms", self.cfg.limits.open_timeout.as_millis());
                    self.close(h, CloseReason::Handshake, Some((frame::CLOSE_POLICY, &text)));
                }
                Proto::Mqtt(m) if m.version.is_none() => {
                    self.close(h, CloseReason::Handshake, Some((frame::CLOSE_POLICY, "no CONNECT in time")))
                }
                _ => {}
            }
        }
        // Closed connections past their deadline, flushed or not.
        let mut lingering = std::mem::take(&mut self.lingering);
        lingering.retain(|&h| match self.conns.get(h).and_then(|c| c.close_deadline) {
            Some(until) if now >= until => {
                self.drop_conn(h);
                false
            }
            Some(_) => true,
            None => false,
        });
        self.lingering.append(&mut lingering);
        crate::mqtt::session::housekeeping(self);
        crate::wamp::session::expire_calls(self);
        crate::wamp::session::expire_gathers(self);
        // Metrics.
        if let Some(at) = self.next_metrics {
            if now >= at {
                self.next_metrics = Some(at + self.cfg.metrics.interval);
                if let Some(tx) = &self.metrics_tx {
                    let _ = tx.try_send((self.id as usize, self.metrics.snapshot()));
                }
            }
        }
    }

    /// Starts shutdown: every session gets GOODBYE, queues flush for a bounded time.
    pub(crate) fn begin_shutdown(&mut self) {
        self.shutdown_deadline = Some(self.now + self.cfg.shutdown_grace);
        let handles: Vec<usize> = self.conns.iter().map(|(h, _)| h).collect();
        for h in handles {
            match self.conns[h].proto {
                Proto::Wamp(_) => {
                    crate::wamp::session::shutdown(self, h);
                    self.close(h, CloseReason::Shutdown, Some((frame::CLOSE_GOING_AWAY, "server shutdown")));
                }
                Proto::Mqtt(_) => {
                    crate::mqtt::session::shutdown(self, h);
                    self.close(h, CloseReason::Shutdown, Some((frame::CLOSE_GOING_AWAY, "server shutdown")));
                }
                Proto::Http | Proto::RawHandshake => self.end_conn(h, CloseReason::Shutdown),
                Proto::Closed => {}
            }
        }
    }

    fn shutdown_complete(&mut self) -> bool {
        let Some(deadline) = self.shutdown_deadline else { return false };
        let flushed = self.conns.iter().all(|(_, c)| c.out.is_empty());
        if flushed || self.now >= deadline {
            let handles: Vec<usize> = self.conns.iter().map(|(h, _)| h).collect();
            for h in handles {
                self.drop_conn(h);
            }
            return true;
        }
        false
    }
}
