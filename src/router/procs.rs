//! The replicated procedure table: which registrations exist, under which
//! match policy, and which sessions (on which workers) serve each. Changed
//! only by `ProcAdd` / `ProcRemove` broadcasts from each procedure's owner,
//! so a CALL is routed where it is decoded.
//!
//! A call finds one registration, the most specific (the WAMP rule for
//! pattern-based registrations): an exact one, else the longest prefix, else
//! the wildcard pattern with the longest fixed runs before its wildcards.
//! None of the three scans: exact is a hash lookup, prefix a few ordered-map
//! probes (`longest_prefix`), wildcard a trie walk.
//!
//! A registration may have several callees (shared registration); its
//! invocation policy picks one per call (`ProcReg::pick`). Every worker
//! could pick from its copy, but round-robin is one rotation per
//! registration, router-wide: a caller's worker other than the
//! registration's owner asks the owner to pick (one round trip, only for
//! round-robin over several callees), and the owner's copy keeps the counter.

use super::trie::{Part, Slot, Trie};
use super::{MatchPolicy, Realm, SessionRef, WorkerId};
use ahash::AHashMap;
use rand::Rng;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;

/// REGISTER option `invoke`: which callee of a shared registration gets a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvokePolicy {
    /// One callee only; a second REGISTER is refused.
    #[default]
    Single,
    RoundRobin,
    Random,
    /// The earliest registered callee still there.
    First,
    /// The latest registered callee.
    Last,
}

impl InvokePolicy {
    pub fn parse(s: &str) -> Option<InvokePolicy> {
        Some(match s {
            "single" => InvokePolicy::Single,
            "roundrobin" => InvokePolicy::RoundRobin,
            "random" => InvokePolicy::Random,
            "first" => InvokePolicy::First,
            "last" => InvokePolicy::Last,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::RoundRobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Callee {
    pub session: SessionRef,
    /// The callee asked to know its callers (`disclose_caller`).
    pub disclose_caller: bool,
    /// When it registered (ms since the Unix epoch).
    pub since: u64,
}

/// One registration as every worker sees it.
#[derive(Debug, Default)]
pub struct ProcReg {
    pub registration: u64,
    pub invoke: InvokePolicy,
    /// Registered with `reducer: true`.
    pub reducer: bool,
    /// When the owner created it, in milliseconds since the Unix epoch.
    pub created: u64,
    /// The worker that owns it: round-robin picks across workers are made
    /// there, so the rotation is the registration's, not each worker's.
    pub owner: WorkerId,
    /// In the order they registered.
    pub callees: Vec<Callee>,
    /// Round-robin position (this worker's).
    next: Cell<usize>,
}

impl Slot for ProcReg {
    fn vacant(&self) -> bool {
        self.callees.is_empty()
    }
}

impl ProcReg {
    /// The callee that gets the next call, by the invocation policy.
    pub fn pick(&self) -> Option<Callee> {
        let n = self.callees.len();
        let i = match self.invoke {
            _ if n <= 1 => 0,
            InvokePolicy::Single | InvokePolicy::First => 0,
            InvokePolicy::Last => n - 1,
            InvokePolicy::Random => rand::thread_rng().gen_range(0..n),
            InvokePolicy::RoundRobin => {
                let i = self.next.get() % n;
                self.next.set(i + 1);
                i
            }
        };
        self.callees.get(i).copied()
    }
}

fn wildcard_parts(pattern: &str) -> Vec<Part<'_>> {
    pattern.split('.').map(|c| if c.is_empty() { Part::One } else { Part::Lit(c) }).collect()
}

/// The longest key of `map` that is a prefix of `uri`. Each probe takes the
/// greatest key not above the bound; if it is no prefix of `uri`, every
/// prefix of `uri` below it is also a prefix of what the two share, which
/// becomes the next, strictly shorter, bound.
pub(crate) fn longest_prefix<'a, V>(map: &'a BTreeMap<String, V>, uri: &str) -> Option<&'a V> {
    let mut bound = uri;
    loop {
        let (key, v) = map.range::<str, _>((Bound::Unbounded, Bound::Included(bound))).next_back()?;
        if uri.starts_with(key.as_str()) {
            return Some(v);
        }
        let mut common = key.bytes().zip(bound.bytes()).take_while(|(a, b)| a == b).count();
        while !bound.is_char_boundary(common) {
            common -= 1;
        }
        debug_assert!(common < bound.len());
        bound = &bound[..common];
    }
}

#[derive(Debug, Default)]
struct RealmProcs {
    exact: AHashMap<String, ProcReg>,
    prefix: BTreeMap<String, ProcReg>,
    wildcard: Trie<ProcReg>,
    /// Registration ID -> its URI and policy (for the meta API).
    by_id: AHashMap<u64, (String, MatchPolicy)>,
}

impl RealmProcs {
    fn slot(&mut self, uri: &str, policy: MatchPolicy, create: bool) -> Option<&mut ProcReg> {
        match policy {
            MatchPolicy::Exact if create => Some(self.exact.entry(uri.to_owned()).or_default()),
            MatchPolicy::Exact => self.exact.get_mut(uri),
            MatchPolicy::Prefix if create => Some(self.prefix.entry(uri.to_owned()).or_default()),
            MatchPolicy::Prefix => self.prefix.get_mut(uri),
            MatchPolicy::Wildcard => self.wildcard.route_mut(&wildcard_parts(uri), create),
            MatchPolicy::Filter => None,
        }
    }

