//! The WAMP meta API, served by the router itself:
//! - meta events (`wamp.session.on_join`, `wamp.subscription.on_create`,
//!   `wamp.registration.on_register`, ...): ordinary publications from the
//!   router, built only when someone is subscribed (one table lookup);
//! - meta procedures: what the replicated tables know (subscriptions,
//!   registrations) is answered on the caller's worker at once; what only
//!   each worker knows (its sessions, its subscribers) is gathered: one
//!   `MetaQuery` per worker concerned, the answers merged here
//!   (`Gathering`), the call answered when the last one arrives or when
//!   the deadline passes;
//! - testaments (`wamp.session.add_testament`), published when the session
//!   ends, and registration revocation (`wamp.registration.remove`).
//!
//! Subscriptions to `wamp.` topics (the meta events themselves) get no
//! subscription meta events, so that watching them is not itself noise.
//! Subscription meta events name WAMP sessions; `on_create` / `on_delete`
//! are also sent for subscriptions made and ended by MQTT sessions.

use super::*;
use crate::router::meta::{KillTarget, MetaAnswer, MetaQuery};
use crate::router::WorkerId;
use std::time::Duration;

/// How long a gathered meta call waits for every worker.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Testaments one session may hold (both scopes together).
pub(super) const MAX_TESTAMENTS: usize = 64;

fn quiet(uri: &str) -> bool {
    uri.starts_with("wamp.")
}

/// A meta event: published from the router (publisher session 0), if
/// someone subscribes to it: here, or (session events) on another node.
fn event(w: &mut Shard, realm: &Realm, topic: &str, args: Vec<Value>) {
    let mut any = false;
    w.topics.for_each_match(realm, topic, |_, r| any |= !r.workers.is_empty());
    if !any && !crate::router::node_local(topic) {
        w.remote_topics.for_each_match(realm, topic, |_, r| any |= !r.workers.is_empty());
    }
    if !any {
        return;
    }
    let publisher = SessionRef { worker: w.id, id: 0 };
    let body = Body::Wamp(Payload::args(args));
    let id = w.ids.next_id();
    w.publish(Publication::new(realm.clone(), topic.to_owned(), id, publisher, body));
}

use crate::router::iso8601;

fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

// ---------------------------------------------------------------- events

/// A session's details as a value (the dynamic authorizer's first argument).
pub(super) fn session_dict(w: &Shard, handle: usize) -> Value {
    Value::Dict(session_details(w, handle).unwrap_or_default())
}

/// What the meta API says about a session (`on_join`, `wamp.session.get`).
fn session_details(w: &Shard, handle: usize) -> Option<Dict> {
    let conn = w.conns.get(handle)?;
    let wamp = match &conn.proto {
        crate::conn::Proto::Wamp(c) => c,
        _ => return None,
    };
    let s = wamp.session.as_ref()?;
    let kind = match wamp.framing {
        Framing::WebSocket => "websocket",
        Framing::RawSocket { .. } => "rawsocket",
    };
    let serializer = wamp.ser.subprotocol().trim_start_matches("wamp.2.");
    let peer = match conn.peer {
        Some(std::net::SocketAddr::V4(a)) => format!("tcp4:{}:{}", a.ip(), a.port()),
        Some(std::net::SocketAddr::V6(a)) => format!("tcp6:{}:{}", a.ip(), a.port()),
        _ => "unknown".to_owned(),
    };
    let transport = dict(vec![
        ("type", Value::Str(kind.into())),
        ("serializer", Value::Str(serializer.into())),
        ("peer", Value::Str(peer)),
    ]);
    let Value::Dict(d) = dict(vec![
        ("session", Value::UInt(s.id)),
        ("authid", Value::Str(s.authid.clone())),
        ("authrole", Value::Str(s.authrole.to_string())),
        ("authmethod", Value::Str(s.authmethod.name().into())),
        ("authprovider", Value::Str(s.authprovider.into())),
        ("transport", transport),
    ]) else {
        unreachable!("dict() builds a dictionary")
    };
    Some(d)
}

/// After WELCOME (which may have closed a RawSocket connection that cannot
/// take it: then there is no session to announce).
pub(super) fn joined(w: &mut Shard, handle: usize, realm: &Realm) {
    if let Some(details) = session_details(w, handle) {
        event(w, realm, "wamp.session.on_join", vec![Value::Dict(details)]);
    }
}

pub(super) fn left(w: &mut Shard, s: &WampSession) {
    let args = vec![Value::UInt(s.id), Value::Str(s.authid.clone()), Value::Str(s.authrole.to_string())];
    event(w, &s.realm, "wamp.session.on_leave", args);
}

fn sub_details(id: u64, key: &SubKey, created: u64) -> Value {
    dict(vec![
        ("id", Value::UInt(id)),
        ("created", Value::Str(iso8601(created))),
        ("uri", Value::Str(key.topic.clone())),
        ("match", Value::Str(key.policy.name().into())),
    ])
}

/// The owner created a subscription for `session` (WAMP or MQTT).
pub fn sub_created(w: &mut Shard, key: &SubKey, subscription: u64, session: u64) {
    if quiet(&key.topic) {
        return;
    }
    let created = w.topics.by_id(subscription).map_or(0, |(_, r)| r.created);
    let args = vec![Value::UInt(session), sub_details(subscription, key, created)];
    event(w, &key.realm, "wamp.subscription.on_create", args);
}

pub(super) fn subscribed(w: &mut Shard, realm: &Realm, session: u64, subscription: u64, topic: &str) {
    if !quiet(topic) {
        event(w, realm, "wamp.subscription.on_subscribe", vec![Value::UInt(session), Value::UInt(subscription)]);
    }
}

