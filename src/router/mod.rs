//! The protocol-neutral routing core.
//!
//! Nothing in here knows WAMP or MQTT wire formats. It holds the routing
//! tables that every worker replicates ([`topics::TopicTable`] and
//! [`procs::ProcTable`]), the state of the keys this worker owns
//! ([`owner::Owner`]), and the message set workers exchange ([`ShardMsg`]).

pub mod fold;
pub mod history;
pub mod keys;
pub mod meta;
pub mod owner;
pub mod procs;
pub mod retained;
pub mod topics;
pub mod trie;

use crate::payload::Payload;
use crate::value::Dict;
use std::sync::Arc;
use std::time::Instant;

/// Realm names are shared, immutable strings.
pub type Realm = Arc<str>;

/// Index of a worker thread.
pub type WorkerId = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchPolicy {
    Exact,
    Prefix,
    Wildcard,
    /// An MQTT filter in core form: `+` is one component, a last `#` is that
    /// component and everything below (see `crate::mqtt::topic`).
    Filter,
}

impl MatchPolicy {
    /// The WAMP name (`match` option, meta API); MQTT filters are `wildcard`.
    pub fn name(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard | MatchPolicy::Filter => "wildcard",
        }
    }

    pub fn parse(s: &str) -> Option<MatchPolicy> {
        match s {
            "exact" => Some(MatchPolicy::Exact),
            "prefix" => Some(MatchPolicy::Prefix),
            "wildcard" => Some(MatchPolicy::Wildcard),
            _ => None,
        }
    }
}

/// What identifies one subscription router-wide: sessions subscribing to the
/// same topic under the same policy share one subscription ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub realm: Realm,
    pub topic: String,
    pub policy: MatchPolicy,
    /// MQTT shared subscription group (`$share/group/...`): each message
    /// goes to one member of the group.
    pub share: Option<Arc<str>>,
    /// fox-wamp's subscribe `filter`, as canonical JSON: only events whose
    /// value meets it (`keys::fits`) are delivered. Subscribers with the
    /// same topic, policy and filter share one subscription, so the filter
    /// is evaluated once per publication, not per subscriber.
    pub filter: Option<Arc<str>>,
}

/// A session anywhere in the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionRef {
    pub worker: WorkerId,
    pub id: u64,
}

/// A publication's body in the form its publisher sent it; converted for
/// subscribers of the other protocol once per worker (`crate::mqtt::payload`).
#[derive(Debug, Clone)]
pub enum Body {
    Wamp(Payload),
    Mqtt(bytes::Bytes),
}

/// Message properties that travel with a publication unchanged (MQTT 5
/// application properties; WAMP publishers send none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MsgProps {
    pub payload_format: Option<u8>,
    /// Message expiry interval in seconds, as received.
    pub expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation: Option<bytes::Bytes>,
    pub user: Vec<(String, String)>,
}

impl MsgProps {
    pub fn is_empty(&self) -> bool {
        *self == MsgProps::default()
    }
}

/// One published event, shared (behind an `Arc`) by every worker that
/// delivers it. Decoded once at the publisher's worker.
#[derive(Debug)]
pub struct Publication {
    pub realm: Realm,
    pub topic: String,
    pub id: u64,
    pub publisher: SessionRef,
    pub exclude_me: bool,
    pub body: Body,
    /// MQTT QoS it was published with (0 for WAMP).
    pub qos: u8,
    /// Published with the retain flag (MQTT) or `retain: true` (WAMP).
    pub retain: bool,
    pub props: Option<Box<MsgProps>>,
    /// Past this instant the message is not delivered (MQTT 5 expiry).
    pub expires: Option<Instant>,
    /// When the PUBLISH was decoded: start of the publish->deliver histogram.
    pub started: Instant,
    /// The publisher, if it is disclosed to subscribers (WAMP `disclose_me`).
    pub disclosed: Option<Box<Identity>>,
    /// Which subscribers may receive it (WAMP black- and whitelisting).
    pub receivers: Option<Box<Receivers>>,
    /// WAMP payload passthru mode: the `ppt_*` options, passed to EVENT.
    pub ppt: Option<Box<Dict>>,
    /// `--durability sync`: the publisher's worker and ticket, told by each
    /// worker it routes this to once what it queued for persistent MQTT
    /// sessions is on disk (so PUBACK means stored for them too).
    pub durable_ack: Option<(WorkerId, u64)>,
}

