//! MQTT sessions between nodes, pure: the registry's messages of a
//! client ID's take-over (`mqtt::registry`) in a travelling form, so the
//! hand-over that moves a session between two workers of one node moves
//! it between two nodes the same way: the claim goes to the node that
//! holds the client ID, its old worker packs the session (subscriptions,
//! messages in flight and queued, QoS 2 packet IDs) for the new one,
//! forwards what it still receives until the new copy's subscriptions are
//! routed (`HandoffDone`), then stops (`ForwardEnd`).
//!
//! Worker IDs in these messages name a worker of the sender (`Mine`) or of
//! the receiver (`Yours`); the receiver turns them into its own IDs.

use super::wire;
use super::{at_node, node_of, NodeId};
use crate::mqtt::codec::{SubFilter, Version};
use crate::mqtt::registry::{Claim, Msg};
use crate::mqtt::session::{InFlight, Outgoing, SessionState, Sub};
use crate::router::{MatchPolicy, SubKey, WorkerId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wref {
    Mine(WorkerId),
    Yours(WorkerId),
}

fn wref(w: WorkerId, to: NodeId) -> Option<Wref> {
    match node_of(w) {
        None => Some(Wref::Mine(w)),
        Some((n, k)) if n == to => Some(Wref::Yours(k)),
        // A third node's worker: not named across (never needed).
        Some(_) => None,
    }
}

fn unref(r: Wref, from: NodeId) -> Result<WorkerId, String> {
    match r {
        Wref::Mine(w) if usize::from(w) < super::MAX_WORKERS => Ok(at_node(from, w)),
        Wref::Mine(w) => Err(format!("worker {w} out of range")),
        Wref::Yours(w) => Ok(w),
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireClaim {
    key: String,
    session: u64,
    worker: Wref,
    handle: u64,
    serial: u64,
    clean_start: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireOut {
    /// The publication's travelling form (`wire::encode`).
    msg: Bytes,
    qos: u8,
    retain: bool,
    sub_ids: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct WireSub {
    filter: String,
    /// realm, topic, match policy, share group, filter
    key: (String, String, u8, Option<String>, Option<String>),
    /// filter, QoS, no local, retain as published, retain handling
    opts: (String, u8, bool, bool, u8),
    id: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct WireState {
    from: (Wref, u64),
    realm: String,
    version: u8,
    expiry: u32,
    subs: Vec<WireSub>,
    inflight: Vec<(u16, WireOut, bool)>,
    queue: Vec<WireOut>,
    qos2_in: Vec<u16>,
    next_pkid: u16,
}

#[derive(Serialize, Deserialize)]
pub(super) enum WireMqtt {
    /// To the node that holds the client ID, at its registry owner.
    RemoteClaim(WireClaim),
    Claimed {
        claim: WireClaim,
        state: Option<Box<WireState>>,
    },
    Forward {
        session: u64,
        out: WireOut,
    },
    HandoffDone {
        old: u64,
        new: (Wref, u64),
    },
    ForwardEnd {
        session: u64,
    },
}

fn claim_out(c: &Claim, to: NodeId) -> Option<WireClaim> {
    Some(WireClaim {
        key: c.key.to_string(),
        session: c.session,
        worker: wref(c.worker, to)?,
        handle: c.handle as u64,
        serial: c.serial,
        clean_start: c.clean_start,
    })
}

fn claim_in(c: WireClaim, from: NodeId) -> Result<Claim, String> {
    Ok(Claim {
        key: c.key.into(),
        session: c.session,
        worker: unref(c.worker, from)?,
        handle: usize::try_from(c.handle).map_err(|_| "a handle out of range")?,
        serial: c.serial,
        clean_start: c.clean_start,
    })
}

/// `None` for a message that expired: it is not carried over.
fn out_out(o: &Outgoing, now: Instant) -> Option<WireOut> {
    let msg = Bytes::from(wire::encode(&o.msg, 0, now)?);
    Some(WireOut { msg, qos: o.qos, retain: o.retain, sub_ids: o.sub_ids.clone() })
}

fn out_in(o: WireOut, now: Instant) -> Result<Outgoing, String> {
    let (_, p) = wire::decode(&o.msg, now)?;
    // Its place in the old node's store means nothing here.
    Ok(Outgoing { msg: Arc::new(p), qos: o.qos.min(2), retain: o.retain, sub_ids: o.sub_ids, seq: 0 })
}

fn policy_code(p: MatchPolicy) -> u8 {
    match p {
        MatchPolicy::Exact => 0,
        MatchPolicy::Prefix => 1,
        MatchPolicy::Wildcard => 2,
        MatchPolicy::Filter => 3,
    }
}

fn sub_out(s: &Sub) -> WireSub {
    let k = &s.key;
    let o = &s.opts;
    WireSub {
        filter: s.filter.clone(),
        key: (
            k.realm.to_string(),
            k.topic.clone(),
            policy_code(k.policy),
            k.share.as_deref().map(str::to_owned),
            k.filter.as_deref().map(str::to_owned),
        ),
        opts: (o.filter.clone(), o.qos, o.no_local, o.retain_as_published, o.retain_handling),
        id: s.id,
    }
}

fn sub_in(s: WireSub) -> Result<Sub, String> {
    let (realm, topic, policy, share, filter) = s.key;
    let policy = match policy {
        0 => MatchPolicy::Exact,
        1 => MatchPolicy::Prefix,
        2 => MatchPolicy::Wildcard,
        3 => MatchPolicy::Filter,
        p => return Err(format!("unknown match policy {p}")),
    };
    let key = SubKey {
        realm: realm.as_str().into(),
        topic,
        policy,
        share: share.as_deref().map(Arc::from),
        filter: filter.as_deref().map(Arc::from),
    };
    let (f, qos, no_local, retain_as_published, retain_handling) = s.opts;
    let opts = SubFilter { filter: f, qos: qos.min(2), no_local, retain_as_published, retain_handling };
    Ok(Sub { filter: s.filter, key, subscription: 0, opts, id: s.id })
}

fn state_out(s: &SessionState, to: NodeId, now: Instant) -> Option<WireState> {
    Some(WireState {
        from: (wref(s.from.0, to)?, s.from.1),
        realm: s.realm.to_string(),
        version: match s.version {
            Version::V3 => 3,
            Version::V4 => 4,
            Version::V5 => 5,
        },
        expiry: s.expiry,
        subs: s.subs.iter().map(sub_out).collect(),
        inflight: s.inflight.iter().filter_map(|f| Some((f.pkid, out_out(&f.out, now)?, f.released))).collect(),
        queue: s.queue.iter().filter_map(|o| out_out(o, now)).collect(),
        qos2_in: s.qos2_in.clone(),
        next_pkid: s.next_pkid,
    })
}

fn state_in(s: WireState, from: NodeId, now: Instant) -> Result<SessionState, String> {
    Ok(SessionState {
        from: (unref(s.from.0, from)?, s.from.1),
        realm: s.realm.as_str().into(),
        version: match s.version {
            3 => Version::V3,
            4 => Version::V4,
            5 => Version::V5,
            v => return Err(format!("unknown MQTT version {v}")),
        },
        expiry: s.expiry,
        subs: s.subs.into_iter().map(sub_in).collect::<Result<_, _>>()?,
        inflight: s
            .inflight
            .into_iter()
            .map(|(pkid, out, released)| Ok(InFlight { pkid, out: out_in(out, now)?, released }))
            .collect::<Result<_, String>>()?,
        queue: s.queue.into_iter().map(|o| out_in(o, now)).collect::<Result<_, _>>()?,
        qos2_in: s.qos2_in,
        next_pkid: s.next_pkid,
    })
}

/// A registry message for node `to`, or `None` when it does not travel.
pub(super) fn encode(msg: &Msg, to: NodeId, now: Instant) -> Option<WireMqtt> {
    Some(match msg {
        Msg::RemoteClaim(c) => WireMqtt::RemoteClaim(claim_out(c, to)?),
        Msg::Claimed { claim, state } => WireMqtt::Claimed {
            claim: claim_out(claim, to)?,
            state: match state {
                Some(s) => Some(Box::new(state_out(s, to, now)?)),
                None => None,
            },
        },
        Msg::Forward { session, out } => WireMqtt::Forward { session: *session, out: out_out(out, now)? },
        Msg::HandoffDone { old, new: (w, s) } => WireMqtt::HandoffDone { old: *old, new: (wref(*w, to)?, *s) },
        Msg::ForwardEnd { session } => WireMqtt::ForwardEnd { session: *session },
        // The rest stays inside a node.
        _ => return None,
    })
}

/// A registry message from node `from`, with this node's worker IDs.
pub(super) fn decode(m: WireMqtt, from: NodeId, now: Instant) -> Result<Msg, String> {
    Ok(match m {
        WireMqtt::RemoteClaim(c) => Msg::RemoteClaim(claim_in(c, from)?),
        WireMqtt::Claimed { claim, state } => Msg::Claimed {
            claim: claim_in(claim, from)?,
            state: match state {
                Some(s) => Some(Box::new(state_in(*s, from, now)?)),
                None => None,
            },
        },
        WireMqtt::Forward { session, out } => Msg::Forward { session, out: Box::new(out_in(out, now)?) },
        WireMqtt::HandoffDone { old, new: (w, s) } => Msg::HandoffDone { old, new: (unref(w, from)?, s) },
        WireMqtt::ForwardEnd { session } => Msg::ForwardEnd { session },
    })
}