/// Session `session` leaves `subscription`; the core's `leave` is told
/// whether to name it in an `on_delete` (not for `wamp.` topics).
pub(super) fn unsubscribe(w: &mut Shard, handle: usize, session: u64, subscription: u64) {
    let quiet = w.local_subs.get(&subscription).is_none_or(|l| quiet(&l.key.topic));
    let realm = w.local_subs.get(&subscription).map(|l| l.key.realm.clone());
    if let (false, Some(realm)) = (quiet, &realm) {
        event(w, realm, "wamp.subscription.on_unsubscribe", vec![Value::UInt(session), Value::UInt(subscription)]);
    }
    w.leave(Member::Wamp(handle), subscription, (!quiet).then_some(session));
}

/// The owner says the subscription ended with `session`.
pub fn sub_deleted(w: &mut Shard, realm: &Realm, subscription: u64, session: u64) {
    event(w, realm, "wamp.subscription.on_delete", vec![Value::UInt(session), Value::UInt(subscription)]);
}

fn reg_details(id: u64, uri: &str, policy: MatchPolicy, reg: &crate::router::procs::ProcReg) -> Value {
    reg_dict(id, uri, policy, reg.created, reg.invoke)
}

fn reg_dict(
    id: u64,
    uri: &str,
    policy: MatchPolicy,
    created: u64,
    invoke: crate::router::procs::InvokePolicy,
) -> Value {
    dict(vec![
        ("id", Value::UInt(id)),
        ("created", Value::Str(iso8601(created))),
        ("uri", Value::Str(uri.to_owned())),
        ("match", Value::Str(policy.name().into())),
        ("invoke", Value::Str(invoke.as_str().into())),
    ])
}

pub(super) fn registered(w: &mut Shard, realm: &Realm, session: u64, reg: &LocalReg, created: bool) {
    if created {
        let details = w
            .procs
            .by_id(realm, reg.registration)
            .map(|(uri, policy, r)| reg_details(reg.registration, uri, policy, r));
        if let Some(details) = details {
            event(w, realm, "wamp.registration.on_create", vec![Value::UInt(session), details]);
        }
    }
    event(w, realm, "wamp.registration.on_register", vec![Value::UInt(session), Value::UInt(reg.registration)]);
}

pub(super) fn unregistered(w: &mut Shard, realm: &Realm, session: u64, registration: u64) {
    event(w, realm, "wamp.registration.on_unregister", vec![Value::UInt(session), Value::UInt(registration)]);
}

/// The owner says the registration ended with `session`.
pub fn reg_deleted(w: &mut Shard, realm: &Realm, registration: u64, session: u64) {
    event(w, realm, "wamp.registration.on_delete", vec![Value::UInt(session), Value::UInt(registration)]);
}

// ------------------------------------------------------------ procedures

/// A meta call's arguments, checked.
struct Args<'a> {
    args: &'a [Value],
    kwargs: &'a [(String, Value)],
}

type Invalid = String;

impl<'a> Args<'a> {
    fn new(p: &'a Payload) -> Args<'a> {
        let p = p.values();
        Args { args: p.args.as_deref().unwrap_or(&[]), kwargs: p.kwargs.as_deref().unwrap_or(&[]) }
    }

    fn id(&self, i: usize, what: &str) -> Result<u64, Invalid> {
        match self.args.get(i) {
            Some(Value::UInt(n)) if (1..=m::MAX_ID).contains(n) => Ok(*n),
            Some(v) => Err(format!("argument {} ({what}) must be an ID, got {v:?}", i + 1)),
            None => Err(format!("argument {} ({what}) is missing", i + 1)),
        }
    }

    fn string(&self, i: usize, what: &str) -> Result<&'a str, Invalid> {
        match self.args.get(i) {
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(format!("argument {} ({what}) must be a string, got {v:?}", i + 1)),
            None => Err(format!("argument {} ({what}) is missing", i + 1)),
        }
    }

    /// An optional dictionary argument (lookup's options).
    fn options(&self, i: usize) -> Result<&'a [(String, Value)], Invalid> {
        match self.args.get(i) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Dict(d)) => Ok(d),
            Some(v) => Err(format!("argument {} (options) must be a dictionary, got {v:?}", i + 1)),
        }
    }

    /// An optional list of strings (the authrole filter).
    fn strings(&self, i: usize, what: &str) -> Result<Option<Vec<String>>, Invalid> {
        let wrong = |v: &Value| format!("argument {} ({what}) must be a list of strings, got {v:?}", i + 1);
        match self.args.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::List(l)) => l
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| wrong(v)))
                .collect::<Result<_, _>>()
                .map(Some),
            Some(v) => Err(wrong(v)),
        }
    }

    fn kw_string(&self, key: &str) -> Result<Option<&'a str>, Invalid> {
        match dict_get(self.kwargs, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(format!("keyword argument '{key}' must be a string, got {v:?}")),
        }
    }
}

/// RESULT with these arguments (none: no value).
fn result(w: &mut Shard, handle: usize, request: u64, args: Vec<Value>) {
    let payload = Payload::new((!args.is_empty()).then_some(args), None);
    send(w, handle, &Msg::Result { request, details: Dict::new(), payload });
}

fn invalid(w: &mut Shard, handle: usize, request: u64, why: Invalid) {
    error(w, handle, m::CALL, request, "wamp.error.invalid_argument", Some(why));
}

/// IDs by match policy: the result of `wamp.subscription.list` and
/// `wamp.registration.list`.
#[derive(Default)]
struct PolicyLists([Vec<Value>; 3]);

impl PolicyLists {
    fn push(&mut self, policy: MatchPolicy, id: u64) {
        let i = match policy {
            MatchPolicy::Exact => 0,
            MatchPolicy::Prefix => 1,
            MatchPolicy::Wildcard | MatchPolicy::Filter => 2,
        };
        self.0[i].push(Value::UInt(id));
    }

    fn into_value(self) -> Value {
        let [exact, prefix, wildcard] = self.0;
        dict(vec![("exact", Value::List(exact)), ("prefix", Value::List(prefix)), ("wildcard", Value::List(wildcard))])
    }
}