/// The session ID the router's own publications and calls come from (no
/// client session has it: session IDs start at 1).
pub const ROUTER_SESSION: u64 = 0;

impl Publication {
    /// A retained value the router publishes itself (a reducer's result, a
    /// table's row): from its caller session 0 on `worker`, QoS 0, no
    /// expiry, nothing disclosed.
    pub fn router_value(
        realm: Realm,
        topic: String,
        id: u64,
        worker: WorkerId,
        body: Body,
        now: Instant,
    ) -> Publication {
        Publication {
            realm,
            topic,
            id,
            publisher: SessionRef { worker, id: ROUTER_SESSION },
            exclude_me: false,
            body,
            qos: 0,
            retain: true,
            props: None,
            expires: None,
            started: now,
            disclosed: None,
            receivers: None,
            ppt: None,
            durable_ack: None,
        }
    }
}

/// A publication's black- and whitelists (WAMP `exclude`, `eligible`, and
/// their `_authid` / `_authrole` forms). A subscriber receives it if it is
/// in every `eligible*` list given and in no `exclude*` list. The lists are
/// sorted, so checking one subscriber costs a binary search per list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receivers {
    pub eligible: Option<Vec<u64>>,
    pub eligible_authid: Option<Vec<String>>,
    pub eligible_authrole: Option<Vec<String>>,
    pub exclude: Vec<u64>,
    pub exclude_authid: Vec<String>,
    pub exclude_authrole: Vec<String>,
}

impl Receivers {
    /// Sorts the lists (for `admits`).
    pub fn sorted(mut self) -> Receivers {
        if let Some(l) = &mut self.eligible {
            l.sort_unstable();
        }
        self.exclude.sort_unstable();
        for l in [&mut self.eligible_authid, &mut self.eligible_authrole].into_iter().flatten() {
            l.sort_unstable();
        }
        self.exclude_authid.sort_unstable();
        self.exclude_authrole.sort_unstable();
        self
    }

    pub fn admits(&self, session: u64, authid: &str, authrole: &str) -> bool {
        let has = |l: &Vec<String>, x: &str| l.binary_search_by(|v| v.as_str().cmp(x)).is_ok();
        self.eligible.as_ref().is_none_or(|l| l.binary_search(&session).is_ok())
            && self.eligible_authid.as_ref().is_none_or(|l| has(l, authid))
            && self.eligible_authrole.as_ref().is_none_or(|l| has(l, authrole))
            && self.exclude.binary_search(&session).is_err()
            && !has(&self.exclude_authid, authid)
            && !has(&self.exclude_authrole, authrole)
    }
}

/// Who a caller or publisher is, as disclosed to callees and subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub session: u64,
    pub authid: String,
    pub authrole: String,
}

impl Publication {
    /// A plain publication: QoS 0, no retain flag, no expiry, nothing
    /// disclosed or restricted; the fields that differ are set after.
    pub fn new(realm: Realm, topic: String, id: u64, publisher: SessionRef, body: Body) -> Publication {
        Publication {
            realm,
            topic,
            id,
            publisher,
            exclude_me: false,
            body,
            qos: 0,
            retain: false,
            props: None,
            expires: None,
            started: Instant::now(),
            disclosed: None,
            receivers: None,
            ppt: None,
            durable_ack: None,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| now >= t)
    }
}

/// A local subscriber: a WAMP connection, or an MQTT session (which may be
/// offline, so it is not a connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    Wamp(usize),
    Mqtt(usize),
}

/// Where the answer to a retained-message query goes.
#[derive(Clone, Debug)]
pub struct RetainedReply {
    pub worker: WorkerId,
    pub member: Member,
    pub session: u64,
    pub subscription: u64,
    pub policy: MatchPolicy,
}

