//! Registrations across nodes, pure: the entry a registration keeps in the
//! cluster's bucket, how a node joins or leaves it (decided by a
//! compare-and-set on that entry, so two nodes never both hold a `single`
//! registration), and the table of other nodes' callees a worker routes
//! CALLs by.
//!
//! One entry per (realm, URI, match policy), key `reg=<hash>`: the
//! invocation policy and, per node that serves it, that node's
//! registration ID and callees in the order they registered. A node
//! writes only its own part, by `update` with the revision it read (or
//! `create`), retried on a conflict; a part of a node known dead (or of an
//! earlier life of a node) is dropped by whoever writes next.

use crate::router::procs::InvokePolicy;
use crate::router::trie::{Part, Slot, Trie};
use crate::router::{MatchPolicy, Realm, SessionRef, WorkerId};
use ahash::AHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One callee of a node's part.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartCallee {
    pub worker: WorkerId,
    pub session: u64,
    pub disclose_caller: bool,
    /// When it registered (ms since the Unix epoch): `first` and `last`
    /// across nodes.
    pub since: u64,
}

/// A node's part of a registration, as its procedure's owner states it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegPart {
    pub realm: String,
    pub uri: String,
    pub policy: String,
    pub invoke: String,
    /// The registration ID on that node (its INVOCATIONs carry it).
    pub registration: u64,
    /// None: the node no longer serves the registration.
    pub callees: Vec<PartCallee>,
}

impl RegPart {
    /// The registration's key in the bucket.
    pub fn bucket_key(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for f in [self.realm.as_str(), self.uri.as_str(), self.policy.as_str()] {
            for b in f.bytes().chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
        format!("{REG_KEY}{h:016x}")
    }
}

/// Keys of registration entries start so (never a node name: `=` is not
/// a plain character).
pub const REG_KEY: &str = "reg=";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodePart {
    pub node: String,
    pub incarnation: u64,
    pub registration: u64,
    pub callees: Vec<PartCallee>,
}

/// A registration's entry in the bucket.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegEntry {
    pub realm: String,
    pub uri: String,
    pub policy: String,
    pub invoke: String,
    pub parts: Vec<NodePart>,
}

/// What a node writes after reading an entry.
#[derive(Debug, PartialEq)]
pub enum Join {
    Write(RegEntry),
    Delete,
    /// Another live node holds it with another policy, or as `single`.
    Refused,
}

/// Node `node` (incarnation `incarnation`) states its part against the
/// entry it read; `dead` says which other parts are known to be gone.
pub fn join(
    read: Option<RegEntry>,
    node: &str,
    incarnation: u64,
    part: &RegPart,
    dead: impl Fn(&str, u64) -> bool,
) -> Join {
    let mut entry = read.unwrap_or_else(|| RegEntry {
        realm: part.realm.clone(),
        uri: part.uri.clone(),
        policy: part.policy.clone(),
        invoke: part.invoke.clone(),
        parts: Vec::new(),
    });
    entry.parts.retain(|p| p.node != node && !dead(&p.node, p.incarnation));
    if !part.callees.is_empty() {
        if !entry.parts.is_empty() && (entry.invoke != part.invoke || part.invoke == "single") {
            return Join::Refused;
        }
        entry.invoke = part.invoke.clone();
        entry.parts.push(NodePart {
            node: node.to_owned(),
            incarnation,
            registration: part.registration,
            callees: part.callees.clone(),
        });
    }
    if entry.parts.is_empty() {
        Join::Delete
    } else {
        Join::Write(entry)
    }
}

/// A callee on another node, as a worker routes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCallee {
    /// Its session, its worker addressed through the cluster (`at_node`).
    pub session: SessionRef,
    /// The registration ID on its node.
    pub registration: u64,
    pub disclose_caller: bool,
    pub since: u64,
}

/// Other nodes' callees of one registration.
#[derive(Debug, Default, Clone)]
pub struct RemoteReg {
    pub uri: String,
    pub invoke: InvokePolicy,
    pub callees: Arc<Vec<RemoteCallee>>,
}

