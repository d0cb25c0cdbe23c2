//! The `cluster` thread: the node's one NATS connection, on a
//! current-thread tokio runtime that nothing else uses.
//!
//! What it does, in one loop (`Node::run`):
//! - requests from the workers (`ClusterReq`): this node's interest, written
//!   to the interest bucket by a writer task in the order the owners sent
//!   it; publications, encoded once and published once per interested node;
//! - publications from other nodes (its one subscription, `<prefix>.n.<me>.>`,
//!   so they arrive in one order), handed to the topic's owner worker;
//! - the interest bucket's watch: other nodes' entries, broadcast to every
//!   worker as `RemoteRoute` while their node is alive;
//! - heartbeats, its own every second and the others' (`<prefix>.hb.*`): a
//!   node silent for `DEAD_AFTER` loses its routes until it is heard again;
//!   one whose connection to NATS is seen gone (`probe`) sooner.
//!
//! Its sends to workers are `try_send`: a full inbox keeps the message in a
//! bounded per-worker overflow (beyond it, events are dropped and counted),
//! because this thread must keep reading NATS.
//!
//! The state and the loop are here; the handlers sit beside them by what
//! they serve: `members.rs` (heartbeats, verdicts, a node lost),
//! `routes.rs` (pub/sub and RPC across nodes), `keys.rs` (retained values
//! and the wills of keys), `mqtt.rs` (MQTT sessions across nodes).

mod keys;
mod members;
mod mqtt;
mod routes;

use super::bucket::{self, Ack, Ctl, Write};
use super::procs::{self, RegEntry, RemoteCallee, RemoteReg};
use super::wire::{self, InterestEntry};
use super::{at_node, rpc, ClusterConfig, ClusterReq, NodeId, MAX_NODES};
use crate::router::procs::InvokePolicy;
use crate::router::{
    owner_of, CallDone, CallOutcome, MatchPolicy, Publication, SessionRef, ShardMsg, SubKey, WorkerId,
};
use ahash::AHashMap;
use async_nats::jetstream::kv;
use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use futures_util::{FutureExt, StreamExt};
use mio::Waker;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node not heard from for this long is taken for dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the others' heartbeats are checked (and late ones asked).
const LIVENESS_CHECK: Duration = Duration::from_millis(250);
/// Messages kept for one worker whose inbox is full; past it events drop.
const OVERFLOW: usize = 65_536;
/// Publications handled per wake-up before the other sources get a turn.
const BATCH: usize = 256;
/// A batch for one node and subject is sent once it holds this much
/// (NATS's default largest message is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;
/// Writes queued for the writer task.
const WRITES: usize = 4096;
/// How long a new subscription waits for one other node to route it.
pub(super) const SYNC_LIMIT: Duration = Duration::from_secs(2);
/// Other nodes' syncs parked until the watch catches up, or waiting for
/// this node's workers; past it a sync is answered at once (degraded:
/// the subscriber's node may see SUBSCRIBED before the route is here).
const SYNCS: usize = 65_536;
/// Where the routing IDs of other nodes' subscriptions start (`next_id`).
const REMOTE_IDS: u64 = crate::wamp::message::MAX_ID / 2;

/// How long the start waits for NATS and the interest bucket.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// What the cluster thread reads from NATS.
struct Streams {
    events: async_nats::Subscriber,
    beats: async_nats::Subscriber,
    /// The keys bucket's watch (retained values).
    keys: kv::Watch,
    watch: kv::Watch,
}

/// The running thread, for the server's shutdown.
pub struct ClusterThread {
    pub thread: std::thread::JoinHandle<()>,
}