/// A call on its way to the callee's worker.
#[derive(Debug)]
pub struct Invoke {
    pub caller: SessionRef,
    pub request: u64,
    pub callee: u64,
    pub registration: u64,
    /// The URI called.
    pub procedure: String,
    /// It matched a pattern-based registration: INVOCATION says `procedure`.
    pub pattern: bool,
    pub payload: Payload,
    /// The caller asked for progressive results (`receive_progress`).
    pub receive_progress: bool,
    /// The caller, if it is disclosed to the callee.
    pub disclosed: Option<Box<Identity>>,
    /// Progressive call invocations: more input follows (`progress: true`).
    pub progress: bool,
    /// More input for an invocation already under way (same request).
    pub continuation: bool,
    /// Payload passthru mode: the CALL's `ppt_*` options.
    pub ppt: Option<Box<Dict>>,
    /// The caller announced payload passthru mode (a YIELD in that mode
    /// can reach it).
    pub caller_ppt: bool,
    /// More INVOCATION details, from the router's own calls (a reducer's
    /// `topic` and `retained`).
    pub details: Option<Box<Dict>>,
}

impl Invoke {
    /// A call the router makes itself (caller session 0 on `worker`): to a
    /// dynamic authorizer or authenticator, or a reducer.
    #[allow(clippy::too_many_arguments)]
    pub fn router_call(
        worker: WorkerId,
        request: u64,
        callee: u64,
        registration: u64,
        procedure: String,
        pattern: bool,
        payload: Payload,
        details: Option<Box<Dict>>,
    ) -> Invoke {
        Invoke {
            caller: SessionRef { worker, id: ROUTER_SESSION },
            request,
            callee,
            registration,
            procedure,
            pattern,
            payload,
            receive_progress: false,
            disclosed: None,
            progress: false,
            continuation: false,
            ppt: None,
            caller_ppt: false,
            details,
        }
    }
}

/// The end of a call (or a progressive result), on its way back to the caller's worker.
#[derive(Debug)]
pub struct CallDone {
    pub caller: u64,
    pub request: u64,
    pub outcome: CallOutcome,
}

#[derive(Debug)]
pub enum CallOutcome {
    /// The final result (with the YIELD's `ppt_*` options, if any).
    Result(Payload, Option<Box<Dict>>),
    /// A progressive result: more follow, the call goes on.
    Progress(Payload, Option<Box<Dict>>),
    Error {
        error: String,
        details: Dict,
        payload: Payload,
    },
}

/// Why a call is interrupted, and how (WAMP CANCEL modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interruption {
    /// The router's timeout: the caller already has its ERROR.
    Timeout,
    /// CANCEL `skip`: forget the invocation, tell the callee nothing.
    Skip,
    /// CANCEL `killnowait`: forget it, INTERRUPT the callee.
    KillNoWait,
    /// CANCEL `kill`: INTERRUPT the callee, whose answer ends the call.
    Kill,
}

/// A REGISTER on its way to the procedure's owner.
#[derive(Debug)]
pub struct RegRequest {
    pub realm: Realm,
    pub procedure: String,
    pub policy: MatchPolicy,
    pub invoke: procs::InvokePolicy,
    pub session: SessionRef,
    pub request: u64,
    pub started: Instant,
    /// REGISTER option `disclose_caller`.
    pub disclose_caller: bool,
    /// REGISTER option `reducer` (the registration's: every callee of a
    /// shared registration must give the same).
    pub reducer: bool,
}

/// A retained publish with fox-wamp's key options, to the key's owner,
/// which decides it (so two workers never both win a `watch` lock).
#[derive(Debug)]
pub struct KeyWrite {
    /// The publication; its topic is the key. Routed by the owner if accepted.
    pub p: Arc<Publication>,
    /// `when`: the condition the key's current value must meet.
    pub when: Option<crate::value::Value>,
    /// `watch`: a failed condition waits for the key to change.
    pub watch: bool,
    /// `will`: tie the key to the publisher; it gets this body when the
    /// publisher's session ends (empty: deleted).
    pub will: Option<Body>,
    /// Where the answer goes (`KeyReply`, or `Stored` once durable).
    pub reply: Option<(WorkerId, u64)>,
    /// `trace`: recorded in the topic's history even without a rule.
    pub trace: bool,
}