impl RemoteReg {
    /// The ID the meta API shows for it where this node has no callee of
    /// it: the least of its nodes' IDs (each node has its own).
    pub fn meta_id(&self) -> Option<u64> {
        self.callees.iter().map(|c| c.registration).min()
    }

    /// When its first callee registered (ms since the Unix epoch).
    pub fn created(&self) -> u64 {
        self.callees.iter().map(|c| c.since).min().unwrap_or(0)
    }
}

impl Slot for RemoteReg {
    fn vacant(&self) -> bool {
        self.callees.is_empty()
    }
}

fn wildcard_parts(pattern: &str) -> Vec<Part<'_>> {
    pattern.split('.').map(|c| if c.is_empty() { Part::One } else { Part::Lit(c) }).collect()
}

#[derive(Debug, Default)]
struct RealmRemote {
    exact: AHashMap<String, RemoteReg>,
    prefix: BTreeMap<String, RemoteReg>,
    wildcard: Trie<RemoteReg>,
}

/// Each worker's copy of the other nodes' registrations (from the
/// cluster thread's `ShardMsg::RemoteProcs`).
#[derive(Debug, Default)]
pub struct RemoteProcs {
    realms: AHashMap<Realm, RealmRemote>,
}

impl RemoteProcs {
    pub fn is_empty(&self) -> bool {
        self.realms.is_empty()
    }

    /// Sets (or with no callees, removes) a registration's remote callees.
    pub fn set(&mut self, realm: &Realm, policy: MatchPolicy, reg: RemoteReg) {
        let r = self.realms.entry(realm.clone()).or_default();
        let uri = reg.uri.clone();
        if reg.callees.is_empty() {
            match policy {
                MatchPolicy::Exact => drop(r.exact.remove(&uri)),
                MatchPolicy::Prefix => drop(r.prefix.remove(&uri)),
                MatchPolicy::Wildcard => {
                    if let Some(slot) = r.wildcard.route_mut(&wildcard_parts(&uri), false) {
                        *slot = RemoteReg::default();
                    }
                    r.wildcard.drop_if_empty(&wildcard_parts(&uri));
                }
                MatchPolicy::Filter => {}
            }
            if r.exact.is_empty() && r.prefix.is_empty() && r.wildcard.is_empty() {
                self.realms.remove(realm);
            }
            return;
        }
        match policy {
            MatchPolicy::Exact => drop(r.exact.insert(uri, reg)),
            MatchPolicy::Prefix => drop(r.prefix.insert(uri, reg)),
            MatchPolicy::Wildcard => {
                if let Some(slot) = r.wildcard.route_mut(&wildcard_parts(&uri), true) {
                    *slot = reg;
                }
            }
            MatchPolicy::Filter => {}
        }
    }

    /// The remote registration of exactly this URI and match policy.
    pub fn get(&self, realm: &str, uri: &str, policy: MatchPolicy) -> Option<&RemoteReg> {
        let r = self.realms.get(realm)?;
        match policy {
            MatchPolicy::Exact => r.exact.get(uri),
            MatchPolicy::Prefix => r.prefix.get(uri),
            MatchPolicy::Wildcard => r.wildcard.get(&wildcard_parts(uri)),
            MatchPolicy::Filter => None,
        }
        .filter(|reg| !reg.callees.is_empty())
    }