/// A match policy option (`lookup`): absent is exact.
fn match_option(options: &[(String, Value)]) -> Result<MatchPolicy, Invalid> {
    match dict_get(options, "match") {
        None => Ok(MatchPolicy::Exact),
        Some(Value::Str(p)) => MatchPolicy::parse(p).ok_or_else(|| format!("unknown match policy '{p}'")),
        Some(v) => Err(format!("option 'match' must be a string, got {v:?}")),
    }
}

/// A CALL of a `wamp.` procedure: the router answers it.
pub(super) fn call(w: &mut Shard, handle: usize, request: u64, procedure: &str, payload: Payload) {
    let outcome = match procedure.strip_prefix("wamp.") {
        Some(p) if p.starts_with("session.") => session_call(w, handle, request, &p[8..], &payload),
        Some(p) if p.starts_with("subscription.") => subscription_call(w, handle, request, &p[13..], &payload),
        Some(p) if p.starts_with("registration.") => registration_call(w, handle, request, &p[13..], &payload),
        Some(p) if p.starts_with("table.") => table_call(w, handle, request, &p[6..], &payload),
        _ => Err(Unknown),
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(why)) => invalid(w, handle, request, why),
        Err(Unknown) => {
            let msg = format!("no meta procedure '{procedure}' on this router");
            error(w, handle, m::CALL, request, "wamp.error.no_such_procedure", Some(msg));
        }
    }
}

/// Not a meta procedure this router has.
struct Unknown;

type Outcome = Result<Result<(), Invalid>, Unknown>;

