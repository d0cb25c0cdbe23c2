//! What the protocol sessions see of their worker: the shard's routing
//! state (its copies of the replicated tables, the keys it owns, its
//! sessions) and the effects a session may have on connections (queue
//! bytes, queue an event, close, pause and resume input), but not the event
//! loop: no poll, no inbox, no socket reads. A session's path from a decoded
//! message to its replies and shard messages stays inside the session layer,
//! `core.rs` and this struct, so it runs the same without sockets
//! (`testkit.rs` drives shards that way).
//!
//! The worker (`mod.rs`) owns the loop around it: it reads the sockets,
//! hands the bytes to the sessions, flushes what they queued (`dirty`),
//! resumes what they paused (`resume`), and drops what they closed once it
//! has lingered (`lingering`).

use super::{LocalKey, LocalSub, LINGER};
use crate::config::Config;
use crate::conn::{Conn, Frame, Proto};
use crate::metrics::{CloseReason, WorkerMetrics};
use crate::mqtt::session::MqttState;
use crate::router::owner::Owner;
use crate::router::procs::ProcTable;
use crate::router::retained::RetainedStore;
use crate::router::topics::TopicTable;
use crate::router::{IdGen, ShardMsg, SubKey, WorkerId};
use crate::store::thread::{StoreLink, StoreReq};
use crate::wamp::session::Framing;
use crate::ws::frame;
use ahash::AHashMap;
use bytes::Bytes;
use crossbeam_channel::Sender;
use mio::Waker;
use slab::Slab;
use std::sync::Arc;
use std::time::Instant;

use super::peers::Peers;