/// Connects to NATS, makes or opens the interest bucket, and starts the
/// thread; returns the channel the workers' `ClusterLink`s send on. Fails
/// (the node does not start) when NATS cannot be reached in time.
pub fn start(
    cfg: ClusterConfig,
    workers: Vec<(Sender<ShardMsg>, Arc<Waker>)>,
    metrics: Option<MetricsLink>,
) -> io::Result<(ClusterThread, super::ClusterChannel)> {
    let (tx, rx) = tokio::sync::mpsc::channel(super::QUEUE);
    let connected = Arc::new(AtomicBool::new(false));
    let up = connected.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let thread = std::thread::Builder::new().name("cluster".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("cluster runtime: {e}")));
                return;
            }
        };
        rt.block_on(async move {
            let node = match Node::connect(cfg, workers, connected).await {
                Ok((mut node, streams)) => {
                    node.metrics = metrics;
                    (node, streams)
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let (mut node, mut streams) = node;
            // The other nodes' subscriptions are known before the node
            // takes its first client (its listeners open after this).
            node.catch_up(&mut streams.watch).await;
            node.catch_up_keys(&mut streams.keys).await;
            let _ = ready_tx.send(Ok(()));
            node.run(rx, streams).await;
        });
    })?;
    match ready_rx.recv_timeout(CONNECT_LIMIT + Duration::from_secs(5)) {
        Ok(Ok(())) => Ok((ClusterThread { thread }, (tx, up))),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::Error::other("cluster: no answer from NATS in time")),
    }
}

/// Where the cluster thread's counters go, and how often.
pub type MetricsLink = (Sender<(crate::metrics::Source, crate::metrics::Snapshot)>, Duration);

/// Another node, as this one knows it.
struct Peer {
    name: String,
    incarnation: u64,
    /// Its worker threads (from its heartbeat; 0 until heard).
    workers: u16,
    last_heard: Instant,
    alive: bool,
    /// A question to it is out (`probe::ask`).
    probing: bool,
    /// "No responders" answers in a row since it was last heard.
    gone: u8,
    /// Its interest entries: bucket key -> subscription key.
    entries: AHashMap<String, SubKey>,
}