fn session_call(w: &mut Shard, handle: usize, request: u64, name: &str, payload: &Payload) -> Outcome {
    let a = Args::new(payload);
    let s = session(w, handle);
    let (me, realm) = (s.id, s.realm.clone());
    // GOODBYE's reason: `Ok(Err(..))` when it is no URI (the spec's
    // `wamp.error.invalid_uri`), `Err(..)` when the arguments are wrong.
    let kill = |target| -> Result<Result<MetaQuery, String>, Invalid> {
        let reason = a.kw_string("reason")?.unwrap_or("wamp.close.killed");
        if !valid_uri(reason, crate::wamp::uri::UriCheck::Loose) {
            return Ok(Err(format!("reason '{reason}' is not a valid URI")));
        }
        let message = a.kw_string("message")?.map(str::to_owned);
        Ok(Ok(MetaQuery::Kill { target, reason: reason.to_owned(), message, except: me }))
    };
    let bad_reason = |w: &mut Shard, why: String| {
        error(w, handle, m::CALL, request, "wamp.error.invalid_uri", Some(why));
        Ok(Ok(()))
    };
    let (query, finish) = match name {
        "count" | "list" => {
            let authroles = match a.strings(0, "filter_authroles") {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let finish = if name == "count" { Finish::Count } else { Finish::List };
            (MetaQuery::Sessions { authroles }, finish)
        }
        "get" => match a.id(0, "session") {
            Ok(id) => (MetaQuery::Session(id), Finish::Details),
            Err(e) => return Ok(Err(e)),
        },
        "kill" => {
            let id = match a.id(0, "session") {
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            };
            if id == me {
                let msg = Some("a session cannot kill itself: there is no other session with its ID".into());
                error(w, handle, m::CALL, request, "wamp.error.no_such_session", msg);
                return Ok(Ok(()));
            }
            match kill(KillTarget::Session(id)) {
                Ok(Ok(q)) => (q, Finish::KillOne),
                Ok(Err(why)) => return bad_reason(w, why),
                Err(e) => return Ok(Err(e)),
            }
        }
        "kill_by_authid" | "kill_by_authrole" | "kill_all" => {
            let target = match name {
                "kill_all" => Ok(KillTarget::All),
                "kill_by_authid" => a.string(0, "authid").map(|x| KillTarget::AuthId(x.to_owned())),
                _ => a.string(0, "authrole").map(|x| KillTarget::AuthRole(x.to_owned())),
            };
            let finish = if name == "kill_by_authid" { Finish::List } else { Finish::Count };
            match target.and_then(kill) {
                Ok(Ok(q)) => (q, finish),
                Ok(Err(why)) => return bad_reason(w, why),
                Err(e) => return Ok(Err(e)),
            }
        }
        "add_testament" => return Ok(add_testament(w, handle, request, &a)),
        "flush_testaments" => return Ok(flush_testaments(w, handle, request, &a)),
        _ => return Err(Unknown),
    };
    // Every worker of this node, and in a cluster every worker of the
    // other live nodes: the session API answers for the cluster.
    let mut workers: Vec<WorkerId> = (0..w.workers as WorkerId).collect();
    for &(node, n) in &w.cluster_nodes {
        workers.extend(crate::cluster::workers_of(node, n));
    }
    gather(w, handle, request, realm, query, finish, &workers);
    Ok(Ok(()))
}

/// `wamp.subscription.*`. In a cluster they answer for the cluster: a
/// subscription that only other nodes have is known here by the ID this
/// node's cluster routes give it (`remote_topics`), one that this node has
/// too by its own ID, and its subscribers are gathered from every node.
fn subscription_call(w: &mut Shard, handle: usize, request: u64, name: &str, payload: &Payload) -> Outcome {
    let a = Args::new(payload);
    let realm = session(w, handle).realm.clone();
    let out = match name {
        "list" => {
            let mut lists = PolicyLists::default();
            w.topics.for_each(&realm, |key, route| {
                if key.share.is_none() && !route.workers.is_empty() {
                    lists.push(key.policy, route.subscription);
                }
            });
            w.remote_topics.for_each(&realm, |key, route| {
                if key.share.is_none() && !route.workers.is_empty() && !routed_here(w, key) {
                    lists.push(key.policy, route.subscription);
                }
            });
            Ok(vec![lists.into_value()])
        }
        "lookup" => (|| {
            let topic = a.string(0, "topic")?;
            let policy = match_option(a.options(1)?)?;
            let key = SubKey { realm: realm.clone(), topic: topic.to_owned(), policy, share: None, filter: None };
            let routed = |r: &&crate::router::topics::Route| !r.workers.is_empty();
            let id = w.topics.get(&key).filter(routed).or_else(|| w.remote_topics.get(&key).filter(routed));
            Ok(vec![id.map_or(Value::Null, |r| Value::UInt(r.subscription))])
        })(),
        "match" => a.string(0, "topic").map(|topic| {
            let mut ids = Vec::new();
            w.topics.for_each_match(&realm, topic, |_, r| {
                if !r.workers.is_empty() {
                    ids.push(Value::UInt(r.subscription));
                }
            });
            w.remote_topics.for_each_match(&realm, topic, |_, r| {
                let elsewhere = w.remote_topics.by_id(r.subscription).is_some_and(|(k, _)| !routed_here(w, k));
                if !r.workers.is_empty() && elsewhere {
                    ids.push(Value::UInt(r.subscription));
                }
            });
            vec![if ids.is_empty() { Value::Null } else { Value::List(ids) }]
        }),
        "get" => match a.id(0, "subscription") {
            Ok(id) => match sub_by_id(w, &realm, id) {
                Some((key, route)) => Ok(vec![sub_details(id, key, route.created)]),
                None => return no_such_subscription(w, handle, request, id),
            },
            Err(e) => Err(e),
        },
        // The subscription's newest events, from the history of its topics
        // (their owner for an exact topic, every worker for a pattern).
        "get_events" => match (a.id(0, "subscription"), a.args.get(1)) {
            (Ok(id), limit @ (None | Some(Value::UInt(_)))) => {
                let limit = limit.and_then(Value::as_u64).unwrap_or(10).min(10_000) as usize;
                let Some((key, _)) = sub_by_id(w, &realm, id) else {
                    return no_such_subscription(w, handle, request, id);
                };
                let (topic, policy) = (key.topic.clone(), key.policy);
                // In a cluster, each node holds the events its own
                // publishers sent: the same workers on every other node.
                let workers = w.history_workers(&realm, &topic, policy);
                let q = MetaQuery::History { topic, policy, limit };
                gather(w, handle, request, realm, q, Finish::Events { subscription: id, limit }, &workers);
                return Ok(Ok(()));
            }
            (Err(e), _) => Err(e),
            (_, Some(v)) => Err(format!("argument 2 (limit) must be a non-negative integer, got {v:?}")),
        },
        // This node's workers with subscribers, and every worker of each
        // other node that has some.
        "list_subscribers" | "count_subscribers" => match a.id(0, "subscription") {
            Ok(id) => {
                let Some((key, _)) = sub_by_id(w, &realm, id) else {
                    return no_such_subscription(w, handle, request, id);
                };
                let key = key.clone();
                let mut workers = w.topics.get(&key).map(|r| r.workers.clone()).unwrap_or_default();
                for &node in w.remote_topics.get(&key).map_or(&[][..], |r| &r.workers[..]) {
                    if let Some(&(_, n)) = w.cluster_nodes.iter().find(|(id, _)| *id == node) {
                        workers.extend(crate::cluster::workers_of(node, n));
                    }
                }
                let finish = if name == "count_subscribers" { Finish::Count } else { Finish::List };
                gather(w, handle, request, realm, MetaQuery::Subscribers(key), finish, &workers);
                return Ok(Ok(()));
            }
            Err(e) => Err(e),
        },
        _ => return Err(Unknown),
    };
    Ok(out.map(|args| result(w, handle, request, args)))
}

/// A (non-shared) subscription of this realm by ID: this node's, else one
/// only other nodes have (`subscription_call`).
fn sub_by_id<'w>(w: &'w Shard, realm: &Realm, id: u64) -> Option<(&'w SubKey, &'w crate::router::topics::Route)> {
    let of_realm = |(k, _): &(&SubKey, &crate::router::topics::Route)| k.realm == *realm && k.share.is_none();
    w.topics
        .by_id(id)
        .filter(of_realm)
        .or_else(|| w.remote_topics.by_id(id).filter(of_realm).filter(|(k, _)| !routed_here(w, k)))
}

/// Whether this node routes the key to subscribers of its own.
fn routed_here(w: &Shard, key: &SubKey) -> bool {
    w.topics.get(key).is_some_and(|r| !r.workers.is_empty())
}

/// Most rows one `wamp.table.list` returns.
const TABLE_LIST_MAX: usize = 10_000;