/// How often emptied outbound queues are swept for the rings they kept.
const RING_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Most names (realms, roles, MQTT's realm-and-role authorizer keys) a
/// shard shares between its sessions (`Shard::shared_name`). First come,
/// kept: a router open to any realm name may fill it with names clients
/// made up, after which new names are copies (memory, not correctness).
const SHARED_NAMES: usize = 64;

pub struct Shard {
    pub id: WorkerId,
    pub workers: usize,
    pub cfg: Arc<Config>,
    pub peers: Peers,
    pub conns: Slab<Conn>,
    /// Session ID -> connection handle, for WAMP sessions on this shard.
    pub sessions: AHashMap<u64, usize>,
    pub topics: TopicTable,
    pub procs: ProcTable,
    /// The last sessions that ended here (`inspect::note_close`, bounded).
    pub recent_closes: std::collections::VecDeque<crate::inspect::CloseInfo>,
    pub owner: Owner,
    pub ids: IdGen,
    pub local_keys: AHashMap<SubKey, LocalKey>,
    pub local_subs: AHashMap<u64, LocalSub>,
    pub mqtt: MqttState,
    pub retained: RetainedStore,
    pub metrics: WorkerMetrics,
    /// What the sessions that ended here counted, per realm.
    pub realm_totals: crate::metrics::RealmTotals,
    /// Names shared by this shard's sessions
    /// (`shared_name`), at most `SHARED_NAMES`: a session holds a
    /// reference to them, not a copy.
    shared_names: Vec<Arc<str>>,
    /// When the connections' emptied queues are next swept for the
    /// rings they kept (`OutQueue::sweep`).
    ring_sweep: Instant,
    /// Coarse time of this loop iteration.
    pub now: Instant,
    /// Connections with bytes to flush at the end of this loop iteration.
    pub(crate) dirty: Vec<usize>,
    /// Connections whose input is to be read again (after a pause, or when
    /// reading stopped for backpressure or its budget).
    pub(crate) resume: Vec<usize>,
    /// Connections whose outbound queue refused an event.
    pub(crate) slow: Vec<usize>,
    /// Connections lingering after their close.
    pub(crate) lingering: Vec<usize>,
    pub(crate) publish_targets: Vec<bool>,
    pub(crate) match_scratch: Vec<(u64, crate::router::MatchPolicy)>,
    pub(crate) mqtt_hits: Vec<(usize, u64)>,
    /// Chunks for the connections' outbound queues (see `conn::OutQueue`).
    pub out_pool: crate::conn::ChunkPool,
    /// Where a WAMP message is encoded and framed before it is queued.
    pub(crate) frame_buf: Vec<u8>,
    /// The framed EVENTs of the publication being delivered.
    pub(crate) event_cache: crate::wamp::session::EventCache,
    /// WAMP call timeouts of this shard's callers: (deadline, caller
    /// session, request), earliest first. An entry leaves when its call
    /// ends, so there is at most one per call in flight with a timeout.
    pub(crate) call_deadlines: std::collections::BTreeSet<(Instant, u64, u64)>,
    /// WAMP meta calls waiting for other workers' answers, by gather ID.
    pub(crate) gathers: AHashMap<u64, crate::wamp::session::Gathering>,
    /// WAMP history replays waiting for their answers: (deadline, handle,
    /// session, subscription), oldest first (one timeout for all); one
    /// per replay begun, gone by its deadline.
    pub(crate) replay_deadlines: std::collections::VecDeque<(Instant, usize, u64, u64)>,
    pub(crate) next_gather: u64,
    /// This shard's end of the store channel.
    pub(crate) store: Option<StoreLink>,
    /// This shard's end of the cluster thread's channel (`--cluster`).
    pub(crate) cluster: Option<crate::cluster::ClusterLink>,
    /// Whether the node is connected to NATS (`--cluster`; `cut_off`).
    pub(crate) cluster_up: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Which other nodes of the cluster have subscribers of what: routes
    /// whose "workers" are node numbers (`ShardMsg::RemoteRoute`).
    pub remote_topics: TopicTable,
    pub(crate) remote_targets: Vec<crate::cluster::NodeId>,
    /// Keys with writes of this worker's on their way to the cluster's
    /// keys bucket (`Shard::retained_from_cluster`).
    pub(crate) key_sync: AHashMap<(crate::router::Realm, String), super::keys::KeySync>,
    /// The other live nodes and how many workers each has
    /// (`ShardMsg::NodeWorkers`).
    pub(crate) cluster_nodes: Vec<(crate::cluster::NodeId, u16)>,
    /// Other nodes' registrations (`ShardMsg::RemoteProcs`).
    pub remote_procs: crate::cluster::procs::RemoteProcs,
    /// This worker's round-robin turn over registrations with callees on
    /// other nodes (one rotation per caller worker).
    pub(crate) remote_rr: usize,
    /// Acknowledgements waiting for the store, by ticket.
    pub(crate) pending_acks: AHashMap<u64, super::core::Waiting>,
    pub(crate) next_ticket: u64,
    /// History of the topics this shard owns.
    pub history: crate::router::history::History,
    /// Dynamic authorizers' decisions kept (bounded).
    pub(crate) authz_cache: crate::wamp::session::DecisionCache,
    /// Messages waiting for a dynamic authorizer, by the router's request.
    pub(crate) authz_parked: AHashMap<u64, crate::wamp::session::Parked>,
    pub(crate) next_authz: u64,
    /// MQTT packets waiting for a dynamic authorizer, by request.
    pub(crate) mqtt_authz: AHashMap<u64, crate::mqtt::session::MqttParked>,
    /// MQTT CONNECTs waiting for the realm's authenticator, by the router
    /// call's request (at most one per connection: it reads nothing more
    /// meanwhile; each gone by the 5 s answer timeout).
    pub(crate) mqtt_authn: AHashMap<u64, crate::mqtt::session::MqttAsking>,
    /// Authentications waiting for a dynamic authenticator, by request.
    pub(crate) authn_pending: AHashMap<u64, crate::wamp::session::Asking>,
    /// Failed authentications per peer address (WAMP and MQTT).
    pub(crate) auth_throttle: crate::wamp::session::Throttle,
    /// Reductions at this owner (`worker::reduce`).
    pub reductions: super::reduce::Reductions,
    /// The aggregate rows this shard owns (`worker::tables`).
    pub table_rows: AHashMap<(crate::router::Realm, String), crate::tables::engine::AggRow>,
    /// `deliver` wrote something for a persistent MQTT session.
    pub(crate) delivery_stored: bool,
    /// Told this shard's ID once the MQTT sessions restored at start are
    /// routed (then dropped).
    pub(crate) ready: Option<Sender<WorkerId>>,
}

/// What a shard is made of (the worker's `Setup`, less the loop's parts).
pub struct ShardSetup {
    pub id: WorkerId,
    pub config: Arc<Config>,
    pub senders: Vec<Sender<ShardMsg>>,
    pub wakers: Vec<Arc<Waker>>,
    pub store: Option<Sender<StoreReq>>,
    pub cluster: Option<crate::cluster::ClusterChannel>,
    pub retained: Vec<Arc<crate::router::Publication>>,
    pub history: Vec<crate::router::history::Recorded>,
    /// The aggregate rows this shard owns, rebuilt at start.
    pub table_rows: Vec<((crate::router::Realm, String), crate::tables::engine::AggRow)>,
    pub ready: Option<Sender<WorkerId>>,
    pub now: Instant,
}

impl Shard {
    /// Hands the messages for other nodes' workers to the cluster link and
    /// moves what waits in the link into its channel (once per iteration).
    pub fn flush_cluster(&mut self) {
        let Some(link) = &mut self.cluster else {
            debug_assert!(self.peers.remote.is_empty(), "another node's worker named without a cluster");
            self.peers.remote.clear();
            return;
        };
        for (node, worker, msg) in self.peers.remote.drain(..) {
            link.send(crate::cluster::ClusterReq::Rpc { node, worker, msg });
        }
        link.flush();
    }

    /// In a cluster, whether the node is cut off from NATS: then it takes
    /// no new sessions (WAMP ABORT, MQTT CONNACK "server unavailable"), so
    /// that clients go to a node that can serve them with the cluster's
    /// state, rather than this one diverging from it.
    pub fn cut_off(&self) -> bool {
        self.cluster_up.as_ref().is_some_and(|up| !up.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// A realm or role name as a session keeps it: this shard's shared
    /// copy (a reference count, no allocation) once a session has used
    /// it. Past `SHARED_NAMES` names (a router open to any realm name) a
    /// new name is a copy of its own.
    pub fn shared_name(&mut self, name: &str) -> Arc<str> {
        if let Some(r) = self.shared_names.iter().find(|r| &***r == name) {
            return r.clone();
        }
        let r: Arc<str> = name.into();
        if self.shared_names.len() < SHARED_NAMES {
            self.shared_names.push(r.clone());
        }
        r
    }

    pub fn new(s: ShardSetup) -> Shard {
        let workers = s.senders.len();
        let mut ids = IdGen::new(s.id, workers);
        if s.config.cluster.is_some() {
            ids.start_at_random();
        }
        let mut retained = RetainedStore::default();
        for p in s.retained {
            retained.set(p);
        }
        let mut history = crate::router::history::History::default();
        for e in s.history {
            history.restore(e);
        }
        Shard {
            id: s.id,
            workers,
            peers: Peers::new(s.id, s.senders, s.wakers),
            conns: Slab::new(),
            sessions: AHashMap::new(),
            topics: TopicTable::default(),
            procs: ProcTable::default(),
            recent_closes: std::collections::VecDeque::with_capacity(crate::inspect::RECENT_CLOSES),
            owner: {
                let mut o = Owner::new(s.id, workers);
                o.cluster = s.cluster.is_some();
                o
            },
            ids,
            local_keys: AHashMap::new(),
            local_subs: AHashMap::new(),
            mqtt: MqttState::new(s.id, s.config.mqtt.sys_interval, s.now),
            retained,
            metrics: WorkerMetrics::default(),
            realm_totals: Default::default(),
            shared_names: Vec::new(),
            ring_sweep: s.now + RING_SWEEP,
            now: s.now,
            dirty: Vec::new(),
            resume: Vec::new(),
            slow: Vec::new(),
            lingering: Vec::new(),
            publish_targets: vec![false; workers],
            match_scratch: Vec::new(),
            mqtt_hits: Vec::new(),
            out_pool: Default::default(),
            frame_buf: Vec::new(),
            event_cache: Default::default(),
            call_deadlines: Default::default(),
            gathers: AHashMap::new(),
            replay_deadlines: Default::default(),
            next_gather: 0,
            store: s.store.map(StoreLink::new),
            cluster_up: s.cluster.as_ref().map(|(_, up)| up.clone()),
            cluster: s.cluster.map(|(tx, _)| crate::cluster::ClusterLink::new(tx)),
            remote_topics: TopicTable::default(),
            remote_targets: Vec::new(),
            remote_procs: Default::default(),
            cluster_nodes: Vec::new(),
            key_sync: AHashMap::new(),
            remote_rr: 0,
            pending_acks: AHashMap::new(),
            next_ticket: 0,
            history,
            delivery_stored: false,
            reductions: Default::default(),
            table_rows: s.table_rows.into_iter().collect(),
            auth_throttle: Default::default(),
            authz_cache: Default::default(),
            authz_parked: AHashMap::new(),
            next_authz: 0,
            authn_pending: AHashMap::new(),
            mqtt_authz: AHashMap::new(),
            mqtt_authn: AHashMap::new(),
            ready: s.ready,
            cfg: s.config,
        }
    }

    /// A peer inbox, the store or the cluster channel is full: sockets are not read
    /// until it drains (TCP backpressure reaches the producers).
    pub fn congested(&self) -> bool {
        self.peers.congested()
            || self.store.as_ref().is_some_and(|s| s.congested())
            || self.cluster.as_ref().is_some_and(|c| c.congested())
    }

    pub(crate) fn mark_dirty(&mut self, handle: usize) {
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
        self.send_frame(handle, Frame::Shared(&bytes))
    }

    /// `send_bytes` for a frame that may be a borrowed slice.
    pub fn send_frame(&mut self, handle: usize, frame: Frame) {
        if self.queue_bytes(handle, frame) {
            self.metrics.counters.messages_out += 1;
            self.conns[handle].stats.msgs_out += 1;
        }
    }

    /// Queues bytes that are no message (a handshake's answer, a pong),
    /// under the same bound as `send_bytes`, not counted as messages.
    pub fn send_control(&mut self, handle: usize, bytes: &[u8]) {
        self.queue_bytes(handle, Frame::Slice(bytes));
    }

    /// Queues `bytes` for `send_bytes` and `send_control`; false if the
    /// connection was closed instead.
    fn queue_bytes(&mut self, handle: usize, frame: Frame) -> bool {
        let limits = &self.cfg.limits;
        let c = &mut self.conns[handle];
        if c.out.bytes() + frame.len() > 2 * limits.outbound_queue_bytes
            || c.out.messages() >= 2 * limits.outbound_queue_messages
        {
            if !c.is_closed() {
                log::warn!(
                    "worker {}: connection {handle} closed: slow consumer (outbound queue at twice its bound)",
                    self.id
                );
                self.close(handle, CloseReason::SlowConsumer, Some((frame::CLOSE_POLICY, "outbound queue full")));
            }
            return false;
        }
        c.out.push(frame, &mut self.out_pool);
        self.mark_dirty(handle);
        true
    }

    /// Queues an event, or drops and counts it if the queue is full. Returns
    /// whether it was queued.
    pub fn send_event(&mut self, handle: usize, frame: Frame) -> bool {
        let limits = &self.cfg.limits;
        let c = &mut self.conns[handle];
        // An empty queue takes any one event, however large (up to the
        // message bound), so a message over the queue's byte bound is not
        // undeliverable: the queue then holds at most bound + one message.
        let full = c.out.bytes() + frame.len() > limits.outbound_queue_bytes && !c.out.is_empty();
        if full || c.out.messages() >= limits.outbound_queue_messages {
            self.metrics.counters.events_dropped += 1;
            c.stats.dropped += 1;
            if c.over_since.is_none() {
                c.over_since = Some(self.now);
                self.slow.push(handle);
            }
            return false;
        }
        self.metrics.counters.messages_out += 1;
        c.stats.msgs_out += 1;
        c.out.push(frame, &mut self.out_pool);
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(handle);
        }
        true
    }

    /// Counts an event dropped for the client on `handle` (too large for
    /// it, or over a replay's hold bound).
    pub fn drop_event(&mut self, handle: usize) {
        self.metrics.counters.events_dropped += 1;
        if let Some(c) = self.conns.get_mut(handle) {
            c.stats.dropped += 1;
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
            c.out.push(Frame::Slice(&frame::close_frame(code, text)), &mut self.out_pool);
        }
        self.end_conn(handle, reason);
    }

    /// Marks the connection closed after cleaning up its session; the
    /// worker drops it once it has flushed and lingered.
    pub(crate) fn end_conn(&mut self, handle: usize, reason: CloseReason) {
        let proto = std::mem::replace(&mut self.conns[handle].proto, Proto::Closed);
        match proto {
            Proto::Wamp(w) => crate::wamp::session::on_close(self, handle, *w, reason),
            Proto::Mqtt(m) => crate::mqtt::session::on_close(self, handle, *m, reason),
            _ if reason == CloseReason::Handshake => self.metrics.closed(reason),
            _ => {}
        }
        let c = &mut self.conns[handle];
        c.fragmented = None;
        c.input.release();
        c.close_deadline = Some(self.now + LINGER);
        self.lingering.push(handle);
        self.mark_dirty(handle);
    }

    /// The shard's deadlines, every tick: slow consumers past their grace,
    /// MQTT keep-alive, will delays and session expiry, WAMP call timeouts
    /// meta gathers and history replays.
    pub fn tick(&mut self) {
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
                log::warn!("worker {}: connection {h} closed: {text}", self.id);
                self.close(h, CloseReason::SlowConsumer, Some((frame::CLOSE_POLICY, &text)));
                return false;
            }
            true
        });
        self.slow.append(&mut slow);
        if now >= self.ring_sweep {
            self.ring_sweep = now + RING_SWEEP;
            self.out_pool.next_epoch();
            for (_, c) in self.conns.iter_mut() {
                c.out.sweep(&mut self.out_pool);
            }
        }
        crate::mqtt::session::housekeeping(self);
        crate::wamp::session::expire_calls(self);
        crate::wamp::session::expire_gathers(self);
        crate::wamp::session::expire_replays(self);
    }
}
