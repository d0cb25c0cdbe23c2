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
                        self.hand_to(w as usize, ShardMsg::MqttDeadWill(p), false);
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

    /// Encoded once, appended to the batch of each interested node's
    /// subject (`send_batches` publishes them): publications of one batch
    /// turn go out as one NATS message per node and topic, in order.
    async fn forward(&mut self, p: &Publication, nodes: &[NodeId], shares: &[(NodeId, u64)]) {
        if !self.connected.load(Ordering::Relaxed) {
            self.drops += nodes.len() as u64;
            return;
        }
        let named =
            shares.iter().filter_map(|&(n, hash)| Some((hash, self.peers.get(usize::from(n))?.name.clone()))).collect();
        let Some(bytes) = wire::encode_shared(p, self.incarnation, Instant::now(), named) else { return };
        for &n in nodes {
            let Some(peer) = self.peers.get(n as usize) else { continue };
            if !peer.alive {
                continue;
            }
            let subject = wire::event_subject(&self.cfg.prefix, &peer.name, &p.realm, &p.topic);
            self.batch(subject, &bytes).await;
        }
    }

    /// Appends one message to this turn's batch for `subject`; a batch
    /// that is full goes at once.
    async fn batch(&mut self, subject: String, bytes: &[u8]) {
        let at = match self.batch_at.get(&subject) {
            Some(&at) => at,
            None => {
                self.batches.push((subject.clone(), Vec::new(), 0));
                self.batch_at.insert(subject, self.batches.len() - 1);
                self.batches.len() - 1
            }
        };
        wire::batch_push(&mut self.batches[at].1, bytes);
        self.sent += 1;
        self.batches[at].2 += 1;
        if self.batches[at].1.len() >= BATCH_BYTES {
            self.send_batches().await;
        }
    }

    /// Publishes the batches gathered so far, one NATS message each.
    async fn send_batches(&mut self) {
        self.batch_at.clear();
        for (subject, batch, n) in std::mem::take(&mut self.batches) {
            if self.client.publish(subject, Bytes::from(batch)).await.is_err() {
                self.drops += n;
            }
        }
    }

    /// What arrives on the node's subscription: a sync request on its
    /// `ctl` subject, else a publication.
    fn on_inbox(&mut self, msg: async_nats::Message, ctl_subject: &str) {
        if let Some(from) = msg.subject.as_str().strip_prefix(self.rpc_inbox.as_str()) {
            let from = from.to_owned();
            return self.on_rpc(&from, &msg.payload);
        }
        if msg.subject.as_str() == self.ping_subject {
            // Another node asks whether this one is still here (`probe`).
            if let Some(reply) = msg.reply {
                let client = self.client.clone();
                tokio::spawn(async move { client.publish(reply, Bytes::new()).await });
            }
            return;
        }
        if msg.subject.as_str() != ctl_subject {
            return self.on_event(&msg.payload);
        }
        let (Some(reply), Ok(b)) = (msg.reply, <[u8; 8]>::try_from(&msg.payload[..])) else { return };
        let revision = u64::from_be_bytes(b);
        if revision <= self.seen_revision || self.parked.len() >= SYNCS {
            self.sync_workers(reply);
        } else {
            self.parked.push((revision, reply));
        }
    }

    /// Every worker is asked to answer once it has applied what this thread
    /// sent it so far; the last answer replies to the other node.
    fn sync_workers(&mut self, reply: async_nats::Subject) {
        if self.syncing.len() >= SYNCS {
            // Degraded: answered at once rather than held without bound.
            let client = self.client.clone();
            tokio::spawn(async move { client.publish(reply, Bytes::new()).await });
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        self.syncing.insert(token, (reply, self.workers.len()));
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::ClusterSync { token }, false);
        }
    }

    /// A publication from another node: to its topic's owner worker here,
    /// so every publication to one topic takes the same path.
    fn on_event(&mut self, payload: &[u8]) {
        let (me, workers) = (self.incarnation, self.workers.len());
        let mut arrived = std::mem::take(&mut self.arrived);
        let name = &self.cfg.node;
        wire::decode_batch(payload, Instant::now(), |one| match one {
            Ok((incarnation, p, shares)) if incarnation != me => {
                let serve = shares.into_iter().filter(|(_, n)| n == name).map(|(hash, _)| hash).collect();
                arrived.push((p, serve))
            }
            Ok(_) => {}
            Err(e) => {
                self.drops += 1;
                log::debug!("cluster: a publication from NATS is refused: {e}");
            }
        });
        self.received += arrived.len() as u64;
        for (p, serve) in arrived.drain(..) {
            let w = owner_of(&p.realm, &p.topic, workers);
            self.hand_to(w as usize, ShardMsg::FromCluster(Arc::new(p), serve), true);
        }
        self.arrived = arrived;
    }

    fn on_heartbeat(&mut self, subject: &str, payload: &[u8]) {
        let Some(name) = subject.rsplit('.').next() else { return };
        let Some((b, rest)) = payload.split_first_chunk::<8>() else { return };
        let incarnation = u64::from_be_bytes(*b);
        let workers = rest.first_chunk::<2>().map_or(0, |w| u16::from_be_bytes(*w));
        if name == self.cfg.node {
            if incarnation != self.incarnation && self.twin != Some(incarnation) {
                self.twin = Some(incarnation);
                log::error!("cluster: another node is named {name}: node names must be unique in a cluster");
            }
            return;
        }
        let id = self.peer(name);
        let peer = &mut self.peers[id as usize];
        peer.last_heard = Instant::now();
        peer.gone = 0;
        let was_alive = peer.alive;
        // A node new to this one (or new again) hears from it at once, not
        // at its next heartbeat: a subscription made here right after it
        // started then waits for it too.
        if peer.incarnation != incarnation {
            let restarted = peer.incarnation != 0;
            peer.incarnation = incarnation;
            self.beat_now = true;
            if restarted {
                log::info!("cluster: node {name} restarted");
                // Calls to and from its earlier life end; its parts of
                // registrations are that life's until it writes new ones.
                self.lost(id);
            } else {
                // Parts of registrations from an earlier life drop out.
                self.announce_node(id);
            }
        }
        if !was_alive {
            log::info!("cluster: node {name} is back");
            self.set_alive(id, true);
            self.beat_now = true;
        }
        let peer = &mut self.peers[id as usize];
        if peer.workers != workers || !was_alive {
            peer.workers = workers;
            self.tell_workers(id);
        }
    }

    /// Every worker learns how many workers node `id` has while it is
    /// alive (0: it is not), for the questions that go to all of them
    /// (the session meta API).
    fn tell_workers(&mut self, id: NodeId) {
        let p = &self.peers[id as usize];
        let workers = if p.alive && (id as usize) < MAX_NODES { p.workers.min(super::MAX_WORKERS as u16) } else { 0 };
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::NodeWorkers { node: id, workers }, false);
        }
    }

    /// Takes the nodes silent for `DEAD_AFTER` for dead, and asks those
    /// whose heartbeat is late whether they are still connected (`probe`).
    fn check_liveness(&mut self) {
        let now = Instant::now();
        let up = self.connected.load(Ordering::Relaxed);
        self.up_since = if up { self.up_since.or(Some(now)) } else { None };
        let may_ask = self.up_since.is_some_and(|t| now.duration_since(t) >= super::probe::PROBE_GRACE);
        for id in 0..self.peers.len() {
            let p = &mut self.peers[id];
            if !p.alive {
                continue;
            }
            let silent = now.duration_since(p.last_heard);
            if silent > DEAD_AFTER {
                log::warn!("cluster: node {} silent for {} s: its routes are dropped", p.name, DEAD_AFTER.as_secs());
                self.set_alive(id as NodeId, false);
            } else if silent > super::probe::PROBE_AFTER && may_ask && !p.probing {
                p.probing = true;
                let (client, tx, incarnation) = (self.client.clone(), self.probes.0.clone(), p.incarnation);
                let subject = wire::ping_subject(&self.cfg.prefix, &p.name);
                tokio::spawn(async move {
                    let answer = super::probe::ask(client, subject).await;
                    let _ = tx.send((id as NodeId, incarnation, answer)).await;
                });
            }
        }
    }

    /// A late node's answer (`probe`): two "no responders" in a row, and
    /// it is taken for dead now, if it is still silent in the same life.
    fn on_probe(&mut self, id: NodeId, incarnation: u64, answer: super::probe::Answer) {
        let Some(p) = self.peers.get_mut(id as usize) else { return };
        p.probing = false;
        let still = p.alive && p.incarnation == incarnation && p.last_heard.elapsed() > super::probe::PROBE_AFTER;
        if !still {
            return;
        }
        if super::probe::verdict(&mut p.gone, answer) {
            log::warn!("cluster: node {} is gone from NATS: its routes are dropped", p.name);
            self.set_alive(id, false);
        }
    }

    /// The number of the node called `name` (new ones alive, on probation
    /// until their first heartbeat is `DEAD_AFTER` late).
    fn peer(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.peers.len() as NodeId;
        self.peers.push(Peer {
            name: name.to_owned(),
            incarnation: 0,
            workers: 0,
            last_heard: Instant::now(),
            alive: true,
            probing: false,
            gone: 0,
            entries: AHashMap::new(),
        });
        self.by_name.insert(name.to_owned(), id);
        id
    }

    fn on_interest(&mut self, entry: kv::Entry) {
        self.seen_revision = self.seen_revision.max(entry.revision);
        self.apply_interest(&entry);
        // Syncs that waited for this revision.
        let seen = self.seen_revision;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 <= seen {
                let (_, reply) = self.parked.swap_remove(i);
                self.sync_workers(reply);
            } else {
                i += 1;
            }
        }
    }

    fn apply_interest(&mut self, entry: &kv::Entry) {
        if entry.key.starts_with(procs::REG_KEY) {
            return self.apply_reg(entry);
        }
        let Some((name, _)) = entry.key.split_once('.') else { return };
        if name == self.cfg.node {
            return;
        }
        let id = self.peer(name);
        let alive = self.peers[id as usize].alive;
        match entry.operation {
            kv::Operation::Put => {
                let Some(key) = serde_json::from_slice::<InterestEntry>(&entry.value).ok().and_then(|e| e.key()) else {
                    log::debug!("cluster: an interest entry {} does not read", entry.key);
                    return;
                };
                let old = self.peers[id as usize].entries.insert(entry.key.clone(), key.clone());
                if old.is_none() && alive {
                    self.route(id, &key, true);
                }
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(key) = self.peers[id as usize].entries.remove(&entry.key) {
                    if alive {
                        self.route(id, &key, false);
                    }
                }
            }
        }
    }

    fn set_alive(&mut self, id: NodeId, alive: bool) {
        self.peers[id as usize].alive = alive;
        let keys: Vec<SubKey> = self.peers[id as usize].entries.values().cloned().collect();
        for key in keys {
            self.route(id, &key, alive);
        }
        if alive {
            self.announce_node(id);
        } else {
            self.lost(id);
            self.adopt_sessions_of(id);
            self.tell_workers(id);
        }
    }

    /// Node `id` died or restarted: its callees leave the workers' tables
    /// first, then every worker ends the calls to and from it.
    fn lost(&mut self, id: NodeId) {
        self.announce_node(id);
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::NodeLost { node: id }, false);
        }
        self.wills_of(id);
    }

    /// A registration entry changed (or went): every worker learns the
    /// other live nodes' callees of it.
    fn apply_reg(&mut self, entry: &kv::Entry) {
        let key = entry.key.clone();
        match entry.operation {
            kv::Operation::Put => {
                let Ok(reg) = serde_json::from_slice::<RegEntry>(&entry.value) else {
                    log::debug!("cluster: a registration entry {key} does not read");
                    return;
                };
                for part in &reg.parts {
                    if part.node != self.cfg.node {
                        self.peer(&part.node);
                    }
                }
                self.regs.insert(key.clone(), reg);
                self.announce_reg(&key);
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                let Some(mut reg) = self.regs.remove(&key) else { return };
                reg.parts.clear();
                self.announce(&reg);
            }
        }
    }

    /// Announces again the registrations node `id` has a part of (it came
    /// or went).
    fn announce_node(&mut self, id: NodeId) {
        let name = &self.peers[id as usize].name;
        let keys: Vec<String> =
            self.regs.iter().filter(|(_, r)| r.parts.iter().any(|p| &p.node == name)).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.announce_reg(&key);
        }
    }

    fn announce_reg(&mut self, key: &str) {
        if let Some(reg) = self.regs.get(key).cloned() {
            self.announce(&reg);
        }
    }

    /// Tells every worker the live callees other nodes have for `reg`.
    fn announce(&mut self, reg: &RegEntry) {
        let (Some(policy), Some(invoke)) = (MatchPolicy::parse(&reg.policy), InvokePolicy::parse(&reg.invoke)) else {
            log::debug!("cluster: registration {} has an unknown policy", reg.uri);
            return;
        };
        let mut callees = Vec::new();
        for part in &reg.parts {
            let Some(&id) = self.by_name.get(&part.node) else { continue };
            let peer = &self.peers[id as usize];
            let current = peer.incarnation == 0 || peer.incarnation == part.incarnation;
            if !peer.alive || !current || id as usize >= MAX_NODES {
                continue;
            }
            for c in &part.callees {
                if c.worker as usize >= super::MAX_WORKERS {
                    continue;
                }
                callees.push(RemoteCallee {
                    session: SessionRef { worker: at_node(id, c.worker), id: c.session },
                    registration: part.registration,
                    disclose_caller: c.disclose_caller,
                    since: c.since,
                });
            }
        }
        let realm: crate::router::Realm = reg.realm.as_str().into();
        let remote = RemoteReg { uri: reg.uri.clone(), invoke, callees: Arc::new(callees) };
        for w in 0..self.workers.len() {
            let msg = ShardMsg::RemoteProcs { realm: realm.clone(), policy, reg: remote.clone() };
            self.hand_to(w, msg, false);
        }
    }

    /// A dealer message for another node's worker. One that cannot go (the
    /// node is not alive, NATS is gone) is dropped, and an INVOCATION's
    /// caller gets ERROR `wamp.error.no_available_callee` at once.
    async fn forward_rpc(&mut self, node: NodeId, worker: WorkerId, msg: ShardMsg) {
        let to = self.peers.get(node as usize).filter(|p| p.alive).map(|p| p.name.clone());
        let bytes = match (to, self.connected.load(Ordering::Relaxed)) {
            (Some(to), true) => rpc::encode(node, worker, &msg).map(|b| (to, b)),
            _ => None,
        };
        if let Some((to, bytes)) = bytes {
            // Batched like publications: one NATS message per node and turn.
            let subject = rpc::subject(&self.cfg.prefix, &to, &self.cfg.node);
            return self.batch(subject, &bytes).await;
        }
        self.drops += 1;
        if let ShardMsg::Invoke(inv) = msg {
            if inv.continuation {
                return;
            }
            let text = format!("the callee of '{}' is on a node that cannot be reached", inv.procedure);
            let outcome = CallOutcome::Error {
                error: "wamp.error.no_available_callee".into(),
                details: Vec::new(),
                payload: crate::payload::Payload::args(vec![crate::value::Value::Str(text)]),
            };
            let done = CallDone { caller: inv.caller.id, request: inv.request, outcome };
            let w = inv.caller.worker as usize;
            if w < self.workers.len() {
                self.hand_to(w, ShardMsg::CallDone(Box::new(done)), false);
            }
        }
    }

    /// A key's new retained value, to the keys bucket (a KV put: a
    /// JetStream publish on its subject, its acknowledgement awaited
    /// aside so writes stream). Each write is answered to the key's owner
    /// once, `RetainedAck`, with its revision in the bucket or none when it
    /// failed (NATS gone: the other nodes keep their copy; counted as a
    /// drop).
    async fn write_retained(&mut self, p: &crate::router::Publication, will: Option<&crate::router::Body>) {
        let now = Instant::now();
        let will = will.map(|b| (self.cfg.node.as_str(), b));
        let value = wire::encode_retained(p, self.incarnation, now, crate::router::unix_millis(), will);
        let Some(value) = value.filter(|_| self.connected.load(Ordering::Relaxed)) else {
            // Expired meanwhile, or no NATS.
            self.drops += 1;
            return self.written(p.realm.clone(), p.topic.clone(), None);
        };
        let subject = format!("{}{}", self.keys_subject, wire::retained_key(&p.realm, &p.topic));
        match self.js.publish(subject, Bytes::from(value)).await {
            Ok(ack) => {
                let acked = self.acked_tx.clone();
                let (realm, topic) = (p.realm.clone(), p.topic.clone());
                tokio::spawn(async move {
                    let revision = match ack.await {
                        Ok(a) => Some(a.sequence),
                        Err(e) => {
                            log::warn!("cluster: a retained value was not written to the keys bucket: {e}");
                            None
                        }
                    };
                    let _ = acked.send((realm, topic, revision)).await;
                });
            }
            Err(e) => {
                self.drops += 1;
                log::warn!("cluster: a retained value was not written to the keys bucket: {e}");
                self.written(p.realm.clone(), p.topic.clone(), None);
            }
        }
    }

    fn written(&mut self, realm: crate::router::Realm, topic: String, revision: Option<u64>) {
        let w = owner_of(&realm, &topic, self.workers.len());
        self.hand_to(w as usize, ShardMsg::RetainedAck { realm, topic, revision }, false);
    }

    /// A write in the keys bucket, in the bucket's order, to the key's
    /// owner worker (`Shard::retained_from_cluster` decides).
    fn on_key(&mut self, entry: kv::Entry) {
        if entry.key.starts_with("mw=") {
            return self.on_mqtt_will(entry);
        }
        if entry.key.starts_with("ms=") {
            return self.on_mqtt_session(entry);
        }
        // (`mq=` entries, the holders of MQTT client IDs, are read when claimed.)
        if entry.operation != kv::Operation::Put || !entry.key.starts_with("ret=") {
            return;
        }
        let e = match wire::decode_retained(&entry.value, Instant::now(), crate::router::unix_millis()) {
            Ok(e) => e,
            Err(e) => {
                log::debug!("cluster: a retained entry {} does not read: {e}", entry.key);
                return;
            }
        };
        match &e.will {
            Some((node, _)) => {
                if *node != self.cfg.node {
                    self.peer(node);
                }
                self.wills.insert(entry.key.clone(), (node.clone(), e.incarnation));
                if self.will_due(node, e.incarnation) {
                    self.ask_will(&entry.key);
                }
            }
            None => drop(self.wills.remove(&entry.key)),
        }
        let own = e.incarnation == self.incarnation;
        let w = owner_of(&e.p.realm, &e.p.topic, self.workers.len());
        let msg = ShardMsg::RetainedFromCluster { p: Arc::new(e.p), revision: entry.revision, own };
        self.hand_to(w as usize, msg, false);
    }

    /// The cluster's answer to a client ID's claim, to the ID's owner
    /// worker here: the node that held it, if it is alive in that life.
    /// A holder that is gone leaves the record of its session, which the
    /// claim resumes (unless it starts clean), with the messages it had
    /// queued (`read`: its queue was read; if not, it is read first).
    fn owned(
        &mut self,
        claim: crate::mqtt::registry::Claim,
        prev: Option<(String, u64)>,
        record: Option<crate::mqtt::registry::Left>,
        read: bool,
    ) {
        let holder = prev.clone();
        let prev = prev.and_then(|(node, incarnation)| {
            if node == self.cfg.node {
                return None;
            }
            let &id = self.by_name.get(&node)?;
            let p = &self.peers[id as usize];
            (p.alive && (p.incarnation == 0 || p.incarnation == incarnation)).then_some(id)
        });
        if let Some(holder) = holder.clone().filter(|_| prev.is_none() && record.is_some() && !read) {
            // The holder was already taken for dead when the claim was
            // decided: what it had queued for the session is read (and
            // purged) before the session resumes, as after `ClaimVia`.
            if self.queues.is_some() && holder != (self.cfg.node.clone(), self.incarnation) {
                match self.cas.try_send(bucket::Cas::Resume { claim, holder }) {
                    Ok(()) => return,
                    Err(e) => {
                        log::warn!("cluster: too many decisions queued: a session resumes without its queued messages");
                        if let bucket::Cas::Resume { claim, holder } = e.into_inner() {
                            self.owned(claim, Some(holder), record, true);
                        }
                        return;
                    }
                }
            }
        }
        let resume = if prev.is_none() && !claim.clean_start { record.map(Box::new) } else { None };
        if let (None, Some((node, incarnation))) = (prev, holder) {
            // A session of a node that is gone, resumed before its will's
            // delay passed: the will is not sent (MQTT 5, 3.1.3.2.2); one
            // that a clean start ends: sent now, not after the delay.
            if node != self.cfg.node || incarnation != self.incarnation {
                let bucket_key = bucket::will_key(&claim.key);
                self.mqtt_wills.remove(&bucket_key);
                let publish = claim.clean_start;
                let job = bucket::Cas::MqttWill { bucket_key, node, incarnation, publish };
                if self.cas.try_send(job).is_err() {
                    log::warn!("cluster: a dead node's MQTT session's will could not be decided (queue full)");
                }
            }
        }
        let (realm, client) = claim.key.split_once('\0').unwrap_or(("", &claim.key));
        let w = owner_of(realm, client, self.workers.len());
        let msg = crate::mqtt::registry::Msg::Owned { claim, prev, resume };
        self.hand_to(w as usize, ShardMsg::Mqtt(msg), false);
    }

    /// The cluster's answer for a session restored from the store, to its
    /// client ID's owner worker (`mqtt::registry::Msg::Restored`).
    fn restored(&mut self, key: Arc<str>, kept: bool, will_kept: bool) {
        let (realm, client) = key.split_once('\0').unwrap_or(("", &key));
        let w = owner_of(realm, client, self.workers.len()) as usize;
        let msg = crate::mqtt::registry::Msg::Restored { key, kept, will_kept };
        self.hand_to(w, ShardMsg::Mqtt(msg), false);
    }

    /// A persistent session's record to the keys bucket (an empty one: it
    /// ended), streamed like retained values.
    async fn write_session(&mut self, key: &str, record: Option<Vec<u8>>) {
        if !self.connected.load(Ordering::Relaxed) {
            self.drops += 1;
            return;
        }
        let shared = bucket::SharedSession {
            node: self.cfg.node.clone(),
            incarnation: self.incarnation,
            record: Bytes::from(record.unwrap_or_default()),
            key: key.to_owned(),
        };
        let Ok(value) = rmp_serde::to_vec(&shared) else { return };
        let subject = format!("{}{}", self.keys_subject, bucket::session_key(key));
        match self.js.publish(subject, Bytes::from(value)).await {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        log::warn!("cluster: an MQTT session's record was not written: {e}");
                    }
                });
            }
            Err(e) => {
                self.drops += 1;
                log::warn!("cluster: an MQTT session's record was not written: {e}");
            }
        }
    }

    /// Messages queued for an offline persistent session of this node, to
    /// the queues stream, through its writer task (in order with the
    /// purges). A full writer drops them (counted): the messages are still
    /// in the session's queue, only their copy for a survivor is missing.
    fn write_queued(&mut self, key: &str, messages: Vec<(u64, Vec<u8>)>) {
        let Some((q, tx)) = &self.queues else { return };
        let subject = q.subject(&self.cfg.node, key);
        for (seq, message) in messages {
            let Ok(payload) = rmp_serde::to_vec(&(seq, Bytes::from(message))) else { continue };
            let op = bucket::QueueOp::Write { subject: subject.clone(), payload: Bytes::from(payload) };
            if tx.try_send(op).is_err() {
                self.drops += 1;
            }
        }
    }

    /// A session's queued messages are no longer this node's to keep: the
    /// purge waits for room (a dropped one would leave messages to be
    /// delivered again).
    async fn clear_queued(&mut self, key: &str) {
        let Some((q, tx)) = &self.queues else { return };
        let op = bucket::QueueOp::Purge { subject: q.subject(&self.cfg.node, key) };
        let _ = tx.send(op).await;
    }

    /// Whether a session of `node` in its life `incarnation` is over: the
    /// node is taken for dead, or has another life now.
    fn will_due(&self, node: &str, incarnation: u64) -> bool {
        if node == self.cfg.node {
            return incarnation != self.incarnation;
        }
        self.by_name.get(node).is_some_and(|&id| {
            let p = &self.peers[id as usize];
            !p.alive || (p.incarnation != 0 && p.incarnation != incarnation)
        })
    }

    /// Asks the deciding task to apply a will whose session's life is over
    /// (every node that sees it asks; the compare-and-set lets one do it).
    fn ask_will(&mut self, key: &str) {
        let Some((node, incarnation)) = self.wills.get(key).cloned() else { return };
        let job = bucket::Cas::Will { key: key.to_owned(), node, incarnation };
        if self.cas.try_send(job).is_err() {
            log::warn!("cluster: the will on {key} could not be asked for (queue full); another node may apply it");
        }
    }

    /// An MQTT session's will entry (or its end): kept while its node's
    /// life lasts, asked for once it is over.
    fn on_mqtt_will(&mut self, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            self.mqtt_wills.remove(&entry.key);
            return;
        }
        let Ok(will) = rmp_serde::from_slice::<bucket::SharedWill>(&entry.value) else {
            return log::debug!("cluster: an MQTT will entry {} does not read", entry.key);
        };
        if will.node != self.cfg.node {
            self.peer(&will.node);
        }
        let due = self.will_due(&will.node, will.incarnation);
        self.mqtt_wills.insert(entry.key.clone(), (will.node, will.incarnation, will.delay));
        if due {
            self.ask_mqtt_will(&entry.key);
        }
    }

    /// A persistent MQTT session's record (or its end), kept by key so that
    /// a survivor can take the session in when its node dies.
    fn on_mqtt_session(&mut self, entry: kv::Entry) {
        let shared = (entry.operation == kv::Operation::Put)
            .then(|| rmp_serde::from_slice::<bucket::SharedSession>(&entry.value).ok())
            .flatten()
            .filter(|s| !s.record.is_empty() && !s.key.is_empty());
        match shared {
            Some(s) => {
                self.mqtt_sessions.insert(entry.key, (s.node, s.incarnation, Arc::from(s.key)));
            }
            None => drop(self.mqtt_sessions.remove(&entry.key)),
        }
    }

    /// Node `id` is taken for dead: of its persistent MQTT sessions, this
    /// node takes in those it is the chosen one for (rendezvous hashing of
    /// the client ID over the live nodes' names, so the survivors share
    /// them out without talking, and each is asked for once). A session
    /// taken in is offline here, its subscriptions made again, so what is
    /// published for it from then on waits for its client, wherever that
    /// comes back (a claim then takes it over from here, with its queue).
    /// A restart (a new life seen before the verdict) is not a death: its
    /// node may have the sessions back from its store.
    fn adopt_sessions_of(&mut self, id: NodeId) {
        let name = self.peers[id as usize].name.clone();
        if !self.connected.load(Ordering::Relaxed) {
            return;
        }
        let mut live: Vec<&str> =
            self.peers.iter().filter(|p| p.alive && p.workers > 0).map(|p| p.name.as_str()).collect();
        live.push(&self.cfg.node);
        let mine: Vec<(Arc<str>, (String, u64))> = self
            .mqtt_sessions
            .values()
            .filter(|(node, incarnation, _)| *node == name && self.will_due(node, *incarnation))
            .filter(|(_, _, key)| chosen(key, &live) == self.cfg.node)
            .map(|(node, incarnation, key)| (key.clone(), (node.clone(), *incarnation)))
            .collect();
        if !mine.is_empty() {
            log::info!("cluster: node {name} is gone: taking in {} of its persistent MQTT sessions", mine.len());
        }
        for (key, holder) in mine {
            if self.adopting.contains_key(&key) {
                continue;
            }
            match self.cas.try_send(bucket::Cas::Adopt { key: key.clone(), holder }) {
                Ok(()) => drop(self.adopting.insert(key, Vec::new())),
                Err(_) => log::warn!(
                    "cluster: too many decisions queued: a persistent MQTT session of {name} is not taken in \
                     (its client resumes it from its record)"
                ),
            }
        }
    }

    /// The deciding task's answer to a session taken in: to the client
    /// ID's owner worker, then the claims that waited for it.
    fn adopted(&mut self, key: Arc<str>, left: Option<crate::mqtt::registry::Left>) {
        let (realm, client) = key.split_once('\0').unwrap_or(("", &key));
        let w = owner_of(realm, client, self.workers.len()) as usize;
        if let Some(left) = left {
            let msg = crate::mqtt::registry::Msg::Adopt { key: key.clone(), left: Box::new(left) };
            self.hand_to(w, ShardMsg::Mqtt(msg), false);
        }
        for msg in self.adopting.remove(&key).unwrap_or_default() {
            self.hand_to(w, msg, false);
        }
    }

    /// Asks for the MQTT will under `bucket_key`, whose session's node is
    /// gone, once its delay has passed (every node asks; one wins). A
    /// client that resumes the session elsewhere meanwhile takes the entry
    /// out first (`owned`), and the will is not sent.
    fn ask_mqtt_will(&mut self, bucket_key: &str) {
        let Some((node, incarnation, delay)) = self.mqtt_wills.remove(bucket_key) else { return };
        let job = bucket::Cas::MqttWill { bucket_key: bucket_key.to_owned(), node, incarnation, publish: true };
        if delay == 0 {
            if self.cas.try_send(job).is_err() {
                log::warn!(
                    "cluster: the MQTT will {bucket_key} could not be asked for (queue full); another node may send it"
                );
            }
            return;
        }
        let cas = self.cas.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let _ = cas.send(job).await;
        });
    }

    /// The wills of node `id`'s sessions that are now due.
    fn wills_of(&mut self, id: NodeId) {
        let name = self.peers[id as usize].name.clone();
        let mqtt: Vec<String> = self
            .mqtt_wills
            .iter()
            .filter(|(_, (node, incarnation, _))| *node == name && self.will_due(node, *incarnation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in mqtt {
            self.ask_mqtt_will(&key);
        }
        let due: Vec<String> = self
            .wills
            .iter()
            .filter(|(_, (node, incarnation))| *node == name && self.will_due(node, *incarnation))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.ask_will(&key);
        }
    }

    /// Another node's dealer message, to the worker it names.
    fn on_rpc(&mut self, from: &str, payload: &[u8]) {
        if from == self.cfg.node || from.is_empty() {
            return;
        }
        let id = self.peer(from);
        if id as usize >= MAX_NODES {
            self.drops += 1;
            return;
        }
        let mut decoded = Vec::new();
        wire::split_batch(payload, |one| decoded.push(one.and_then(|b| rpc::decode(b, id))));
        for one in decoded {
            match one {
                Ok((worker, msg)) if (worker as usize) < self.workers.len() => {
                    self.received += 1;
                    // A claim of a client ID this node is taking in waits
                    // for the session to be here.
                    if let ShardMsg::Mqtt(crate::mqtt::registry::Msg::RemoteClaim(c)) = &msg {
                        if let Some(parked) = self.adopting.get_mut(&c.key) {
                            parked.push(msg);
                            continue;
                        }
                    }
                    self.hand_to(worker as usize, msg, false)
                }
                Ok(_) => self.drops += 1,
                Err(e) => {
                    self.drops += 1;
                    log::debug!("cluster: a message from {from} is refused: {e}");
                }
            }
        }
    }

    /// Tells every worker that node `id` has (or no longer has) interest in `key`.
    fn route(&mut self, node: NodeId, key: &SubKey, add: bool) {
        let id = if add {
            let next = &mut self.next_id;
            let e = self.remote_ids.entry(key.clone()).or_insert_with(|| {
                *next += 1;
                (*next, 0)
            });
            e.1 += 1;
            e.0
        } else {
            let Some(e) = self.remote_ids.get_mut(key) else { return };
            e.1 -= 1;
            let id = e.0;
            if e.1 == 0 {
                self.remote_ids.remove(key);
            }
            id
        };
        for w in 0..self.workers.len() {
            let msg = ShardMsg::RemoteRoute { key: key.clone(), subscription: id, node, add };
            self.hand_to(w, msg, false);
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

/// The live node that takes in a dead node's session of client ID `key`:
/// the highest hash of (key, node name), the same answer on every node
/// that sees the same live nodes.
fn chosen<'a>(key: &str, live: &[&'a str]) -> &'a str {
    let score = |node: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes().chain([0]).chain(node.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    live.iter().copied().max_by_key(|n| (score(n), *n)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::chosen;

    #[test]
    fn the_adopter_is_one_answer_whatever_the_order_and_sessions_spread() {
        let live = ["a", "b", "c"];
        let mut per = std::collections::HashMap::new();
        for i in 0..300 {
            let key = format!("realm1\0client-{i}");
            let one = chosen(&key, &live);
            assert_eq!(one, chosen(&key, &["c", "a", "b"]), "order does not matter");
            *per.entry(one).or_insert(0) += 1;
            // A node leaving moves only its own sessions.
            if one != "c" {
                assert_eq!(chosen(&key, &["a", "b"]), one);
            }
        }
        assert!(live.iter().all(|n| per.get(n).copied().unwrap_or(0) > 60), "spread: {per:?}");
        assert_eq!(chosen("k", &[]), "");
    }
}