/// `wamp.table.get(table, key)`: the row (or null); `key` is the primary
/// key's values in order (a list, or the value of a one-field key).
/// `wamp.table.list(table, limit, after)`: the first `limit` rows (100 by
/// default, at most 10,000) in the order of their topics, after the row
/// whose key is `after`, if given.
fn table_call(w: &mut Shard, handle: usize, request: u64, name: &str, payload: &Payload) -> Outcome {
    let a = Args::new(payload);
    let realm = session(w, handle).realm.clone();
    let table = match a.string(0, "table") {
        Ok(t) => t.to_owned(),
        Err(e) => return Ok(Err(e)),
    };
    let Some(schema) = w.cfg.tables(&realm).cloned() else {
        return Ok(Err(format!("realm '{realm}' has no tables")));
    };
    let Some(t) = schema.table(&table) else { return Ok(Err(format!("no table '{table}'"))) };
    let key = |i: usize| -> Result<Option<String>, Invalid> {
        let parts = match a.args.get(i) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::List(l)) => l.clone(),
            Some(v) => vec![v.clone()],
        };
        let n = schema.tables[t].primary_key.len();
        if parts.len() != n {
            return Err(format!("the key of '{table}' has {n} field(s), got {}", parts.len()));
        }
        Ok(Some(crate::tables::schema::topic_of(&table, &parts)))
    };
    let prefix = format!("{table}.");
    match name {
        "get" => {
            let topic = match key(1) {
                Ok(Some(topic)) => topic,
                Ok(None) => return Ok(Err("argument 2 (key) is required".into())),
                Err(e) => return Ok(Err(e)),
            };
            let owner = crate::router::owner_of(&realm, &topic, w.workers);
            let q = MetaQuery::TableRows { prefix, topic: Some(topic), after: None, limit: 1 };
            gather(w, handle, request, realm, q, Finish::Row, &[owner]);
        }
        "list" => {
            let limit = match a.args.get(1) {
                None | Some(Value::Null) => 100,
                Some(Value::UInt(n)) => (*n as usize).min(TABLE_LIST_MAX),
                Some(v) => return Ok(Err(format!("argument 2 (limit) must be a non-negative integer, got {v:?}"))),
            };
            let after = match key(2) {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let workers: Vec<WorkerId> = (0..w.workers as WorkerId).collect();
            let q = MetaQuery::TableRows { prefix, topic: None, after, limit };
            gather(w, handle, request, realm, q, Finish::Rows { limit }, &workers);
        }
        _ => return Err(Unknown),
    }
    Ok(Ok(()))
}

fn no_such_subscription(w: &mut Shard, handle: usize, request: u64, id: u64) -> Outcome {
    let msg = Some(format!("no subscription {id} in this realm"));
    error(w, handle, m::CALL, request, "wamp.error.no_such_subscription", msg);
    Ok(Ok(()))
}

fn no_such_registration(w: &mut Shard, handle: usize, request: u64, id: u64) -> Outcome {
    let msg = Some(format!("no registration {id} in this realm"));
    error(w, handle, m::CALL, request, "wamp.error.no_such_registration", msg);
    Ok(Ok(()))
}

/// `wamp.registration.*`. In a cluster they answer for the cluster (a
/// registration is one across it, its callees on several nodes): one this
/// node has callees of is named by its own ID, one only other nodes have
/// by the least of their IDs (`RemoteReg::meta_id`); the callees are this
/// node's and the other nodes' (every worker has both: no gathering).
fn registration_call(w: &mut Shard, handle: usize, request: u64, name: &str, payload: &Payload) -> Outcome {
    let a = Args::new(payload);
    let realm = session(w, handle).realm.clone();
    let out = match name {
        "list" => {
            let mut lists = PolicyLists::default();
            w.procs.for_each(&realm, |_, policy, r| lists.push(policy, r.registration));
            w.remote_procs.for_each(&realm, |policy, r| {
                if w.procs.get(&realm, &r.uri, policy).is_none() {
                    lists.push(policy, r.meta_id().unwrap_or(0));
                }
            });
            Ok(vec![lists.into_value()])
        }
        "lookup" => (|| {
            let uri = a.string(0, "procedure")?;
            let policy = match_option(a.options(1)?)?;
            let id = match w.procs.get(&realm, uri, policy) {
                Some(r) => Some(r.registration),
                None => w.remote_procs.get(&realm, uri, policy).and_then(|r| r.meta_id()),
            };
            Ok(vec![id.map_or(Value::Null, Value::UInt)])
        })(),
        // The registration a CALL would reach: the more specific of this
        // node's and the others' (`dealer::route` decides alike).
        "match" => a.string(0, "procedure").map(|uri| {
            let local = w.procs.lookup(&realm, uri).and_then(|(policy, r)| {
                let (pattern, _, _) = w.procs.by_id(&realm, r.registration)?;
                Some((policy, pattern, r.registration))
            });
            let remote = w.remote_procs.lookup(&realm, uri).and_then(|(p, r)| Some((p, r.uri.as_str(), r.meta_id()?)));
            let id = match (local, remote) {
                (Some(l), Some(r)) if crate::cluster::procs::specificity((r.0, r.1), (l.0, l.1)).is_gt() => Some(r.2),
                (Some(l), _) => Some(l.2),
                (None, r) => r.map(|r| r.2),
            };
            vec![id.map_or(Value::Null, Value::UInt)]
        }),
        "get" | "list_callees" | "count_callees" => match a.id(0, "registration") {
            Ok(id) => {
                let Some(reg) = reg_by_id(w, &realm, id) else {
                    return no_such_registration(w, handle, request, id);
                };
                let local = reg.local.map(|r| r.callees.iter().map(|c| c.session.id));
                let remote = reg.remote.map(|r| r.callees.iter().map(|c| c.session.id));
                let callees = local.into_iter().flatten().chain(remote.into_iter().flatten());
                Ok(vec![match name {
                    "get" => reg_dict(id, reg.uri, reg.policy, reg.created, reg.invoke),
                    "list_callees" => Value::List(callees.map(Value::UInt).collect()),
                    _ => Value::UInt(callees.count() as u64),
                }])
            }
            Err(e) => Err(e),
        },
        "remove" => return Ok(revoke(w, handle, request, &realm, &a)),
        _ => return Err(Unknown),
    };
    Ok(out.map(|args| result(w, handle, request, args)))
}

/// A registration as the meta API sees it: this node's part, the other
/// nodes' part, or both.
struct MetaReg<'w> {
    uri: &'w str,
    policy: MatchPolicy,
    created: u64,
    invoke: crate::router::procs::InvokePolicy,
    local: Option<&'w crate::router::procs::ProcReg>,
    remote: Option<&'w crate::cluster::procs::RemoteReg>,
}