struct Node {
    cfg: ClusterConfig,
    incarnation: u64,
    client: async_nats::Client,
    kv: kv::Store,
    workers: Vec<(Sender<ShardMsg>, Arc<Waker>)>,
    overflow: Vec<VecDeque<ShardMsg>>,
    to_wake: Vec<bool>,
    peers: Vec<Peer>,
    by_name: AHashMap<String, NodeId>,
    /// One routing ID per remote subscription key, with the number of
    /// live nodes' entries that hold it.
    remote_ids: AHashMap<SubKey, (u64, usize)>,
    /// The last routing ID given. They are the IDs the subscription meta
    /// API shows for subscriptions only other nodes have, so they start at
    /// a random place in the upper half of WAMP's ID range, apart from the
    /// workers' own (`IdGen::start_at_random`: the lower half).
    next_id: u64,
    /// Interest writes for the writer task, in order.
    writes: tokio::sync::mpsc::Sender<Write>,
    /// Barriers of new subscriptions and claims of new registrations the
    /// other nodes have answered for.
    acks: tokio::sync::mpsc::Receiver<Ack>,
    /// Registration entries (`procs::RegEntry`) by bucket key, as the watch
    /// shows them.
    regs: AHashMap<String, RegEntry>,
    /// Where other nodes' dealer messages for this one arrive, up to the
    /// sender's name.
    rpc_inbox: String,
    /// Where the others ask this node whether it is still here.
    ping_subject: String,
    /// The newest interest-bucket revision the watch has shown.
    seen_revision: u64,
    /// Other nodes' syncs waiting for the watch to reach a revision:
    /// (revision, reply subject).
    parked: Vec<(u64, async_nats::Subject)>,
    /// Syncs waiting for this node's workers: token -> (reply, workers left).
    syncing: AHashMap<u64, (async_nats::Subject, usize)>,
    next_token: u64,
    /// The interest bucket's last revision at start (`catch_up` reads to it).
    backlog: u64,
    /// The same for the keys bucket (`catch_up_keys`).
    keys_backlog: u64,
    js: async_nats::jetstream::Context,
    /// The keys bucket's name, and its subject prefix (`$KV.<bucket>.`).
    keys_subject: String,
    /// The keys bucket's answers to this node's retained writes: (realm,
    /// topic, the write's revision; none: it failed).
    acked_tx: tokio::sync::mpsc::Sender<(crate::router::Realm, String, Option<u64>)>,
    acked: tokio::sync::mpsc::Receiver<(crate::router::Realm, String, Option<u64>)>,
    /// Conditional writes for the deciding task (`bucket::decide`), and its answers.
    cas: tokio::sync::mpsc::Sender<bucket::Cas>,
    cas_done: tokio::sync::mpsc::Receiver<bucket::Decided>,
    /// Keys tied to a session (`will`), by bucket key: the session's node
    /// and life. When that life is over, this node asks for its will.
    wills: AHashMap<String, (String, u64)>,
    /// MQTT sessions' wills (`mw=` entries) not yet asked for: bucket key
    /// -> the session's node, its life and the will's delay (seconds).
    mqtt_wills: AHashMap<String, (String, u64, u32)>,
    /// Persistent MQTT sessions' records (`ms=` entries): bucket key ->
    /// the session's node, its life and the client ID (`realm\0client`).
    /// When that node dies, one survivor takes each in (`adopt_sessions_of`).
    mqtt_sessions: AHashMap<String, (String, u64, Arc<str>)>,
    /// Client IDs this node is taking in, with the claims from other nodes
    /// that came meanwhile (handed on after the session, so they find it).
    adopting: AHashMap<Arc<str>, Vec<ShardMsg>>,
    /// The queues stream (`bucket::Queues`), if JetStream has it, and its
    /// writer task's queue (bounded, `WRITES`).
    queues: Option<(bucket::Queues, tokio::sync::mpsc::Sender<bucket::QueueOp>)>,
    /// Send a heartbeat now (a node this one did not know was heard).
    beat_now: bool,
    /// Answers of the nodes asked whether they are still there (node, its
    /// life when asked, the answer); bounded: one question per node.
    probes: (tokio::sync::mpsc::Sender<super::probe::Answered>, tokio::sync::mpsc::Receiver<super::probe::Answered>),
    /// Since when this node's connection to NATS is up (`None`: down).
    up_since: Option<Instant>,
    /// This batch turn's outgoing publications: (subject, batch, how many),
    /// in the
    /// order the subjects were first used, and each subject's place.
    batches: Vec<(String, Vec<u8>, u64)>,
    batch_at: AHashMap<String, usize>,
    /// Publications of an arrived batch, before they go to their workers.
    arrived: Vec<(Publication, Box<[u64]>)>,
    writer: tokio::task::JoinHandle<()>,
    connected: Arc<AtomicBool>,
    /// Publications not forwarded or not delivered (NATS gone, a full
    /// worker, an undecodable message), logged every 10 s while it grows.
    drops: u64,
    /// Messages sent to other nodes and taken from them (counted like `drops`).
    sent: u64,
    received: u64,
    /// The metrics thread, and what it was told last: (sent, received, drops).
    metrics: Option<MetricsLink>,
    reported: (u64, u64, u64),
    reported_at: Instant,
    drops_logged: u64,
    drops_logged_at: Instant,
    /// Another node with this node's name was heard (logged once per incarnation).
    twin: Option<u64>,
}