    fn drop_if_vacant(&mut self, uri: &str, policy: MatchPolicy) {
        match policy {
            MatchPolicy::Exact if self.exact.get(uri).is_some_and(ProcReg::vacant) => {
                self.exact.remove(uri);
            }
            MatchPolicy::Prefix if self.prefix.get(uri).is_some_and(ProcReg::vacant) => {
                self.prefix.remove(uri);
            }
            MatchPolicy::Wildcard => self.wildcard.drop_if_empty(&wildcard_parts(uri)),
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.wildcard.is_empty()
    }
}

/// What `ProcTable::add` is given: one callee joining a registration.
#[derive(Clone, Copy, Debug)]
pub struct Added {
    pub registration: u64,
    pub invoke: InvokePolicy,
    pub reducer: bool,
    pub created: u64,
    pub owner: WorkerId,
    pub callee: Callee,
}

#[derive(Debug, Default)]
pub struct ProcTable {
    realms: AHashMap<Realm, RealmProcs>,
    /// Registrations with `reducer: true`, all realms: while there are
    /// none, a publication costs no lookup here (`reducer_for`).
    reducers: usize,
}

impl ProcTable {
    /// Adds a callee to a registration (creating it).
    pub fn add(&mut self, realm: &Realm, uri: &str, policy: MatchPolicy, a: Added) {
        let procs = self.realms.entry(realm.clone()).or_default();
        let Some(reg) = procs.slot(uri, policy, true) else {
            debug_assert!(false, "no procedure table for {policy:?}");
            return;
        };
        if reg.callees.is_empty() {
            reg.registration = a.registration;
            reg.invoke = a.invoke;
            reg.reducer = a.reducer;
            reg.created = a.created;
            reg.owner = a.owner;
            self.reducers += usize::from(a.reducer);
        }
        debug_assert_eq!(reg.registration, a.registration, "one registration ID per URI and policy at a time");
        if !reg.callees.iter().any(|c| c.session == a.callee.session) {
            reg.callees.push(a.callee);
        }
        procs.by_id.insert(a.registration, (uri.to_owned(), policy));
    }

    /// Removes a callee from a registration if it still is `registration`
    /// (a newer one stays); the registration goes with its last callee.
    pub fn remove(&mut self, realm: &str, uri: &str, policy: MatchPolicy, registration: u64, callee: SessionRef) {
        let Some(procs) = self.realms.get_mut(realm) else { return };
        let Some(reg) = procs.slot(uri, policy, false) else { return };
        if reg.registration != registration {
            return;
        }
        reg.callees.retain(|c| c.session != callee);
        if reg.callees.is_empty() {
            self.reducers -= usize::from(reg.reducer);
            procs.by_id.remove(&registration);
            procs.drop_if_vacant(uri, policy);
        }
        if procs.is_empty() {
            self.realms.remove(realm);
        }
    }