/// A registration by this node's ID or one of the other nodes'.
fn reg_by_id<'w>(w: &'w Shard, realm: &Realm, id: u64) -> Option<MetaReg<'w>> {
    if let Some((uri, policy, local)) = w.procs.by_id(realm, id) {
        let remote = w.remote_procs.get(realm, uri, policy);
        let created = local.created.min(remote.map_or(u64::MAX, |r| r.created()));
        return Some(MetaReg { uri, policy, created, invoke: local.invoke, local: Some(local), remote });
    }
    let (policy, remote) = w.remote_procs.by_id(realm, id)?;
    let local = w.procs.get(realm, &remote.uri, policy);
    let created = remote.created().min(local.map_or(u64::MAX, |r| r.created));
    Some(MetaReg { uri: &remote.uri, policy, created, invoke: remote.invoke, local, remote: Some(remote) })
}

/// `wamp.registration.remove(registration, callee, reason?)`; a callee on
/// another node is told through the cluster (with its node's ID of the
/// registration).
fn revoke(w: &mut Shard, handle: usize, request: u64, realm: &Realm, a: &Args) -> Result<(), Invalid> {
    let registration = a.id(0, "registration")?;
    let callee = a.id(1, "callee")?;
    let reason = match a.args.get(2) {
        None | Some(Value::Null) => None,
        Some(Value::Str(r)) => Some(r.clone()),
        Some(v) => return Err(format!("argument 3 (reason) must be a string, got {v:?}")),
    };
    let Some(reg) = reg_by_id(w, realm, registration) else {
        let _ = no_such_registration(w, handle, request, registration);
        return Ok(());
    };
    let local = reg.local.and_then(|r| {
        let c = r.callees.iter().find(|c| c.session.id == callee)?;
        Some((c.session.worker, r.registration))
    });
    let remote = || {
        let c = reg.remote?.callees.iter().find(|c| c.session.id == callee)?;
        Some((c.session.worker, c.registration))
    };
    let Some((worker, registration_there)) = local.or_else(remote) else {
        let msg = Some(format!("session {callee} is no callee of registration {registration}"));
        error(w, handle, m::CALL, request, "wamp.error.no_such_session", msg);
        return Ok(());
    };
    w.peers.send(worker, ShardMsg::Revoke { callee, registration: registration_there, reason });
    result(w, handle, request, Vec::new());
    Ok(())
}

/// The meta API revokes a registration of a session on this worker.
pub fn on_revoke(w: &mut Shard, callee: u64, registration: u64, reason: Option<String>) {
    let Some(&handle) = w.sessions.get(&callee) else { return };
    let s = session(w, handle);
    let Some(i) = s.regs.iter().position(|r| r.registration == registration) else { return };
    let reg = s.regs.swap_remove(i);
    let (realm, told) = (s.realm.clone(), s.revocation);
    release_reg(w, &realm, callee, reg);
    if told {
        let mut details = vec![("registration".to_owned(), Value::UInt(registration))];
        if let Some(r) = reason {
            details.push(("reason".to_owned(), Value::Str(r)));
        }
        if let Some((ser, framing)) = w.conns[handle].wamp().map(|c| (c.ser, c.framing)) {
            let fields = [Field::Int(m::UNREGISTERED), Field::Int(0), Field::Dict(&details)];
            let bytes = frame_fields(ser, framing, &fields);
            if framing.fits(&bytes) {
                w.send_bytes(handle, bytes);
            }
        }
    }
    unregistered(w, &realm, callee, registration);
}

// ------------------------------------------------------------ testaments

/// When a testament is published. Without session resumption both happen
/// when the session ends, `detached` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    Detached,
    Destroyed,
}

pub(super) struct Testament {
    scope: Scope,
    topic: String,
    payload: Payload,
    retain: bool,
    receivers: Option<Box<Receivers>>,
}

fn scope(a: &Args) -> Result<Scope, Invalid> {
    match a.kw_string("scope")? {
        None | Some("destroyed") => Ok(Scope::Destroyed),
        Some("detached") => Ok(Scope::Detached),
        Some(other) => Err(format!("scope must be 'detached' or 'destroyed', got '{other}'")),
    }
}

fn add_testament(w: &mut Shard, handle: usize, request: u64, a: &Args) -> Result<(), Invalid> {
    let topic = a.string(0, "topic")?;
    if !uri_ok(w, topic) || quiet(topic) {
        let msg = Some(format!("invalid testament topic '{topic}'"));
        error(w, handle, m::CALL, request, "wamp.error.invalid_uri", msg);
        return Ok(());
    }
    let args = match a.args.get(1) {
        None | Some(Value::Null) => None,
        Some(Value::List(l)) => Some(l.clone()),
        Some(v) => return Err(format!("argument 2 (args) must be a list, got {v:?}")),
    };
    let kwargs = match a.args.get(2) {
        None | Some(Value::Null) => None,
        Some(Value::Dict(d)) => Some(d.clone()),
        Some(v) => return Err(format!("argument 3 (kwargs) must be a dictionary, got {v:?}")),
    };
    let options = match dict_get(a.kwargs, "publish_options") {
        None | Some(Value::Null) => Dict::new(),
        Some(Value::Dict(d)) => d.clone(),
        Some(v) => return Err(format!("keyword argument 'publish_options' must be a dictionary, got {v:?}")),
    };
    let scope = scope(a)?;
    let retain = bool_opt(&options, "retain")?.unwrap_or(false);
    let receivers = broker::receivers(&options)?;
    let s = session(w, handle).busy();
    if s.testaments.len() >= MAX_TESTAMENTS {
        let msg = Some(format!("a session may hold at most {MAX_TESTAMENTS} testaments"));
        error(w, handle, m::CALL, request, "wamp.error.invalid_argument", msg);
        return Ok(());
    }
    let payload = Payload::new(args, kwargs);
    s.testaments.push(Testament { scope, topic: topic.to_owned(), payload, retain, receivers });
    result(w, handle, request, Vec::new());
    Ok(())
}