    /// Every remote registration of a realm, with its match policy.
    pub fn for_each<'a>(&'a self, realm: &str, mut f: impl FnMut(MatchPolicy, &'a RemoteReg)) {
        let Some(r) = self.realms.get(realm) else { return };
        for reg in r.exact.values() {
            f(MatchPolicy::Exact, reg);
        }
        for reg in r.prefix.values() {
            f(MatchPolicy::Prefix, reg);
        }
        r.wildcard.for_each(&mut |reg: &'a RemoteReg| {
            if !reg.callees.is_empty() {
                f(MatchPolicy::Wildcard, reg)
            }
        });
    }

    /// The remote registration one of whose nodes gave it this ID.
    pub fn by_id(&self, realm: &str, id: u64) -> Option<(MatchPolicy, &RemoteReg)> {
        let mut found = None;
        self.for_each(realm, |policy, reg| {
            if found.is_none() && reg.callees.iter().any(|c| c.registration == id) {
                found = Some((policy, reg));
            }
        });
        found
    }

    /// The most specific remote registration a call of `uri` matches.
    pub fn lookup(&self, realm: &str, uri: &str) -> Option<(MatchPolicy, &RemoteReg)> {
        let r = self.realms.get(realm)?;
        if let Some(reg) = r.exact.get(uri) {
            return Some((MatchPolicy::Exact, reg));
        }
        if let Some(reg) = crate::router::procs::longest_prefix(&r.prefix, uri) {
            return Some((MatchPolicy::Prefix, reg));
        }
        r.wildcard.best_match(uri).map(|reg| (MatchPolicy::Wildcard, reg))
    }
}

/// Which of two registrations that both match a URI is the more specific
/// (WAMP's order: exact, then the longest prefix, then the wildcard
/// pattern with literal components earliest); `Equal` when they are the
/// same registration.
pub fn specificity(a: (MatchPolicy, &str), b: (MatchPolicy, &str)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |p: MatchPolicy| match p {
        MatchPolicy::Exact => 3,
        MatchPolicy::Prefix => 2,
        _ => 1,
    };
    match rank(a.0).cmp(&rank(b.0)) {
        Ordering::Equal => {}
        o => return o,
    }
    match a.0 {
        MatchPolicy::Exact => Ordering::Equal,
        MatchPolicy::Prefix => a.1.len().cmp(&b.1.len()),
        _ => {
            let lits = |s: &str| s.split('.').map(|c| !c.is_empty()).collect::<Vec<_>>();
            // Two patterns that match one URI with the same wildcards are the same.
            lits(a.1).cmp(&lits(b.1))
        }
    }
}