    /// The registration a call of `uri` goes to, and its policy.
    pub fn lookup(&self, realm: &str, uri: &str) -> Option<(MatchPolicy, &ProcReg)> {
        let procs = self.realms.get(realm)?;
        if let Some(r) = procs.exact.get(uri) {
            return Some((MatchPolicy::Exact, r));
        }
        if let Some(r) = longest_prefix(&procs.prefix, uri) {
            return Some((MatchPolicy::Prefix, r));
        }
        procs.wildcard.best_match(uri).map(|r| (MatchPolicy::Wildcard, r))
    }

    /// The reducer of a publication to `topic`: the registration a call of
    /// that URI would reach, if it was registered with `reducer: true`.
    pub fn reducer_for(&self, realm: &str, topic: &str) -> Option<(MatchPolicy, &ProcReg)> {
        if self.reducers == 0 {
            return None;
        }
        self.lookup(realm, topic).filter(|(_, r)| r.reducer && !r.callees.is_empty())
    }

    /// The registration of exactly this URI and policy.
    pub fn get(&self, realm: &str, uri: &str, policy: MatchPolicy) -> Option<&ProcReg> {
        let procs = self.realms.get(realm)?;
        match policy {
            MatchPolicy::Exact => procs.exact.get(uri),
            MatchPolicy::Prefix => procs.prefix.get(uri),
            MatchPolicy::Wildcard => procs.wildcard.get(&wildcard_parts(uri)),
            MatchPolicy::Filter => None,
        }
    }

    /// A registration by ID: its URI, policy and state.
    pub fn by_id(&self, realm: &str, id: u64) -> Option<(&str, MatchPolicy, &ProcReg)> {
        let (uri, policy) = self.realms.get(realm)?.by_id.get(&id)?;
        let reg = self.get(realm, uri, *policy)?;
        Some((uri.as_str(), *policy, reg))
    }

    /// The realms with registrations.
    pub fn realms(&self) -> impl Iterator<Item = &Realm> {
        self.realms.keys()
    }