fn flush_testaments(w: &mut Shard, handle: usize, request: u64, a: &Args) -> Result<(), Invalid> {
    let scope = scope(a)?;
    if let Some(b) = session(w, handle).busy.as_deref_mut() {
        b.testaments.retain(|t| t.scope != scope);
    }
    // "does not return a value"
    result(w, handle, request, Vec::new());
    Ok(())
}

/// The session ends: its testaments are published, `detached` ones first,
/// each scope in the order they were added.
pub(super) fn publish_testaments(w: &mut Shard, s: &mut WampSession) {
    let mut all = s.busy.as_deref_mut().map(|b| std::mem::take(&mut b.testaments)).unwrap_or_default();
    // Stable: keeps the order within a scope.
    all.sort_by_key(|t| t.scope != Scope::Detached);
    for t in all {
        let p = Publication {
            realm: s.realm.clone(),
            topic: t.topic,
            id: w.ids.next_id(),
            publisher: SessionRef { worker: w.id, id: s.id },
            exclude_me: true,
            body: Body::Wamp(t.payload),
            qos: 0,
            retain: t.retain,
            props: None,
            expires: None,
            started: Instant::now(),
            disclosed: None,
            receivers: t.receivers,
            ppt: None,
            durable_ack: None,
        };
        w.route(p);
    }
}

// -------------------------------------------------------- scatter-gather

/// How the merged answers become the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// `[count]` of the IDs.
    Count,
    /// `[ids]`.
    List,
    /// `[details]`, or `wamp.error.no_such_session`.
    Details,
    /// `[]` if one session was killed, or `wamp.error.no_such_session`.
    KillOne,
    /// `[events]`: the newest `limit`, oldest first (get_events).
    Events { subscription: u64, limit: usize },
    /// `[row]`, or `[null]` (wamp.table.get).
    Row,
    /// `[rows]`: the first `limit` in topic order (wamp.table.list).
    Rows { limit: usize },
}

/// A meta call waiting for the workers' answers.
pub struct Gathering {
    handle: usize,
    session: u64,
    request: u64,
    finish: Finish,
    /// The workers' answers still to come (a node taken for dead meanwhile
    /// owes none: `gathers_without`).
    owed: crate::cluster::Owed,
    ids: Vec<u64>,
    details: Option<Dict>,
    events: Vec<crate::router::history::Recorded>,
    rows: Vec<(String, Value)>,
    deadline: Instant,
}

fn gather(w: &mut Shard, handle: usize, request: u64, realm: Realm, q: MetaQuery, f: Finish, to: &[WorkerId]) {
    w.next_gather += 1;
    let id = w.next_gather;
    let session = session(w, handle).id;
    let g = Gathering {
        handle,
        session,
        request,
        finish: f,
        owed: crate::cluster::Owed::of(to),
        ids: Vec::new(),
        details: None,
        events: Vec::new(),
        rows: Vec::new(),
        deadline: w.now + GATHER_TIMEOUT,
    };
    w.gathers.insert(id, g);
    if to.is_empty() {
        return finish(w, id);
    }
    for &worker in to {
        let msg = ShardMsg::MetaQuery { realm: realm.clone(), query: q.clone(), reply: w.id, gather: id };
        w.peers.send(worker, msg);
    }
}

/// A worker's answer to a gathered meta call (`from`: another node's).
pub fn on_meta_answer(w: &mut Shard, gather: u64, answer: MetaAnswer, from: Option<crate::cluster::NodeId>) {
    let Some(g) = w.gathers.get_mut(&gather) else { return };
    if !g.owed.answered(from) {
        return; // a node counted out (taken for dead), answering after all
    }
    match answer {
        MetaAnswer::Ids(ids) => g.ids.extend(ids),
        MetaAnswer::Details(d) => g.details = g.details.take().or(d),
        MetaAnswer::Events(e) => g.events.extend(e),
        MetaAnswer::Rows(r) => g.rows.extend(r),
    }
    if g.owed.left() == 0 {
        finish(w, gather);
    }
}

fn finish(w: &mut Shard, gather: u64) {
    let Some(g) = w.gathers.remove(&gather) else { return };
    if w.sessions.get(&g.session) != Some(&g.handle) {
        return; // the caller left
    }
    let (handle, request) = (g.handle, g.request);
    match g.finish {
        Finish::Count => result(w, handle, request, vec![Value::UInt(g.ids.len() as u64)]),
        Finish::List => result(w, handle, request, vec![Value::List(g.ids.into_iter().map(Value::UInt).collect())]),
        Finish::Details => match g.details {
            Some(d) => result(w, handle, request, vec![Value::Dict(d)]),
            None => {
                let msg = Some("no such session in this realm".to_owned());
                error(w, handle, m::CALL, request, "wamp.error.no_such_session", msg);
            }
        },
        Finish::KillOne if g.ids.is_empty() => {
            let msg = Some("no such session in this realm".to_owned());
            error(w, handle, m::CALL, request, "wamp.error.no_such_session", msg);
        }
        Finish::KillOne => result(w, handle, request, Vec::new()),
        Finish::Row => {
            let row = g.rows.into_iter().next().map_or(Value::Null, |(_, r)| r);
            result(w, handle, request, vec![row]);
        }
        Finish::Rows { limit } => {
            let mut rows = g.rows;
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows.truncate(limit);
            result(w, handle, request, vec![Value::List(rows.into_iter().map(|(_, r)| r).collect())]);
        }
        Finish::Events { subscription, limit } => {
            let mut events = g.events;
            events.sort_by_key(|e| (e.at, e.seq));
            let skip = events.len().saturating_sub(limit);
            let mut conv = Converted::default();
            let list = events[skip..]
                .iter()
                .map(|e| {
                    let payload = conv.wamp_payload(&e.p.body).values();
                    let mut d = vec![
                        ("timestamp", Value::Str(iso8601(e.at))),
                        ("subscription", Value::UInt(subscription)),
                        ("publication", Value::UInt(e.p.id)),
                        ("topic", Value::Str(e.p.topic.clone())),
                    ];
                    if let Some(args) = &payload.args {
                        d.push(("args", Value::List(args.clone())));
                    }
                    if let Some(kwargs) = &payload.kwargs {
                        d.push(("kwargs", Value::Dict(kwargs.clone())));
                    }
                    dict(d)
                })
                .collect();
            result(w, handle, request, vec![Value::List(list)]);
        }
    }
}