/// A callee leaving a registration, on its way to the procedure's owner.
#[derive(Debug)]
pub struct RegRelease {
    pub realm: Realm,
    pub procedure: String,
    pub policy: MatchPolicy,
    pub registration: u64,
    pub callee: SessionRef,
}

/// Messages between workers. Every variant is handled without blocking.
/// Each worker's inbox holds `server::INBOX_CAPACITY` of them, allocated
/// up front, and every send moves one: rare large variants are boxed so
/// the common ones (`Publish`, `Invoke`, `CallDone`) stay small (see the
/// size check below).
#[derive(Debug)]
pub enum ShardMsg {
    /// A new connection, from the acceptor.
    Accept(mio::net::TcpStream, Listener),
    /// New TLS certificates (SIGHUP): for connections accepted from now on.
    TlsConfig(Arc<rustls::ServerConfig>),
    /// Close every session and stop.
    Shutdown,
    /// The admin listener asks for this worker's report.
    Inspect(crossbeam_channel::Sender<crate::inspect::WorkerReport>),
    /// The admin listener's kill: true back if the session was here.
    Kill {
        session: u64,
        reply: crossbeam_channel::Sender<bool>,
    },
    /// From the server once every worker has routed the sessions it
    /// restored at start: offline deadlines (wills, expiry) may run.
    Started,
    /// A retained write refused at its key's owner: over a bound (the
    /// realm's keys, the value's size). For the publisher's ticket.
    OverLimit {
        ticket: u64,
        why: Arc<str>,
    },
    /// A publication from another node (the cluster thread, to the topic's
    /// owner): routed here like a local one, never forwarded again; of the
    /// MQTT shared subscriptions, only those the sender picked this node
    /// for (`cluster::wire::key_hash`) are served.
    FromCluster(Arc<Publication>, Box<[u64]>),
    /// From the cluster thread: `node` has (`add`) or no longer has
    /// subscribers of `key` (`remote_topics`; `subscription` is the cluster
    /// thread's number for the key).
    RemoteRoute {
        key: SubKey,
        subscription: u64,
        node: u16,
        add: bool,
    },
    /// From the cluster thread to a topic's owner: a write of the key's
    /// retained value in the keys bucket, at `revision`, this node's own
    /// or another's (applied here, not routed: its event travels as a
    /// publication). See `Shard::retained_from_cluster`.
    RetainedFromCluster {
        p: Arc<Publication>,
        revision: u64,
        own: bool,
    },
    /// From the cluster thread to a topic's owner: the will of a key tied
    /// to a session of a node that is gone, which this node applied in the
    /// keys bucket at `revision`: the value here, and its event routed.
    DeadWill {
        p: Arc<Publication>,
        revision: u64,
    },
    /// From the cluster thread: the MQTT will of a session of a node that
    /// is gone, which this node won the right to publish.
    MqttDeadWill(Box<Publication>),
    /// From the cluster thread to a topic's owner: the keys bucket's
    /// decision on its conditional write of the key (`ClusterReq::CasWrite`).
    CasDone {
        realm: Realm,
        topic: String,
        outcome: crate::cluster::CasOutcome,
    },
    /// From the cluster thread to a topic's owner: the keys bucket's answer
    /// to one of its writes of the key (its revision; none: it failed).
    RetainedAck {
        realm: Realm,
        topic: String,
        revision: Option<u64>,
    },
    /// From the cluster thread, to every worker: the other nodes' callees
    /// of a registration (none: it is gone from them).
    RemoteProcs {
        realm: Realm,
        policy: MatchPolicy,
        reg: crate::cluster::procs::RemoteReg,
    },
    /// From the cluster thread to a procedure's owner: its claim of a new
    /// registration is decided (`Owner::claimed`): granted, or refused
    /// with this error URI.
    Claimed {
        ticket: u64,
        refused: Option<&'static str>,
    },
    /// From the cluster thread, to every worker: node `node` has `workers`
    /// workers (0: it is not alive).
    NodeWorkers {
        node: u16,
        workers: u16,
    },
    /// From the cluster thread, to every worker: node `node` is gone (or
    /// came back as a new life): calls to and from its sessions end.
    NodeLost {
        node: u16,
    },
    /// From the cluster thread: answer `ClusterReq::Synced` with `token`
    /// (every `RemoteRoute` sent before it is applied here).
    ClusterSync {
        token: u64,
    },
    /// Deliver to local subscribers; `shared` lists the shared subscriptions
    /// for which this worker was picked to deliver to one member.
    Publish(Arc<Publication>, Vec<u64>),