    /// Every registration of a realm: (URI, policy, registration).
    pub fn for_each(&self, realm: &str, mut f: impl FnMut(&str, MatchPolicy, &ProcReg)) {
        let Some(procs) = self.realms.get(realm) else { return };
        for (uri, r) in &procs.exact {
            f(uri, MatchPolicy::Exact, r);
        }
        for (uri, r) in &procs.prefix {
            f(uri, MatchPolicy::Prefix, r);
        }
        procs.wildcard.for_each(&mut |r| {
            if let Some((uri, _)) = procs.by_id.get(&r.registration) {
                f(uri, MatchPolicy::Wildcard, r);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callee(worker: u16, id: u64) -> Callee {
        Callee { session: SessionRef { worker, id }, disclose_caller: false, since: 0 }
    }

    fn add(t: &mut ProcTable, uri: &str, policy: MatchPolicy, registration: u64, c: Callee, invoke: InvokePolicy) {
        t.add(
            &"r".into(),
            uri,
            policy,
            Added { registration, invoke, reducer: false, created: 0, owner: 0, callee: c },
        );
    }

    fn called(t: &ProcTable, uri: &str) -> Option<u64> {
        t.lookup("r", uri).map(|(_, r)| r.registration)
    }

    /// The spec's example for calls matching several registrations.
    #[test]
    fn most_specific_registration_wins() {
        let mut t = ProcTable::default();
        let regs = [
            ("a1.b2.c3.d4.e55", MatchPolicy::Exact),
            ("a1.b2.c3", MatchPolicy::Prefix),
            ("a1.b2.c3.d4", MatchPolicy::Prefix),
            ("a1.b2..d4.e5", MatchPolicy::Wildcard),
            ("a1.b2.c33..e5", MatchPolicy::Wildcard),
            ("a1.b2..d4.e5..g7", MatchPolicy::Wildcard),
            ("a1.b2..d4..f6.g7", MatchPolicy::Wildcard),
        ];
        for (i, (uri, policy)) in regs.into_iter().enumerate() {
            add(&mut t, uri, policy, i as u64 + 1, callee(0, 1), InvokePolicy::Single);
        }
        assert_eq!(called(&t, "a1.b2.c3.d4.e55"), Some(1));
        assert_eq!(called(&t, "a1.b2.c3.d98.e74"), Some(2));
        assert_eq!(called(&t, "a1.b2.c3.d4.e325"), Some(3));
        assert_eq!(called(&t, "a1.b2.c55.d4.e5"), Some(4));
        // The spec's example says RPC 5 here, but its own definition of
        // prefix matching (`com.myapp.myobject1` matches
        // `com.myapp.myobject1-mysubobject1`) makes `a1.b2.c3` a prefix of
        // this URI, and a prefix match comes before any wildcard one. We
        // follow the definition, as Crossbar.io and nexus do.
        assert_eq!(called(&t, "a1.b2.c33.d4.e5"), Some(2));
        assert_eq!(called(&t, "a1.b2.c88.d4.e5.f6.g7"), Some(6));
        t.remove("r", "a1.b2.c3", MatchPolicy::Prefix, 2, SessionRef { worker: 0, id: 1 });
        assert_eq!(called(&t, "a1.b2.c33.d4.e5"), Some(5));
        assert_eq!(called(&t, "a1.b2.c3.d98.e74"), None);
        assert_eq!(called(&t, "a2.b2.c2.d2.e2"), None);
        // A prefix is a string prefix, and matches itself.
        assert_eq!(called(&t, "a1.b2.c3.d4"), Some(3));
        assert_eq!(called(&t, "a1.b2.c3.d4x"), Some(3));
        assert_eq!(called(&t, "a1.b2.c3.d"), None);
        assert_eq!(t.by_id("r", 6).map(|(u, p, _)| (u, p)), Some(("a1.b2..d4.e5..g7", MatchPolicy::Wildcard)));
        let mut n = 0;
        t.for_each("r", |_, _, _| n += 1);
        assert_eq!(n, 6);
    }

    #[test]
    fn longest_prefix_probes() {
        let map: BTreeMap<String, u32> = [("a", 1), ("a.b", 2), ("a.b.c.d", 3), ("a.bz", 4), ("b", 5), ("é", 6)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
        let find = |uri: &str| longest_prefix(&map, uri).copied();
        assert_eq!(find("a.b.c"), Some(2));
        assert_eq!(find("a.b.c.d.e"), Some(3));
        assert_eq!(find("a.by"), Some(2));
        assert_eq!(find("a.c"), Some(1));
        assert_eq!(find("a.bzz"), Some(4));
        assert_eq!(find("c"), None);
        assert_eq!(find("éa"), Some(6));
        assert_eq!(find("ê"), None);
    }

    #[test]
    fn shared_registration_policies() {
        let mut t = ProcTable::default();
        for (uri, invoke) in
            [("rr", InvokePolicy::RoundRobin), ("first", InvokePolicy::First), ("last", InvokePolicy::Last)]
        {
            for id in 1..=3 {
                add(&mut t, uri, MatchPolicy::Exact, 7, callee(id as u16 % 2, id), invoke);
            }
        }
        let pick = |t: &ProcTable, uri: &str| t.lookup("r", uri).unwrap().1.pick().unwrap().session.id;
        assert_eq!((0..6).map(|_| pick(&t, "rr")).collect::<Vec<_>>(), vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(pick(&t, "first"), 1);
        assert_eq!(pick(&t, "last"), 3);
        let gone = SessionRef { worker: 1, id: 1 };
        t.remove("r", "first", MatchPolicy::Exact, 7, gone);
        assert_eq!(pick(&t, "first"), 2);
        // A stale removal (another registration ID) changes nothing.
        t.remove("r", "last", MatchPolicy::Exact, 8, SessionRef { worker: 1, id: 3 });
        assert_eq!(pick(&t, "last"), 3);
        for id in 2..=3 {
            t.remove("r", "first", MatchPolicy::Exact, 7, SessionRef { worker: id as u16 % 2, id });
        }
        assert!(t.lookup("r", "first").is_none());
    }
}