/// Node `node` is taken for dead: the gathered calls stop waiting for its
/// workers (what it held went with it) and finish with the others'
/// answers, rather than time out.
pub fn gathers_without(w: &mut Shard, node: crate::cluster::NodeId) {
    let mut done = Vec::new();
    for (&id, g) in w.gathers.iter_mut() {
        if g.owed.lost(node) && g.owed.left() == 0 {
            done.push(id);
        }
    }
    for id in done {
        finish(w, id);
    }
}

/// Gathered calls whose workers did not all answer in time (every worker
/// tick): the caller gets `wamp.error.timeout` rather than a partial answer.
pub fn expire_gathers(w: &mut Shard) {
    if w.gathers.is_empty() {
        return;
    }
    let now = w.now;
    let late: Vec<u64> = w.gathers.iter().filter(|(_, g)| g.deadline <= now).map(|(&id, _)| id).collect();
    for id in late {
        let g = w.gathers.remove(&id).expect("listed");
        if w.sessions.get(&g.session) == Some(&g.handle) {
            let msg = Some("not every worker answered the meta call in time".to_owned());
            error(w, g.handle, m::CALL, g.request, "wamp.error.timeout", msg);
        }
    }
}

/// A meta question about this worker's sessions.
pub fn on_meta_query(w: &mut Shard, realm: &Realm, query: MetaQuery, reply: WorkerId, gather: u64) {
    let in_realm: Vec<(u64, usize)> = w
        .sessions
        .iter()
        .map(|(&id, &h)| (id, h))
        .filter(|&(_, h)| w.conns[h].wamp().and_then(|c| c.session.as_ref()).is_some_and(|s| &s.realm == realm))
        .collect();
    let answer = match query {
        MetaQuery::Sessions { authroles } => {
            let ids = in_realm
                .iter()
                .filter(|&&(_, h)| {
                    let role = &*session(w, h).authrole;
                    authroles.as_ref().is_none_or(|roles| roles.iter().any(|r| r == role))
                })
                .map(|&(id, _)| id)
                .collect();
            MetaAnswer::Ids(ids)
        }
        MetaQuery::Session(id) => {
            let h = in_realm.iter().find(|&&(s, _)| s == id).map(|&(_, h)| h);
            MetaAnswer::Details(h.and_then(|h| session_details(w, h)))
        }
        MetaQuery::History { topic, policy, limit } => {
            MetaAnswer::Events(w.history.newest(realm, &topic, policy, limit))
        }
        MetaQuery::TableRows { prefix, topic, after, limit } => {
            let value = |p: &Publication| crate::router::keys::value_of(&p.body);
            let rows = match topic {
                Some(t) => w
                    .retained
                    .get(realm, &t)
                    .and_then(|e| e.value.as_ref())
                    .and_then(|p| Some((t.clone(), value(p)?)))
                    .into_iter()
                    .collect(),
                None => {
                    let (now, mut expired) = (w.now, Vec::new());
                    let all = w.retained.query(realm, &prefix, MatchPolicy::Prefix, now, &mut expired);
                    all.iter()
                        .filter(|p| after.as_ref().is_none_or(|a| p.topic > *a))
                        .filter_map(|p| Some((p.topic.clone(), value(p)?)))
                        .take(limit)
                        .collect()
                }
            };
            MetaAnswer::Rows(rows)
        }
        MetaQuery::Subscribers(key) => {
            let subscription = w.topics.get(&key).map(|r| r.subscription);
            let local = subscription.and_then(|id| w.local_subs.get(&id));
            let members = local.map(|l| l.members.clone()).unwrap_or_default();
            let ids = members
                .into_iter()
                .filter_map(|m| match m {
                    Member::Wamp(h) => match &w.conns.get(h)?.proto {
                        crate::conn::Proto::Wamp(c) => c.session.as_ref().map(|s| s.id),
                        _ => None,
                    },
                    Member::Mqtt(slot) => w.mqtt.sessions.get(slot).map(|s| s.id),
                })
                .collect();
            MetaAnswer::Ids(ids)
        }
        MetaQuery::Kill { target, reason, message, except } => {
            let mut killed = Vec::new();
            for (id, h) in in_realm {
                let s = session(w, h);
                let hit = match &target {
                    KillTarget::Session(t) => *t == id,
                    KillTarget::AuthId(a) => *a == s.authid,
                    KillTarget::AuthRole(r) => **r == *s.authrole,
                    KillTarget::All => true,
                };
                if hit && id != except {
                    kill(w, h, &reason, message.as_deref());
                    killed.push(id);
                }
            }
            MetaAnswer::Ids(killed)
        }
    };
    w.peers.send(reply, ShardMsg::MetaAnswer { gather, answer, from: None });
}

/// Ends a session with GOODBYE (the connection stays, for the client's
/// GOODBYE reply and perhaps a new HELLO).
pub(super) fn kill(w: &mut Shard, handle: usize, reason: &str, message: Option<&str>) {
    let details = message.map(|m| vec![("message".to_owned(), Value::Str(m.to_owned()))]).unwrap_or_default();
    send(w, handle, &Msg::Goodbye { details, reason: reason.to_owned() });
    let Some(conn) = w.conns[handle].wamp() else { return };
    conn.goodbye_sent = true;
    let Some(s) = conn.session.take() else { return };
    end_session(w, handle, s, CloseReason::Killed);
}