    /// To a key's owner: worker `from` has its first subscriber of `key`.
    SubAcquire {
        key: SubKey,
        from: WorkerId,
    },
    /// To a key's owner: worker `from` has no subscriber of `key` left;
    /// `session` (if given) was the last, and is named in the meta event if
    /// the subscription ends (`SubDeleted`).
    SubRelease {
        key: SubKey,
        from: WorkerId,
        session: Option<u64>,
    },
    /// From the owner, once every worker routes `key` to the requester;
    /// `created`: this acquire created the subscription.
    SubGranted {
        key: SubKey,
        subscription: u64,
        created: bool,
    },
    /// From the owner to the worker that released a subscription's last subscriber.
    SubDeleted {
        realm: Realm,
        subscription: u64,
        session: u64,
    },
    /// Broadcast by the owner: route events matching `key` to `worker`.
    RouteAdd {
        key: SubKey,
        subscription: u64,
        /// When the owner created the subscription (ms since the Unix epoch).
        created: u64,
        worker: WorkerId,
        barrier: Barrier,
    },
    /// Broadcast by the owner: stop routing `key` to `worker`.
    RouteRemove {
        key: SubKey,
        subscription: u64,
        worker: WorkerId,
    },

    /// To a procedure's owner.
    RegAcquire(RegRequest),
    /// To a procedure's owner: a callee left the registration.
    RegRelease(RegRelease),
    /// From the owner, to the registering session's worker: the
    /// registration ID, and whether this REGISTER created it.
    RegReply {
        realm: Realm,
        procedure: String,
        policy: MatchPolicy,
        session: u64,
        request: u64,
        started: Instant,
        result: Result<(u64, bool), &'static str>,
    },
    /// Broadcast by the owner: a callee joins a registration.
    ProcAdd {
        realm: Realm,
        procedure: String,
        policy: MatchPolicy,
        added: procs::Added,
        barrier: Barrier,
    },
    /// Broadcast by the owner: a callee leaves a registration.
    ProcRemove {
        realm: Realm,
        procedure: String,
        policy: MatchPolicy,
        registration: u64,
        callee: SessionRef,
    },
    /// From the owner to the worker of the last callee: the registration is gone.
    RegDeleted {
        realm: Realm,
        registration: u64,
        session: u64,
    },

    /// A worker applied a broadcast change.
    BarrierAck {
        barrier: u64,
    },

    Invoke(Box<Invoke>),
    /// To a registration's owner: pick the callee of a round-robin call.
    Pick {
        realm: Realm,
        registration: u64,
        caller: SessionRef,
        request: u64,
    },
    /// The owner's pick, back at the caller's worker (`None`: the
    /// registration is gone).
    Picked {
        caller: u64,
        request: u64,
        callee: Option<procs::Callee>,
    },
    CallDone(Box<CallDone>),
    /// The caller left: drop its pending invocations (late YIELDs are dropped).
    CallerGone {
        caller: SessionRef,
    },
    /// To the callee's worker: a call timed out or was canceled at the
    /// caller's worker.
    Interrupt {
        callee: u64,
        caller: SessionRef,
        request: u64,
        why: Interruption,
    },

