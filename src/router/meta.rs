//! Router-provided queries that need every worker's answer (the WAMP meta
//! API's scatter-gather): one `MetaQuery` per worker that may know
//! something, each answered with one `MetaAnswer`, merged at the asking
//! worker. Nothing waits: the asking session's call stays open until the
//! last answer (or the deadline) arrives.

use crate::value::Dict;

/// What a worker is asked about its own sessions.
#[derive(Clone, Debug)]
pub enum MetaQuery {
    /// The IDs of the realm's sessions, optionally only those with one of
    /// these authroles.
    Sessions { authroles: Option<Vec<String>> },
    /// One session's details.
    Session(u64),
    /// End the matching sessions (but never `except`, the caller) with
    /// GOODBYE `reason` and `message`; answer their IDs.
    Kill { target: KillTarget, reason: String, message: Option<String>, except: u64 },
    /// The sessions subscribed on this worker to the subscription of this
    /// key (by key, not ID: another node has its own ID for it).
    Subscribers(crate::router::SubKey),
    /// The newest `limit` recorded events of the topics matching.
    History { topic: String, policy: crate::router::MatchPolicy, limit: usize },
    /// The rows of a table this worker owns: the one at `topic` (get), or
    /// the first `limit` under `prefix` after topic `after` (list).
    TableRows { prefix: String, topic: Option<String>, after: Option<String>, limit: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KillTarget {
    Session(u64),
    AuthId(String),
    AuthRole(String),
    All,
}

#[derive(Debug)]
pub enum MetaAnswer {
    Ids(Vec<u64>),
    Details(Option<Dict>),
    Events(Vec<crate::router::history::Recorded>),
    /// Table rows: (topic, row), in topic order.
    Rows(Vec<(String, crate::value::Value)>),
}