impl Node {
    /// The node and what it reads: its subscriptions and its watch of the
    /// interest bucket (made after this node's old entries are gone), all
    /// in place before the node takes clients.
    async fn connect(
        cfg: ClusterConfig,
        workers: Vec<(Sender<ShardMsg>, Arc<Waker>)>,
        connected: Arc<AtomicBool>,
    ) -> Result<(Node, Streams), String> {
        let flag = connected.clone();
        let opts = async_nats::ConnectOptions::new()
            .name(format!("fennec-{}", cfg.node))
            .no_echo()
            .connection_timeout(CONNECT_LIMIT)
            .event_callback(move |event| {
                let flag = flag.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            flag.store(true, Ordering::Relaxed);
                            log::info!("cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            flag.store(false, Ordering::Relaxed);
                            log::warn!("cluster: lost NATS; cross-node traffic is refused until it is back");
                        }
                        other => log::warn!("cluster: NATS: {other}"),
                    }
                }
            });
        let client = tokio::time::timeout(CONNECT_LIMIT, opts.connect(cfg.url.as_str()))
            .await
            .map_err(|_| format!("cluster: NATS at {} did not answer in time", cfg.url))?
            .map_err(|e| format!("cluster: cannot connect to NATS at {}: {e}", cfg.url))?;
        connected.store(true, Ordering::Relaxed);
        let js = async_nats::jetstream::new(client.clone());
        let bucket = wire::interest_bucket(&cfg.prefix);
        let kv = bucket::open(&js, &bucket).await?;
        // What a previous life of this node left behind.
        bucket::forget_own_interest(&kv, &cfg.node).await;
        bucket::forget_own_parts(&kv, &cfg.node).await;
        // The revision the watch has to reach before it is current (the
        // stream's last message is the last of its key, which the watch
        // shows).
        let backlog = match js.get_stream(format!("KV_{bucket}")).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        let keys_bucket = wire::keys_bucket(&cfg.prefix);
        let keys_kv = bucket::open(&js, &keys_bucket).await?;
        let keys_backlog = match js.get_stream(format!("KV_{keys_bucket}")).await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        };
        let cannot = |what: &str, e: String| format!("cluster: cannot {what}: {e}");
        let watch = kv.watch_with_history(">").await.map_err(|e| cannot("watch the interest bucket", e.to_string()))?;
        let keys = keys_kv.watch_with_history(">").await.map_err(|e| cannot("watch the keys bucket", e.to_string()))?;
        let (acked_tx, acked) = tokio::sync::mpsc::channel(WRITES);
        let (cas, cas_queue) = tokio::sync::mpsc::channel(WRITES);
        let (cas_done_tx, cas_done) = tokio::sync::mpsc::channel(WRITES);
        let events = client
            .subscribe(wire::inbox_subject(&cfg.prefix, &cfg.node))
            .await
            .map_err(|e| cannot("subscribe", e.to_string()))?;
        let beats =
            client.subscribe(format!("{}.hb.*", cfg.prefix)).await.map_err(|e| cannot("subscribe", e.to_string()))?;
        let (writes, queue) = tokio::sync::mpsc::channel(WRITES);
        let (acks_tx, acks) = tokio::sync::mpsc::channel(WRITES);
        let incarnation = rand::random::<u64>() | 1;
        let ctl = Ctl {
            client: client.clone(),
            prefix: cfg.prefix.clone(),
            node: cfg.node.clone(),
            incarnation,
            acks: acks_tx,
        };
        let writer = tokio::spawn(bucket::writer(kv.clone(), queue, ctl));
        // The queues stream; without it (JetStream refusing it), a dead
        // node's sessions are taken in without their queued messages.
        let queues = match bucket::open_queues(&js, &cfg.prefix, cfg.queue_bound).await {
            Ok(q) => Some(q),
            Err(e) => {
                log::warn!("cluster: no queues stream ({e}): a dead node's queued MQTT messages are lost");
                None
            }
        };
        let decide =
            bucket::decide(keys_kv.clone(), queues.clone(), cfg.node.clone(), incarnation, cas_queue, cas_done_tx);
        tokio::spawn(decide);
        let queues = queues.map(|q| {
            let (tx, rx) = tokio::sync::mpsc::channel(WRITES);
            tokio::spawn(bucket::queue_writer(js.clone(), q.clone(), rx));
            (q, tx)
        });
        let n = workers.len();
        log::info!("cluster: node {} joined through {}", cfg.node, cfg.url);
        let node = Node {
            backlog,
            keys_backlog,
            js: js.clone(),
            keys_subject: format!("$KV.{keys_bucket}."),
            acked_tx,
            acked,
            cas,
            cas_done,
            wills: AHashMap::new(),
            mqtt_wills: AHashMap::new(),
            mqtt_sessions: AHashMap::new(),
            adopting: AHashMap::new(),
            queues,
            incarnation,
            regs: AHashMap::new(),
            rpc_inbox: rpc::subject(&cfg.prefix, &cfg.node, ""),
            ping_subject: wire::ping_subject(&cfg.prefix, &cfg.node),
            cfg,
            client,
            kv,
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; n],
            workers,
            peers: Vec::new(),
            by_name: AHashMap::new(),
            remote_ids: AHashMap::new(),
            next_id: REMOTE_IDS + rand::Rng::gen_range(&mut rand::thread_rng(), 0..REMOTE_IDS / 2),
            writes,
            acks,
            seen_revision: 0,
            parked: Vec::new(),
            syncing: AHashMap::new(),
            next_token: 0,
            beat_now: false,
            probes: tokio::sync::mpsc::channel(MAX_NODES),
            up_since: None,
            batches: Vec::new(),
            batch_at: AHashMap::new(),
            arrived: Vec::new(),
            writer,
            connected,
            drops: 0,
            sent: 0,
            received: 0,
            metrics: None,
            reported: (0, 0, 0),
            reported_at: Instant::now(),
            drops_logged: 0,
            drops_logged_at: Instant::now(),
            twin: None,
        };
        Ok((node, Streams { events, beats, keys, watch }))
    }

    /// Applies the interest entries the bucket held at start (until the
    /// watch reaches the revision the bucket was at; at most `CONNECT_LIMIT`).
    async fn catch_up(&mut self, watch: &mut kv::Watch) {
        if !self.read_backlog(watch, self.backlog, Node::on_interest).await {
            log::warn!(
                "cluster: the other nodes' subscriptions were not all read at start (revision {} of {})",
                self.seen_revision,
                self.backlog
            );
        }
    }

    /// Applies the retained values the keys bucket held at start, the same way.
    async fn catch_up_keys(&mut self, keys: &mut kv::Watch) {
        if !self.read_backlog(keys, self.keys_backlog, Node::on_key).await {
            log::warn!("cluster: the cluster's retained values were not all read at start");
        }
    }

    /// Hands a watch's entries to `apply` until one at `backlog` (the
    /// bucket's last revision at start); false if that did not come
    /// within `CONNECT_LIMIT`.
    async fn read_backlog(&mut self, watch: &mut kv::Watch, backlog: u64, apply: fn(&mut Node, kv::Entry)) -> bool {
        if backlog == 0 {
            return true;
        }
        let until = tokio::time::Instant::now() + CONNECT_LIMIT;
        while let Ok(Some(entry)) = tokio::time::timeout_at(until, watch.next()).await {
            match entry {
                Ok(entry) => {
                    let revision = entry.revision;
                    apply(self, entry);
                    if revision >= backlog {
                        return true;
                    }
                }
                Err(e) => log::warn!("cluster: bucket watch: {e}"),
            }
        }
        false
    }

    async fn run(mut self, mut reqs: tokio::sync::mpsc::Receiver<ClusterReq>, streams: Streams) {
        let Streams { mut events, mut beats, mut keys, mut watch } = streams;
        let mut tick = tokio::time::interval(HEARTBEAT);
        let mut liveness = tokio::time::interval(LIVENESS_CHECK);
        let mut retry = tokio::time::interval(Duration::from_millis(2));
        let beat_subject = wire::heartbeat_subject(&self.cfg.prefix, &self.cfg.node);
        // The node's incarnation and its number of workers (the others
        // address its workers directly: `at_node`).
        let mut beat = self.incarnation.to_be_bytes().to_vec();
        beat.extend_from_slice(&(self.workers.len() as u16).to_be_bytes());
        let beat = Bytes::from(beat);
        let ctl_subject = wire::ctl_subject(&self.cfg.prefix, &self.cfg.node);
        // A stream that ends (the client gave up) is logged and left; the
        // loop ends only at shutdown, so nothing waits on it forever.
        let (mut events_ok, mut beats_ok, mut watch_ok, mut keys_ok) = (true, true, true, true);
        loop {
            let backlog = self.overflow.iter().any(|o| !o.is_empty());
            tokio::select! {
                req = reqs.recv() => {
                    let Some(req) = req else { break };
                    self.on_request(req).await;
                    for _ in 0..BATCH {
                        match reqs.recv().now_or_never() {
                            Some(Some(req)) => self.on_request(req).await,
                            _ => break,
                        }
                    }
                    self.send_batches().await;
                }
                msg = events.next(), if events_ok => {
                    let Some(msg) = msg else {
                        log::error!("cluster: the node's subscription ended: no more publications from other nodes");
                        events_ok = false;
                        continue;
                    };
                    self.on_inbox(msg, &ctl_subject);
                    for _ in 0..BATCH / 16 {
                        match events.next().now_or_never() {
                            Some(Some(msg)) => self.on_inbox(msg, &ctl_subject),
                            _ => break,
                        }
                    }
                }
                msg = beats.next(), if beats_ok => match msg {
                    Some(msg) => self.on_heartbeat(&msg.subject, &msg.payload),
                    None => {
                        log::error!("cluster: the heartbeat subscription ended");
                        beats_ok = false;
                    }
                },
                entry = watch.next(), if watch_ok => match entry {
                    Some(Ok(entry)) => self.on_interest(entry),
                    Some(Err(e)) => log::warn!("cluster: interest watch: {e}"),
                    None => {
                        log::error!("cluster: the interest watch ended: other nodes' subscriptions are no longer followed");
                        watch_ok = false;
                    }
                },
                entry = keys.next(), if keys_ok => match entry {
                    Some(Ok(entry)) => self.on_key(entry),
                    Some(Err(e)) => log::warn!("cluster: keys watch: {e}"),
                    None => {
                        log::error!("cluster: the keys watch ended: other nodes' retained values are no longer followed");
                        keys_ok = false;
                    }
                },
                Some((realm, topic, revision)) = self.acked.recv() => self.written(realm, topic, revision),
                Some(decided) = self.cas_done.recv() => match decided {
                    bucket::Decided::Write(realm, topic, outcome) => {
                        let w = owner_of(&realm, &topic, self.workers.len());
                        self.hand_to(w as usize, ShardMsg::CasDone { realm, topic, outcome }, false);
                    }
                    bucket::Decided::Own(claim, prev, record, read) => self.owned(claim, prev, record, read),
                    bucket::Decided::Will(p, revision) => {
                        let w = owner_of(&p.realm, &p.topic, self.workers.len());
                        self.hand_to(w as usize, ShardMsg::DeadWill { p: Arc::new(p), revision }, false);
                    }
                    bucket::Decided::MqttWill(p) => {
                        let w = owner_of(&p.realm, &p.topic, self.workers.len());
                        self.hand_to(w as usize, ShardMsg::MqttDeadWill(Box::new(p)), false);
                    }
                    bucket::Decided::Adopted(key, record) => self.adopted(key, record),
                    bucket::Decided::Restored(key, kept, will_kept) => self.restored(key, kept, will_kept),
                },
                Some(ack) = self.acks.recv() => match ack {
                    Ack::Barrier(b) => self.hand_to(b.owner as usize, ShardMsg::BarrierAck { barrier: b.id }, false),
                    Ack::Claimed(c, refused) => {
                        self.hand_to(c.owner as usize, ShardMsg::Claimed { ticket: c.ticket, refused }, false)
                    }
                },
                _ = tick.tick() => {
                    if self.connected.load(Ordering::Relaxed) {
                        let _ = self.client.publish(beat_subject.clone(), beat.clone()).await;
                    }
                    self.log_drops();
                    self.report(false);
                }
                _ = liveness.tick() => self.check_liveness(),
                Some((id, incarnation, answer)) = self.probes.1.recv() => self.on_probe(id, incarnation, answer),
                _ = retry.tick(), if backlog => {}
            }
            if std::mem::take(&mut self.beat_now) && self.connected.load(Ordering::Relaxed) {
                let _ = self.client.publish(beat_subject.clone(), beat.clone()).await;
            }
            self.flush();
        }
        // Shutdown (every worker's link is gone): leave the cluster cleanly.
        // The writer finishes what it has first, so no entry of ours is
        // written after the clean-up.
        self.report(true);
        drop(self.writes);
        let _ = self.writer.await;
        bucket::forget_own_interest(&self.kv, &self.cfg.node).await;
        bucket::forget_own_parts(&self.kv, &self.cfg.node).await;
        let _ = self.client.flush().await;
        log::info!("cluster: node {} left", self.cfg.node);
    }

    async fn on_request(&mut self, req: ClusterReq) {
        match req {
            ClusterReq::Interest { key, add, barrier } => {
                let entry = InterestEntry::of(&key);
                let value = add.then(|| Bytes::from(serde_json::to_vec(&entry).expect("plain strings")));
                let live = || self.peers.iter().filter(|p| p.alive).map(|p| p.name.clone()).collect();
                let sync = barrier.map(|b| (b, live()));
                // A full queue waits: the workers' link backs up behind it.
                let write = Write::Interest { key: entry.bucket_key(&self.cfg.node), value, sync };
                if let Err(e) = self.writes.send(write).await {
                    // The writer is gone (shutdown): answer the barrier anyway.
                    if let Write::Interest { sync: Some((b, _)), .. } = e.0 {
                        self.hand_to(b.owner as usize, ShardMsg::BarrierAck { barrier: b.id }, false);
                    }
                }
            }
            ClusterReq::Register { claim: Some(c), .. } if !self.connected.load(Ordering::Relaxed) => {
                // Cut off: a new registration is not made here alone.
                let refused = Some(crate::wamp::session::CLUSTER_UNAVAILABLE);
                self.hand_to(c.owner as usize, ShardMsg::Claimed { ticket: c.ticket, refused }, false);
            }
            ClusterReq::Register { part, claim } => {
                let known = self.peers.iter().map(|p| (p.name.clone(), p.incarnation, p.alive)).collect();
                let live = self.peers.iter().filter(|p| p.alive).map(|p| p.name.clone()).collect();
                if let Err(e) = self.writes.send(Write::Register { part, claim, known, live }).await {
                    if let Write::Register { claim: Some(c), .. } = e.0 {
                        let refused = Some(crate::wamp::session::CLUSTER_UNAVAILABLE);
                        self.hand_to(c.owner as usize, ShardMsg::Claimed { ticket: c.ticket, refused }, false);
                    }
                }
            }
            ClusterReq::Rpc { node, worker, msg } => self.forward_rpc(node, worker, msg).await,
            ClusterReq::Retained { p, will } => self.write_retained(&p, will.as_ref()).await,
            ClusterReq::MqttClaim { claim } => {
                if !self.connected.load(Ordering::Relaxed) {
                    return self.owned(claim, None, None, true);
                }
                // The deciding task's queue is bounded: full, the node
                // serves the client ID alone rather than stall this thread.
                if let Err(e) = self.cas.try_send(bucket::Cas::Own { claim }) {
                    if let bucket::Cas::Own { claim } = e.into_inner() {
                        log::warn!("cluster: too many decisions queued: an MQTT client ID is served here alone");
                        self.owned(claim, None, None, true);
                    }
                }
            }
            ClusterReq::MqttResume { claim, node } => {
                let holder = self.peers.get(usize::from(node)).map(|p| (p.name.clone(), p.incarnation));
                let Some(holder) = holder.filter(|_| self.connected.load(Ordering::Relaxed)) else {
                    return self.owned(claim, None, None, true);
                };
                if let Err(e) = self.cas.try_send(bucket::Cas::Resume { claim, holder }) {
                    if let bucket::Cas::Resume { claim, .. } = e.into_inner() {
                        log::warn!("cluster: too many decisions queued: an MQTT session starts afresh");
                        self.owned(claim, None, None, true);
                    }
                }
            }
            ClusterReq::MqttSession { key, record } => self.write_session(&key, record).await,
            ClusterReq::MqttQueued { key, messages } => self.write_queued(&key, messages),
            ClusterReq::MqttQueueClear { key } => self.clear_queued(&key).await,
            ClusterReq::MqttRestored { key, will } => {
                if let Err(e) = self.cas.try_send(bucket::Cas::Reclaim { key, will }) {
                    log::warn!("cluster: too many decisions queued: a restored MQTT session is kept unchecked");
                    if let bucket::Cas::Reclaim { key, will } = e.into_inner() {
                        self.restored(key, true, will);
                    }
                }
            }
            ClusterReq::MqttWill { key, will } => {
                let will = match will {
                    Some((p, delay)) => match wire::encode(&p, self.incarnation, Instant::now()) {
                        Some(b) => Some((Bytes::from(b), delay)),
                        None => return, // expired already
                    },
                    None => None,
                };
                if self.cas.try_send(bucket::Cas::OwnWill { key, will }).is_err() {
                    log::warn!("cluster: an MQTT will could not be written to the cluster (queue full)");
                }
            }
            ClusterReq::CasWrite { p, when, will } => {
                let refused = if self.connected.load(Ordering::Relaxed) {
                    // Bounded queue: full, the write is not accepted.
                    match self.cas.try_send(bucket::Cas::Write { p, when, will }) {
                        Ok(()) => None,
                        Err(e) => match e.into_inner() {
                            bucket::Cas::Write { p, .. } => Some(p),
                            _ => None,
                        },
                    }
                } else {
                    Some(p)
                };
                if let Some(p) = refused {
                    let w = owner_of(&p.realm, &p.topic, self.workers.len());
                    let outcome = super::CasOutcome::Failed;
                    self.hand_to(
                        w as usize,
                        ShardMsg::CasDone { realm: p.realm.clone(), topic: p.topic.clone(), outcome },
                        false,
                    );
                }
            }
            ClusterReq::Publish { p, nodes, shares } => self.forward(&p, &nodes, &shares).await,
            ClusterReq::Synced { token } => {
                let Some((_, left)) = self.syncing.get_mut(&token) else { return };
                *left -= 1;
                if *left == 0 {
                    let (reply, _) = self.syncing.remove(&token).expect("present");
                    let _ = self.client.publish(reply, Bytes::new()).await;
                }
            }
        }
    }

    /// `try_send` or the worker's overflow; an event past the overflow's
    /// bound is dropped (a route change never is: they are few, and a
    /// lost one would leave a stale or missing route).
    fn hand_to(&mut self, w: usize, msg: ShardMsg, droppable: bool) {
        if self.overflow[w].is_empty() {
            match self.workers[w].0.try_send(msg) {
                Ok(()) => {
                    self.to_wake[w] = true;
                    return;
                }
                Err(TrySendError::Full(msg)) => return self.keep(w, msg, droppable),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        self.keep(w, msg, droppable)
    }

    fn keep(&mut self, w: usize, msg: ShardMsg, droppable: bool) {
        if droppable && self.overflow[w].len() >= OVERFLOW {
            self.drops += 1;
        } else {
            self.overflow[w].push_back(msg);
        }
    }

    /// Overflow into the inboxes as room allows; one wake per worker.
    fn flush(&mut self) {
        for w in 0..self.workers.len() {
            while let Some(msg) = self.overflow[w].pop_front() {
                match self.workers[w].0.try_send(msg) {
                    Ok(()) => self.to_wake[w] = true,
                    Err(TrySendError::Full(msg)) => {
                        self.overflow[w].push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => self.overflow[w].clear(),
                }
            }
            if std::mem::take(&mut self.to_wake[w]) {
                let _ = self.workers[w].1.wake();
            }
        }
    }

    /// The counters since the last report, to the metrics thread, once per
    /// interval (and at the end).
    fn report(&mut self, last: bool) {
        let Some((tx, every)) = &self.metrics else { return };
        if !last && self.reported_at.elapsed() < *every {
            return;
        }
        self.reported_at = Instant::now();
        let (sent, received, drops) = self.reported;
        let mut m = crate::metrics::WorkerMetrics::default();
        m.counters.cluster_out = self.sent - sent;
        m.counters.cluster_in = self.received - received;
        m.counters.cluster_drops = self.drops - drops;
        self.reported = (self.sent, self.received, self.drops);
        // A full metrics channel loses this interval, as for a worker.
        let _ = tx.try_send((crate::metrics::Source::Cluster, m.snapshot()));
    }

    fn log_drops(&mut self) {
        if self.drops > self.drops_logged && self.drops_logged_at.elapsed() >= Duration::from_secs(10) {
            log::warn!("cluster: {} cross-node publications dropped so far", self.drops);
            (self.drops_logged, self.drops_logged_at) = (self.drops, Instant::now());
        }
    }
}