    /// To the topic's owner: set (or, with an empty body, clear) its
    /// retained value; with an acknowledgement (worker, ticket), that
    /// worker is told once the value is durable (`Stored`).
    Retain(Arc<Publication>, Option<(WorkerId, u64)>),
    /// To a topic's owner: a publication for the topic's reducer
    /// (`worker::reduce`); the publisher's worker and ticket, told once it
    /// is reduced (`Stored`) or refused (`OverLimit`).
    Reduce(Arc<Publication>, Option<(WorkerId, u64)>),
    /// To the owner of a source row's topic (`worker::tables`).
    TableRow(Box<crate::worker::tables::RowWrite>),
    /// To the owner of an aggregate row's topic.
    TableDelta(Box<crate::worker::tables::Delta>),
    /// To a topic's owner (exact) or every worker (patterns), of every
    /// live node: the history after publication `after`, for a
    /// subscription replaying it.
    HistoryQuery {
        realm: Realm,
        pattern: String,
        after: u64,
        reply: RetainedReply,
    },
    /// The answer (one per worker asked, possibly empty): the events, and
    /// the anchor publication's time if this worker has it
    /// (`history::Replayed` says how they merge).
    HistoryReplay {
        reply: RetainedReply,
        anchor: Option<u64>,
        events: Vec<history::Recorded>,
        /// The node it comes from (`None`: this one's workers).
        from: Option<crate::cluster::NodeId>,
    },
    /// To a topic's owner: keep this event in the topic's history.
    Record {
        p: Arc<Publication>,
        limit: usize,
        max_age_ms: Option<u64>,
    },
    /// To a key's owner: a conditional / session-bound retained publish.
    KeyWrite(Box<KeyWrite>),
    /// From a key's owner: a `KeyWrite` was refused (its condition failed),
    /// or accepted where nothing waits for a store.
    KeyReply {
        ticket: u64,
        accepted: bool,
    },
    /// To a key's owner: this session ended; its will on the key applies,
    /// its waiting publishes go.
    KeySessionGone {
        realm: Realm,
        topic: String,
        session: SessionRef,
    },
    /// From the store thread: these tickets' writes are on disk (or failed).
    Stored {
        tickets: Vec<u64>,
        error: Option<Arc<str>>,
    },
    /// To the owner (exact) or every worker (patterns): retained values matching.
    RetainedQuery {
        realm: Realm,
        pattern: String,
        reply: RetainedReply,
    },
    /// The answer: sent even when empty only if there is something to send.
    Retained {
        reply: RetainedReply,
        values: Vec<Arc<Publication>>,
    },

    /// A meta API question for this worker's sessions of `realm`; the
    /// answer goes to worker `reply` as `MetaAnswer` for `gather`.
    MetaQuery {
        realm: Realm,
        query: meta::MetaQuery,
        reply: WorkerId,
        gather: u64,
    },
    MetaAnswer {
        gather: u64,
        answer: meta::MetaAnswer,
        /// The node it comes from (`None`: this one's workers).
        from: Option<crate::cluster::NodeId>,
    },
    /// To a callee's worker: the meta API revokes its registration.
    Revoke {
        callee: u64,
        registration: u64,
        reason: Option<String>,
    },

    /// MQTT session registry, at the owner of the client ID.
    Mqtt(crate::mqtt::registry::Msg),
    /// `$SYS` numbers, gathered by worker 0.
    Sys(crate::mqtt::sys::Msg),
}

/// Which listener a connection came in on.
// An inbox slot: a `SubKey` (80 bytes) with a few fields is the largest
// variant left unboxed.
const _: () = assert!(std::mem::size_of::<ShardMsg>() <= 128, "box the large ShardMsg variant");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// HTTP: WebSocket upgrade to WAMP (or to MQTT on the MQTT path).
    Http,
    /// MQTT over TCP.
    Mqtt,
    /// WAMP over RawSocket.
    RawSocket,
    /// `Http` over TLS (wss://).
    HttpTls,
    /// `Mqtt` over TLS.
    MqttTls,
    /// `RawSocket` over TLS.
    RawSocketTls,
}

/// Identifies a pending barrier at its owner worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    pub owner: WorkerId,
    pub id: u64,
}

/// The worker that owns a key: a stable hash of realm and key, so every
/// worker computes the same owner without talking to anyone.
pub fn owner_of(realm: &str, key: &str, workers: usize) -> WorkerId {
    // FNV-1a: tiny, stable across runs and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in realm.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % workers as u64) as WorkerId
}

/// The `wamp.` namespace (core form): meta events, published by the router
/// alone. MQTT wildcards at the first level do not match it (like `$SYS`).
pub fn is_meta(topic: &str) -> bool {
    topic == "wamp" || topic.starts_with("wamp.")
}