/// The index the invocation policy picks among `n` callees registered at
/// `since(i)`; `rr` is the caller worker's rotation for round-robin.
pub fn pick(invoke: InvokePolicy, n: usize, since: impl Fn(usize) -> u64, rr: &mut usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    Some(match invoke {
        InvokePolicy::Single | InvokePolicy::First => (0..n).min_by_key(|&i| (since(i), i))?,
        InvokePolicy::Last => (0..n).max_by_key(|&i| (since(i), i))?,
        InvokePolicy::Random => rand::Rng::gen_range(&mut rand::thread_rng(), 0..n),
        InvokePolicy::RoundRobin => {
            *rr = rr.wrapping_add(1);
            *rr % n
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    fn part(invoke: &str, callees: usize) -> RegPart {
        RegPart {
            realm: "r".into(),
            uri: "p".into(),
            policy: "exact".into(),
            invoke: invoke.into(),
            registration: 7,
            callees: (0..callees)
                .map(|i| PartCallee { worker: 0, session: i as u64 + 1, disclose_caller: false, since: 0 })
                .collect(),
        }
    }

    #[test]
    fn one_single_registration_cluster_wide() {
        let none = |_: &str, _: u64| false;
        let Join::Write(a) = join(None, "a", 1, &part("single", 1), none) else { panic!() };
        assert_eq!(join(Some(a.clone()), "b", 2, &part("single", 1), none), Join::Refused);
        // Node a is known dead: its part goes, b takes the registration.
        let Join::Write(b) = join(Some(a.clone()), "b", 2, &part("single", 1), |n, _| n == "a") else { panic!() };
        assert_eq!(b.parts.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["b"]);
        // Node a's next life replaces its old part; leaving deletes the entry.
        let Join::Write(again) = join(Some(a.clone()), "a", 3, &part("single", 1), none) else { panic!() };
        assert_eq!(again.parts.len(), 1);
        assert_eq!(again.parts[0].incarnation, 3);
        assert_eq!(join(Some(a), "a", 1, &part("single", 0), none), Join::Delete);
    }

    #[test]
    fn shared_registrations_need_the_same_policy() {
        let none = |_: &str, _: u64| false;
        let Join::Write(a) = join(None, "a", 1, &part("roundrobin", 2), none) else { panic!() };
        assert_eq!(join(Some(a.clone()), "b", 2, &part("random", 1), none), Join::Refused);
        let Join::Write(ab) = join(Some(a), "b", 2, &part("roundrobin", 1), none) else { panic!() };
        assert_eq!(ab.parts.len(), 2);
        let Join::Write(b) = join(Some(ab), "a", 1, &part("roundrobin", 0), none) else { panic!() };
        assert_eq!(b.parts.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(part("x", 0).bucket_key().starts_with(REG_KEY));
    }

    #[test]
    fn the_more_specific_registration_wins() {
        use MatchPolicy::*;
        assert_eq!(specificity((Exact, "a.b"), (Prefix, "a")), Ordering::Greater);
        assert_eq!(specificity((Prefix, "a"), (Prefix, "a.b")), Ordering::Less);
        assert_eq!(specificity((Prefix, "a.b"), (Prefix, "a.b")), Ordering::Equal);
        assert_eq!(specificity((Wildcard, "a..c"), (Wildcard, ".b.c")), Ordering::Greater);
        assert_eq!(specificity((Wildcard, "a..c"), (Wildcard, "a..c")), Ordering::Equal);
        assert_eq!(specificity((Wildcard, "a..c"), (Prefix, "a")), Ordering::Less);
    }

    #[test]
    fn remote_table_finds_the_most_specific() {
        let mut t = RemoteProcs::default();
        let reg = |uri: &str| RemoteReg {
            uri: uri.into(),
            invoke: InvokePolicy::Single,
            callees: Arc::new(vec![RemoteCallee {
                session: SessionRef { worker: 0x8000, id: 1 },
                registration: 1,
                disclose_caller: false,
                since: 0,
            }]),
        };
        let realm: Realm = "r".into();
        t.set(&realm, MatchPolicy::Prefix, reg("a."));
        t.set(&realm, MatchPolicy::Wildcard, reg("a..c"));
        t.set(&realm, MatchPolicy::Exact, reg("a.b.c"));
        let found = |t: &RemoteProcs, uri: &str| t.lookup("r", uri).map(|(p, r)| (p, r.uri.clone()));
        assert_eq!(found(&t, "a.b.c"), Some((MatchPolicy::Exact, "a.b.c".into())));
        assert_eq!(found(&t, "a.x.c"), Some((MatchPolicy::Prefix, "a.".into())));
        t.set(&realm, MatchPolicy::Prefix, RemoteReg { uri: "a.".into(), ..Default::default() });
        assert_eq!(found(&t, "a.x.c"), Some((MatchPolicy::Wildcard, "a..c".into())));
        t.set(&realm, MatchPolicy::Wildcard, RemoteReg { uri: "a..c".into(), ..Default::default() });
        t.set(&realm, MatchPolicy::Exact, RemoteReg { uri: "a.b.c".into(), ..Default::default() });
        assert!(t.is_empty());
    }

    #[test]
    fn picks_by_policy() {
        let since = [30, 10, 20];
        let mut rr = 0;
        assert_eq!(pick(InvokePolicy::First, 3, |i| since[i], &mut rr), Some(1));
        assert_eq!(pick(InvokePolicy::Last, 3, |i| since[i], &mut rr), Some(0));
        let turns: Vec<_> = (0..6).filter_map(|_| pick(InvokePolicy::RoundRobin, 3, |i| since[i], &mut rr)).collect();
        assert_eq!(turns, [1, 2, 0, 1, 2, 0]);
        assert_eq!(pick(InvokePolicy::Random, 0, |_| 0, &mut rr), None);
    }
}
