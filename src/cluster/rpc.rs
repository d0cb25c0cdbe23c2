//! The dealer's messages between nodes, pure: a CALL's INVOCATION
//! (`Invoke`, with its progressive input), its answers (`CallDone`:
//! progressive results, the result or the error), and what ends it early
//! (`Interrupt` for a timeout or CANCEL, `CallerGone`). They travel on
//! `<prefix>.n.<to>.rpc.<from>`, one subject per pair of nodes, so they
//! arrive in the order they were sent: progressive results before the
//! final one, input before its end.
//!
//! A session of the sending node is named by its worker there; the
//! receiver turns that into its own name for the sender's worker
//! (`at_node`), so what comes back goes the same way.

use super::wire::{bytes_dict, dict_bytes, wamp_body, wamp_payload, WireBody};
use super::{at_node, NodeId};
use crate::router::{CallDone, CallOutcome, Identity, Interruption, Invoke, SessionRef, ShardMsg, SubKey, WorkerId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The first byte of a dealer message.
const VERSION: u8 = 3;

#[derive(Serialize, Deserialize)]
enum Wire {
    Invoke {
        caller: (WorkerId, u64),
        request: u64,
        callee: u64,
        registration: u64,
        procedure: String,
        pattern: bool,
        body: WireBody,
        receive_progress: bool,
        disclosed: Option<(u64, String, String)>,
        progress: bool,
        continuation: bool,
        ppt: Option<Bytes>,
        caller_ppt: bool,
    },
    Done {
        caller: u64,
        request: u64,
        /// 0 the result, 1 a progressive result, 2 an error.
        kind: u8,
        body: WireBody,
        /// The `ppt_*` options of a result, an error's details.
        dict: Option<Bytes>,
        error: Option<String>,
    },
    Interrupt {
        callee: u64,
        caller: (WorkerId, u64),
        request: u64,
        why: u8,
    },
    CallerGone {
        caller: (WorkerId, u64),
    },
    /// A session meta question (`wamp.session.*`) for a worker's sessions.
    MetaQuery {
        realm: String,
        query: WireQuery,
        reply: WorkerId,
        gather: u64,
    },
    /// The MQTT registry's messages of a take-over (`sessions.rs`).
    Mqtt(super::sessions::WireMqtt),
    MetaAnswer {
        gather: u64,
        /// Session IDs, or (`is_details`) one session's details, if any.
        ids: Vec<u64>,
        is_details: bool,
        details: Option<Bytes>,
        /// Or recorded events: (sequence, ms since the epoch, the
        /// publication's wire form).
        #[serde(default)]
        events: Option<Vec<(u64, u64, Bytes)>>,
    },
    /// `wamp.registration.remove` of a callee there (its node's ID of the
    /// registration).
    Revoke {
        callee: u64,
        registration: u64,
        reason: Option<String>,
    },
    /// A subscription's history replay (`after`): the question, for the
    /// topic's owner there (exact) or each worker (patterns) ...
    HistoryQuery {
        realm: String,
        pattern: String,
        after: u64,
        reply: WireReply,
    },
    /// ... and each one's answer: the anchor's time if it has it, the
    /// events.
    HistoryReplay {
        reply: WireReply,
        anchor: Option<u64>,
        events: Vec<(u64, u64, Bytes)>,
    },
}

/// Where a replay's answer goes: the subscriber's worker (named by its
/// node), its connection and session, the subscription and its policy.
#[derive(Serialize, Deserialize)]
struct WireReply {
    worker: WorkerId,
    handle: u64,
    session: u64,
    subscription: u64,
    policy: String,
}

/// Recorded events in their travelling form: (sequence, ms since the
/// epoch, the publication's wire form).
fn wire_events(events: &[crate::router::history::Recorded]) -> Vec<(u64, u64, Bytes)> {
    let now = std::time::Instant::now();
    events.iter().filter_map(|e| Some((e.seq, e.at, Bytes::from(super::wire::encode(&e.p, 0, now)?)))).collect()
}

fn recorded(events: Vec<(u64, u64, Bytes)>) -> Result<Vec<crate::router::history::Recorded>, String> {
    let now = std::time::Instant::now();
    let mut out = Vec::with_capacity(events.len());
    for (seq, at, p) in events {
        let (_, p) = super::wire::decode(&p, now)?;
        out.push(crate::router::history::Recorded { seq, at, p: std::sync::Arc::new(p) });
    }
    Ok(out)
}

fn wire_reply(r: &crate::router::RetainedReply) -> Option<WireReply> {
    let crate::router::Member::Wamp(handle) = r.member else { return None };
    Some(WireReply {
        worker: r.worker,
        handle: handle as u64,
        session: r.session,
        subscription: r.subscription,
        policy: super::wire::policy_name(r.policy).to_owned(),
    })
}

/// A replay's answer address, its worker being `worker` (named as the
/// receiver names it).
fn reply_of(r: WireReply, worker: WorkerId) -> Result<crate::router::RetainedReply, String> {
    let policy = super::wire::policy_of(&r.policy).ok_or_else(|| format!("unknown match policy {}", r.policy))?;
    let handle = usize::try_from(r.handle).map_err(|_| "connection handle out of range".to_owned())?;
    Ok(crate::router::RetainedReply {
        worker,
        member: crate::router::Member::Wamp(handle),
        session: r.session,
        subscription: r.subscription,
        policy,
    })
}

/// The meta questions that travel: those about sessions.
#[derive(Serialize, Deserialize)]
enum WireQuery {
    Sessions {
        authroles: Option<Vec<String>>,
    },
    Session(u64),
    /// Kill: 0 a session, 1 an authid, 2 an authrole, 3 all; the session
    /// or the name; the reason and message; the caller spared.
    Kill {
        target: u8,
        session: u64,
        name: String,
        reason: String,
        message: Option<String>,
        except: u64,
    },
    /// The newest `limit` events recorded of the topics matching.
    History {
        topic: String,
        policy: String,
        limit: u64,
    },
    /// The subscribers of the subscription of this key (topic, match
    /// policy, value filter) in the envelope's realm.
    Subscribers {
        topic: String,
        policy: String,
        filter: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The receiving node's worker.
    worker: WorkerId,
    msg: Wire,
}

fn why_code(why: Interruption) -> u8 {
    match why {
        Interruption::Timeout => 0,
        Interruption::Skip => 1,
        Interruption::KillNoWait => 2,
        Interruption::Kill => 3,
    }
}

fn local(s: SessionRef) -> (WorkerId, u64) {
    (s.worker, s.id)
}

/// A dealer message for worker `worker` of another node, in its
/// travelling form; `None` for a message that does not travel (or does
/// not encode).
pub fn encode(to: NodeId, worker: WorkerId, msg: &ShardMsg) -> Option<Vec<u8>> {
    let msg = match msg {
        ShardMsg::Mqtt(m) => Wire::Mqtt(super::sessions::encode(m, to, std::time::Instant::now())?),
        ShardMsg::Invoke(inv) => {
            if inv.details.is_some() {
                // The router's own calls (reducers, authorizers) stay on their node.
                return None;
            }
            Wire::Invoke {
                caller: local(inv.caller),
                request: inv.request,
                callee: inv.callee,
                registration: inv.registration,
                procedure: inv.procedure.clone(),
                pattern: inv.pattern,
                body: wamp_body(&inv.payload)?,
                receive_progress: inv.receive_progress,
                disclosed: inv.disclosed.as_deref().map(|d| (d.session, d.authid.clone(), d.authrole.clone())),
                progress: inv.progress,
                continuation: inv.continuation,
                ppt: match inv.ppt.as_deref() {
                    Some(d) => Some(dict_bytes(d)?),
                    None => None,
                },
                caller_ppt: inv.caller_ppt,
            }
        }
        ShardMsg::CallDone(done) => {
            let (kind, payload, dict, error) = match &done.outcome {
                CallOutcome::Result(p, ppt) => (0, p, ppt.as_deref(), None),
                CallOutcome::Progress(p, ppt) => (1, p, ppt.as_deref(), None),
                CallOutcome::Error { error, details, payload } => (2, payload, Some(details), Some(error.clone())),
            };
            Wire::Done {
                caller: done.caller,
                request: done.request,
                kind,
                body: wamp_body(payload)?,
                dict: match dict {
                    Some(d) if !d.is_empty() => Some(dict_bytes(d)?),
                    _ => None,
                },
                error,
            }
        }
        ShardMsg::Interrupt { callee, caller, request, why } => {
            Wire::Interrupt { callee: *callee, caller: local(*caller), request: *request, why: why_code(*why) }
        }
        ShardMsg::CallerGone { caller } => Wire::CallerGone { caller: local(*caller) },
        ShardMsg::MetaQuery { realm, query, reply, gather } => {
            use crate::router::meta::{KillTarget, MetaQuery};
            let query = match query {
                MetaQuery::Sessions { authroles } => WireQuery::Sessions { authroles: authroles.clone() },
                MetaQuery::Session(id) => WireQuery::Session(*id),
                MetaQuery::Kill { target, reason, message, except } => {
                    let (target, session, name) = match target {
                        KillTarget::Session(id) => (0, *id, String::new()),
                        KillTarget::AuthId(a) => (1, 0, a.clone()),
                        KillTarget::AuthRole(r) => (2, 0, r.clone()),
                        KillTarget::All => (3, 0, String::new()),
                    };
                    let (reason, message, except) = (reason.clone(), message.clone(), *except);
                    WireQuery::Kill { target, session, name, reason, message, except }
                }
                MetaQuery::Subscribers(key) if key.share.is_none() => WireQuery::Subscribers {
                    topic: key.topic.clone(),
                    policy: super::wire::policy_name(key.policy).to_owned(),
                    filter: key.filter.as_deref().map(str::to_owned),
                },
                MetaQuery::History { topic, policy, limit } => WireQuery::History {
                    topic: topic.clone(),
                    policy: super::wire::policy_name(*policy).to_owned(),
                    limit: *limit as u64,
                },
                // Tables are each node's own.
                _ => return None,
            };
            Wire::MetaQuery { realm: realm.to_string(), query, reply: *reply, gather: *gather }
        }
        ShardMsg::MetaAnswer { gather, answer, .. } => {
            use crate::router::meta::MetaAnswer;
            let (ids, is_details, details, events) = match answer {
                MetaAnswer::Ids(ids) => (ids.clone(), false, None, None),
                MetaAnswer::Details(Some(d)) => (Vec::new(), true, Some(dict_bytes(d)?), None),
                MetaAnswer::Details(None) => (Vec::new(), true, None, None),
                MetaAnswer::Events(events) => (Vec::new(), false, None, Some(wire_events(events))),
                _ => return None,
            };
            Wire::MetaAnswer { gather: *gather, ids, is_details, details, events }
        }
        ShardMsg::Revoke { callee, registration, reason } => {
            Wire::Revoke { callee: *callee, registration: *registration, reason: reason.clone() }
        }
        ShardMsg::HistoryQuery { realm, pattern, after, reply } => Wire::HistoryQuery {
            realm: realm.to_string(),
            pattern: pattern.clone(),
            after: *after,
            reply: wire_reply(reply)?,
        },
        ShardMsg::HistoryReplay { reply, anchor, events, .. } => {
            Wire::HistoryReplay { reply: wire_reply(reply)?, anchor: *anchor, events: wire_events(events) }
        }
        _ => return None,
    };
    let mut out = vec![VERSION];
    rmp_serde::encode::write(&mut out, &Envelope { worker, msg }).ok()?;
    Some(out)
}

/// A dealer message from node `from` (this node's number for it): the
/// local worker it is for, and the message, its sessions of `from` named
/// through the cluster.
pub fn decode(b: &[u8], from: NodeId) -> Result<(WorkerId, ShardMsg), String> {
    let Some((&VERSION, rest)) = b.split_first() else {
        return Err("not a version 3 dealer message".into());
    };
    let Envelope { worker, msg } =
        rmp_serde::from_slice(rest).map_err(|e| format!("undecodable dealer message: {e}"))?;
    let remote = |(w, id): (WorkerId, u64)| -> Result<SessionRef, String> {
        if usize::from(w) >= super::MAX_WORKERS {
            return Err(format!("worker {w} out of range"));
        }
        Ok(SessionRef { worker: at_node(from, w), id })
    };
    let msg = match msg {
        Wire::Invoke {
            caller,
            request,
            callee,
            registration,
            procedure,
            pattern,
            body,
            receive_progress,
            disclosed,
            progress,
            continuation,
            ppt,
            caller_ppt,
        } => ShardMsg::Invoke(Box::new(Invoke {
            caller: remote(caller)?,
            request,
            callee,
            registration,
            procedure,
            pattern,
            payload: wamp_payload(body)?,
            receive_progress,
            disclosed: disclosed.map(|(session, authid, authrole)| Box::new(Identity { session, authid, authrole })),
            progress,
            continuation,
            ppt: match ppt {
                Some(b) => Some(Box::new(bytes_dict(&b)?)),
                None => None,
            },
            caller_ppt,
            details: None,
        })),
        Wire::Done { caller, request, kind, body, dict, error } => {
            let payload = wamp_payload(body)?;
            let dict = match dict {
                Some(b) => Some(bytes_dict(&b)?),
                None => None,
            };
            let outcome = match (kind, error) {
                (0, None) => CallOutcome::Result(payload, dict.map(Box::new)),
                (1, None) => CallOutcome::Progress(payload, dict.map(Box::new)),
                (2, Some(error)) => CallOutcome::Error { error, details: dict.unwrap_or_default(), payload },
                _ => return Err("a call's end of no known kind".into()),
            };
            ShardMsg::CallDone(Box::new(CallDone { caller, request, outcome }))
        }
        Wire::Interrupt { callee, caller, request, why } => {
            let why = match why {
                0 => Interruption::Timeout,
                1 => Interruption::Skip,
                2 => Interruption::KillNoWait,
                3 => Interruption::Kill,
                w => return Err(format!("unknown interruption {w}")),
            };
            ShardMsg::Interrupt { callee, caller: remote(caller)?, request, why }
        }
        Wire::CallerGone { caller } => ShardMsg::CallerGone { caller: remote(caller)? },
        Wire::Mqtt(m) => ShardMsg::Mqtt(super::sessions::decode(m, from, std::time::Instant::now())?),
        Wire::MetaQuery { realm, query, reply, gather } => {
            use crate::router::meta::{KillTarget, MetaQuery};
            let query = match query {
                WireQuery::Sessions { authroles } => MetaQuery::Sessions { authroles },
                WireQuery::Session(id) => MetaQuery::Session(id),
                WireQuery::Kill { target, session, name, reason, message, except } => {
                    let target = match target {
                        0 => KillTarget::Session(session),
                        1 => KillTarget::AuthId(name),
                        2 => KillTarget::AuthRole(name),
                        3 => KillTarget::All,
                        t => return Err(format!("unknown kill target {t}")),
                    };
                    MetaQuery::Kill { target, reason, message, except }
                }
                WireQuery::History { topic, policy, limit } => {
                    let policy =
                        super::wire::policy_of(&policy).ok_or_else(|| format!("unknown match policy {policy}"))?;
                    MetaQuery::History { topic, policy, limit: limit.min(10_000) as usize }
                }
                WireQuery::Subscribers { topic, policy, filter } => {
                    let policy =
                        super::wire::policy_of(&policy).ok_or_else(|| format!("unknown match policy {policy}"))?;
                    let realm = realm.as_str().into();
                    MetaQuery::Subscribers(SubKey {
                        realm,
                        topic,
                        policy,
                        share: None,
                        filter: filter.map(std::sync::Arc::from),
                    })
                }
            };
            let reply = remote((reply, 0))?.worker;
            ShardMsg::MetaQuery { realm: realm.as_str().into(), query, reply, gather }
        }
        Wire::MetaAnswer { gather, events: Some(events), .. } => {
            let answer = crate::router::meta::MetaAnswer::Events(recorded(events)?);
            ShardMsg::MetaAnswer { gather, answer, from: Some(from) }
        }
        Wire::MetaAnswer { gather, ids, is_details, details, events: None } => {
            use crate::router::meta::MetaAnswer;
            let answer = match (is_details, details) {
                (true, Some(b)) => MetaAnswer::Details(Some(bytes_dict(&b)?)),
                (true, None) => MetaAnswer::Details(None),
                (false, _) => MetaAnswer::Ids(ids),
            };
            ShardMsg::MetaAnswer { gather, answer, from: Some(from) }
        }
        Wire::Revoke { callee, registration, reason } => ShardMsg::Revoke { callee, registration, reason },
        Wire::HistoryQuery { realm, pattern, after, reply } => {
            // The answer goes back to the subscriber's worker, there.
            let back = remote((reply.worker, 0))?.worker;
            ShardMsg::HistoryQuery { realm: realm.as_str().into(), pattern, after, reply: reply_of(reply, back)? }
        }
        Wire::HistoryReplay { reply, anchor, events } => ShardMsg::HistoryReplay {
            reply: reply_of(reply, worker)?,
            anchor,
            events: recorded(events)?,
            from: Some(from),
        },
    };
    Ok((worker, msg))
}

/// The subject dealer messages from `from` to `to` travel on.
pub fn subject(prefix: &str, to: &str, from: &str) -> String {
    format!("{prefix}.n.{to}.rpc.{from}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use crate::value::Value;

    #[test]
    fn an_invocation_and_its_answers_cross_with_their_sessions_renamed() {
        let inv = Invoke {
            caller: SessionRef { worker: 1, id: 99 },
            request: 5,
            callee: 42,
            registration: 7,
            procedure: "com.x.add".into(),
            pattern: true,
            payload: Payload::args(vec![Value::UInt(2), Value::UInt(3)]),
            receive_progress: true,
            disclosed: Some(Box::new(Identity { session: 99, authid: "al".into(), authrole: "user".into() })),
            progress: false,
            continuation: false,
            ppt: Some(Box::new(vec![("ppt_scheme".into(), Value::Str("x".into()))])),
            caller_ppt: true,
            details: None,
        };
        let b = encode(0, 3, &ShardMsg::Invoke(Box::new(inv))).unwrap();
        let (worker, msg) = decode(&b, 4).unwrap();
        assert_eq!(worker, 3);
        let ShardMsg::Invoke(back) = msg else { panic!() };
        assert_eq!(back.caller, SessionRef { worker: at_node(4, 1), id: 99 });
        assert_eq!((back.request, back.callee, back.registration), (5, 42, 7));
        assert_eq!(back.payload.values().args.as_deref(), Some(&[Value::UInt(2), Value::UInt(3)][..]));
        assert_eq!(back.disclosed.unwrap().authid, "al");
        assert!(back.pattern && back.receive_progress && back.caller_ppt);
        assert_eq!(back.ppt.unwrap().len(), 1);

        let err = CallOutcome::Error {
            error: "app.error".into(),
            details: vec![("k".into(), Value::Bool(true))],
            payload: Payload::args(vec![Value::Str("no".into())]),
        };
        let b = encode(0, 0, &ShardMsg::CallDone(Box::new(CallDone { caller: 99, request: 5, outcome: err }))).unwrap();
        let ShardMsg::CallDone(done) = decode(&b, 4).unwrap().1 else { panic!() };
        assert!(
            matches!(&done.outcome, CallOutcome::Error { error, details, .. } if error == "app.error" && details.len() == 1)
        );

        let b = encode(
            0,
            2,
            &ShardMsg::Interrupt {
                callee: 42,
                caller: SessionRef { worker: 1, id: 99 },
                request: 5,
                why: Interruption::Kill,
            },
        )
        .unwrap();
        let (_, ShardMsg::Interrupt { caller, why, .. }) = decode(&b, 4).unwrap() else { panic!() };
        assert_eq!((caller, why), (SessionRef { worker: at_node(4, 1), id: 99 }, Interruption::Kill));
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert!(decode(b"", 0).is_err());
        assert!(decode(&[VERSION, 0xc1], 0).is_err());
        let gone = encode(0, 0, &ShardMsg::CallerGone { caller: SessionRef { worker: 300, id: 1 } }).unwrap();
        assert!(decode(&gone, 0).is_err(), "a worker no node has");
        assert!(encode(0, 0, &ShardMsg::Started).is_none());
    }

    #[test]
    fn session_meta_questions_travel_and_answers_come_back() {
        use crate::router::meta::{KillTarget, MetaAnswer, MetaQuery};
        let q = ShardMsg::MetaQuery {
            realm: "realm1".into(),
            query: MetaQuery::Kill {
                target: KillTarget::AuthRole("dev".into()),
                reason: "wamp.close.killed".into(),
                message: Some("bye".into()),
                except: 9,
            },
            reply: 1,
            gather: 77,
        };
        let b = encode(0, 0, &q).unwrap();
        match decode(&b, 4).unwrap() {
            (
                0,
                ShardMsg::MetaQuery {
                    realm,
                    query: MetaQuery::Kill { target, reason, message, except },
                    reply,
                    gather,
                },
            ) => {
                assert_eq!(
                    (&*realm, reason.as_str(), message.as_deref(), except),
                    ("realm1", "wamp.close.killed", Some("bye"), 9)
                );
                assert_eq!(target, KillTarget::AuthRole("dev".into()));
                assert_eq!((reply, gather), (at_node(4, 1), 77), "the answer goes back through the cluster");
            }
            other => panic!("{other:?}"),
        }
        let details = vec![("authid".to_owned(), Value::Str("x".into()))];
        for answer in [
            MetaAnswer::Ids(vec![3, 4]),
            MetaAnswer::Details(Some(details)),
            MetaAnswer::Details(None),
            MetaAnswer::Ids(vec![]),
        ] {
            let want = format!("{answer:?}");
            let b = encode(0, 2, &ShardMsg::MetaAnswer { gather: 5, answer, from: None }).unwrap();
            match decode(&b, 3).unwrap() {
                (2, ShardMsg::MetaAnswer { gather: 5, answer, from: Some(3) }) => {
                    assert_eq!(format!("{answer:?}"), want)
                }
                other => panic!("{other:?}"),
            }
        }
        // Subscribers travel by key (another node has its own ID for it).
        let key = crate::router::SubKey {
            realm: "r".into(),
            topic: "a/+".into(),
            policy: crate::router::MatchPolicy::Filter,
            share: None,
            filter: Some("{\"x\":1}".into()),
        };
        let q =
            ShardMsg::MetaQuery { realm: "r".into(), query: MetaQuery::Subscribers(key.clone()), reply: 0, gather: 1 };
        match decode(&encode(0, 0, &q).unwrap(), 3).unwrap() {
            (0, ShardMsg::MetaQuery { query: MetaQuery::Subscribers(back), .. }) => assert_eq!(back, key),
            other => panic!("{other:?}"),
        }
        let revoke = ShardMsg::Revoke { callee: 8, registration: 9, reason: Some("wamp.error.gone".into()) };
        match decode(&encode(0, 1, &revoke).unwrap(), 3).unwrap() {
            (1, ShardMsg::Revoke { callee: 8, registration: 9, reason }) => {
                assert_eq!(reason.as_deref(), Some("wamp.error.gone"))
            }
            other => panic!("{other:?}"),
        }
        // History questions and their events travel.
        let history = MetaQuery::History { topic: "t".into(), policy: crate::router::MatchPolicy::Prefix, limit: 3 };
        let q = ShardMsg::MetaQuery { realm: "r".into(), query: history, reply: 0, gather: 1 };
        match decode(&encode(0, 0, &q).unwrap(), 3).unwrap() {
            (0, ShardMsg::MetaQuery { query: MetaQuery::History { topic, policy, limit }, .. }) => {
                assert_eq!((topic.as_str(), policy, limit), ("t", crate::router::MatchPolicy::Prefix, 3))
            }
            other => panic!("{other:?}"),
        }
        let p = crate::router::Publication::new(
            "r".into(),
            "t.x".into(),
            12,
            SessionRef { worker: 0, id: 5 },
            crate::router::Body::Mqtt(Bytes::from_static(b"v")),
        );
        let recorded = crate::router::history::Recorded { seq: 4, at: 1_000, p: std::sync::Arc::new(p) };
        let answer = ShardMsg::MetaAnswer { gather: 6, answer: MetaAnswer::Events(vec![recorded]), from: None };
        match decode(&encode(0, 1, &answer).unwrap(), 0).unwrap() {
            (1, ShardMsg::MetaAnswer { gather: 6, answer: MetaAnswer::Events(e), from: Some(0) }) => {
                assert_eq!((e.len(), e[0].seq, e[0].at, e[0].p.id, e[0].p.topic.as_str()), (1, 4, 1_000, 12, "t.x"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn history_replays_travel_to_the_subscribers_worker() {
        use crate::router::{MatchPolicy, Member, RetainedReply};
        let reply = RetainedReply {
            worker: 2,
            member: Member::Wamp(17),
            session: 9,
            subscription: 4,
            policy: MatchPolicy::Prefix,
        };
        let q = ShardMsg::HistoryQuery { realm: "r".into(), pattern: "h.".into(), after: 55, reply };
        // At the topic's owner on node 3's side, the answer goes back to
        // worker 2 of the asking node (this node's name for it: node 5).
        let (worker, msg) = decode(&encode(3, 1, &q).unwrap(), 5).unwrap();
        let ShardMsg::HistoryQuery { realm, pattern, after, reply } = msg else { panic!("{msg:?}") };
        assert_eq!((worker, realm.as_ref(), pattern.as_str(), after), (1, "r", "h.", 55));
        assert_eq!((reply.worker, reply.session, reply.subscription), (at_node(5, 2), 9, 4));
        assert!(matches!((reply.member, reply.policy), (Member::Wamp(17), MatchPolicy::Prefix)));
        let p = crate::router::Publication::new(
            "r".into(),
            "h.x".into(),
            56,
            SessionRef { worker: 1, id: 8 },
            crate::router::Body::Mqtt(Bytes::from_static(b"v")),
        );
        let events = vec![crate::router::history::Recorded { seq: 3, at: 2_000, p: std::sync::Arc::new(p) }];
        let answer = ShardMsg::HistoryReplay { reply, anchor: Some(1_990), events, from: None };
        let (worker, msg) = decode(&encode(5, 2, &answer).unwrap(), 3).unwrap();
        let ShardMsg::HistoryReplay { reply, anchor, events, from: Some(3) } = msg else { panic!("{msg:?}") };
        assert_eq!((worker, reply.worker, reply.subscription, anchor), (2, 2, 4, Some(1_990)));
        assert_eq!((events.len(), events[0].seq, events[0].at, events[0].p.id), (1, 3, 2_000, 56));
        // An MQTT subscription's replay does not exist, and does not travel.
        let mqtt = RetainedReply {
            worker: 2,
            member: Member::Mqtt(1),
            session: 9,
            subscription: 4,
            policy: MatchPolicy::Exact,
        };
        assert!(encode(
            0,
            0,
            &ShardMsg::HistoryQuery { realm: "r".into(), pattern: "h".into(), after: 1, reply: mqtt }
        )
        .is_none());
    }
}