/// Topics only the router publishes to (`$SYS` and `wamp.`).
pub fn is_reserved(topic: &str) -> bool {
    is_meta(topic) || crate::mqtt::sys::is_sys(topic)
}

/// Router publications that stay on their node in a cluster: `$SYS`
/// (each broker's own) and the subscription and registration meta events
/// (they name this node's IDs, which mean nothing on another). Session
/// meta events (`wamp.session.on_join`, `on_leave`) go to every node.
pub fn node_local(topic: &str) -> bool {
    crate::mqtt::sys::is_sys(topic) || (is_meta(topic) && !topic.starts_with("wamp.session."))
}

/// Wall-clock time in milliseconds since the Unix epoch (creation times
/// reported by the meta API).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC
/// (`2026-12-01T12:52:49.123Z`), the meta API's `created`.
pub fn iso8601(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// Router-scope IDs (subscriptions, registrations, publications) that are
/// unique across workers without coordination: worker `w` of `n` hands out
/// `w + 1, w + 1 + n, w + 1 + 2n, ...`, all within [1, 2^53].
#[derive(Debug)]
pub struct IdGen {
    first: u64,
    next: u64,
    step: u64,
}

impl IdGen {
    pub fn new(worker: WorkerId, workers: usize) -> IdGen {
        let first = u64::from(worker) + 1;
        IdGen { first, next: first, step: workers as u64 }
    }

    /// Starts at a random place in the worker's sequence (cluster nodes:
    /// publication IDs are WAMP's global scope, and nodes number without
    /// asking each other; two nodes' sequences meet only after about 2^51
    /// IDs, decades at a million a second).
    pub fn start_at_random(&mut self) {
        let steps = (crate::wamp::message::MAX_ID / 2) / self.step;
        self.next = self.first + self.step * rand::Rng::gen_range(&mut rand::thread_rng(), 0..steps);
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next += self.step;
        if self.next > crate::wamp::message::MAX_ID {
            // 2^53 / n IDs per worker: at a million a second that is centuries.
            self.next = self.first;
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_their_worker_class_from_a_random_start() {
        let mut a = IdGen::new(1, 4);
        a.start_at_random();
        let ids: Vec<u64> = (0..3).map(|_| a.next_id()).collect();
        assert!(ids.iter().all(|&id| id % 4 == 2 && (1..=crate::wamp::message::MAX_ID).contains(&id)));
        assert_eq!((ids[1] - ids[0], ids[2] - ids[1]), (4, 4));
        let mut b = IdGen::new(1, 4);
        b.start_at_random();
        assert_ne!(a.next_id(), b.next_id(), "two nodes start apart (1 in 2^50 to fail)");
    }

    #[test]
    fn iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_796_129_569_007), "2026-12-01T12:52:49.007Z");
    }

    #[test]
    fn receivers_combine_every_list() {
        let ids = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let r = Receivers { eligible: Some(vec![9, 3, 5]), exclude: vec![5], ..Default::default() }.sorted();
        assert!(r.admits(3, "a", "x") && r.admits(9, "a", "x"));
        assert!(!r.admits(5, "a", "x"), "eligible and excluded");
        assert!(!r.admits(4, "a", "x"), "not eligible");
        let r = Receivers {
            eligible_authrole: ids(&["staff", "manager"]),
            exclude_authid: vec!["bob".into()],
            ..Default::default()
        }
        .sorted();
        assert!(r.admits(1, "alice", "manager"));
        assert!(!r.admits(1, "bob", "manager") && !r.admits(1, "alice", "guest"));
        assert!(Receivers::default().admits(1, "", ""));
    }

    #[test]
    fn ids_are_disjoint_across_workers() {
        let mut seen = std::collections::HashSet::new();
        for w in 0..3 {
            let mut g = IdGen::new(w, 3);
            for _ in 0..1000 {
                let id = g.next_id();
                assert!((1..=crate::wamp::message::MAX_ID).contains(&id));
                assert!(seen.insert(id));
            }
        }
    }

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("realm1", "a.b", 4), owner_of("realm1", "a.b", 4));
        let owners: std::collections::HashSet<_> = (0..100).map(|i| owner_of("realm1", &format!("t{i}"), 4)).collect();
        assert_eq!(owners.len(), 4);
    }
}
