//! The replicated subscription table: which subscription matches a topic, and
//! which workers hold subscribers of it. Every worker keeps an identical copy,
//! changed only by `RouteAdd` / `RouteRemove` broadcasts from each key's owner,
//! so a publish is routed where it is decoded, in one hop.

use super::trie::{Part, Trie};
use super::{MatchPolicy, Realm, SubKey, WorkerId};
use crate::mqtt::topic::{filter_matches, filter_parts};
use ahash::AHashMap;

/// WAMP wildcard: as many components as the pattern, empty ones match any.
/// WAMP wildcard: as many components as the pattern, empty ones match
/// any (no allocation: it runs per publication for history rules and
/// filtered subscriptions).
fn wildcard_matches(pattern: &str, topic: &str) -> bool {
    let (mut p, mut t) = (pattern.split('.'), topic.split('.'));
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.is_empty() || a == b => {}
            _ => return false,
        }
    }
}

/// Whether a subscription pattern under `policy` matches `topic` (used where
/// the tables are not: retained values).
pub fn matches(policy: MatchPolicy, pattern: &str, topic: &str) -> bool {
    match policy {
        MatchPolicy::Exact => pattern == topic,
        MatchPolicy::Prefix => topic.starts_with(pattern),
        MatchPolicy::Wildcard => wildcard_matches(pattern, topic),
        MatchPolicy::Filter => filter_matches(&filter_parts(pattern), topic),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub subscription: u64,
    /// When the owner created the subscription (ms since the Unix epoch).
    pub created: u64,
    /// Workers with at least one subscriber, sorted, no duplicates.
    pub workers: Vec<WorkerId>,
}

impl Route {
    pub fn has(&self, worker: WorkerId) -> bool {
        self.workers.binary_search(&worker).is_ok()
    }
}

/// The trie parts of a WAMP wildcard pattern (empty component: any one).
fn wildcard_parts(pattern: &str) -> Vec<Part<'_>> {
    pattern.split('.').map(|c| if c.is_empty() { Part::One } else { Part::Lit(c) }).collect()
}

/// The trie parts of an MQTT filter in core form (`+`: any one, last `#`: the rest).
fn mqtt_parts(pattern: &str) -> Vec<Part<'_>> {
    pattern
        .split('.')
        .map(|c| match c {
            "+" => Part::One,
            "#" => Part::Rest,
            c => Part::Lit(c),
        })
        .collect()
}

/// A shared subscription's entry.
#[derive(Debug)]
struct Shared {
    /// The key, its group included.
    key: SubKey,
    /// The filter's components.
    parts: Vec<String>,
    route: Route,
    turns: Turns,
}

impl Shared {
    fn hits(&self, topic: &str) -> bool {
        match self.key.policy {
            MatchPolicy::Filter => filter_matches(&self.parts, topic),
            policy => matches(policy, &self.key.topic, topic),
        }
    }
}

/// Whose turn it is to serve a shared subscription, kept per subscription
/// so that each group takes its members in turn however many groups a
/// topic has (`Shard::pick_shared`).
#[derive(Debug, Default)]
pub struct Turns {
    /// Among the nodes with members (this node and the others).
    pub node: usize,
    /// Among this node's workers with members.
    pub worker: usize,
}

#[derive(Debug)]
struct RealmTopics {
    exact: AHashMap<String, Route>,
    prefix: Vec<(String, Route)>,
    /// WAMP wildcard patterns.
    wildcard: Trie,
    /// MQTT filters (with the `$` rule).
    filter: Trie,
    /// Shared subscriptions (MQTT `$share`), matched by a scan.
    shared: Vec<Shared>,
    /// Subscriptions with a value `filter` (WAMP, fox-wamp's option):
    /// matched by a scan, like shared ones.
    filtered: Vec<(SubKey, Route)>,
}

impl Default for RealmTopics {
    fn default() -> RealmTopics {
        RealmTopics {
            exact: AHashMap::new(),
            prefix: Vec::new(),
            wildcard: Trie::new(false),
            filter: Trie::new(true),
            shared: Vec::new(),
            filtered: Vec::new(),
        }
    }
}

impl RealmTopics {
    fn route_mut(&mut self, key: &SubKey, create: bool) -> Option<&mut Route> {
        let empty = Route::default;
        if key.filter.is_some() {
            let i = match self.filtered.iter().position(|(k, _)| k == key) {
                Some(i) => i,
                None if create => {
                    self.filtered.push((key.clone(), empty()));
                    self.filtered.len() - 1
                }
                None => return None,
            };
            return Some(&mut self.filtered[i].1);
        }
        if key.share.is_some() {
            let i = match self.shared.iter().position(|s| s.key == *key) {
                Some(i) => i,
                None if create => {
                    let parts = filter_parts(&key.topic);
                    self.shared.push(Shared { key: key.clone(), parts, route: empty(), turns: Turns::default() });
                    self.shared.len() - 1
                }
                None => return None,
            };
            return Some(&mut self.shared[i].route);
        }
        match key.policy {
            MatchPolicy::Exact => {
                if create {
                    Some(self.exact.entry(key.topic.clone()).or_insert_with(empty))
                } else {
                    self.exact.get_mut(&key.topic)
                }
            }
            MatchPolicy::Prefix => {
                let i = match self.prefix.iter().position(|(t, _)| *t == key.topic) {
                    Some(i) => i,
                    None if create => {
                        self.prefix.push((key.topic.clone(), empty()));
                        self.prefix.len() - 1
                    }
                    None => return None,
                };
                Some(&mut self.prefix[i].1)
            }
            MatchPolicy::Wildcard => self.wildcard.route_mut(&wildcard_parts(&key.topic), create),
            MatchPolicy::Filter => self.filter.route_mut(&mqtt_parts(&key.topic), create),
        }
    }

    fn drop_if_empty(&mut self, key: &SubKey) {
        if key.filter.is_some() {
            self.filtered.retain(|(_, r)| !r.workers.is_empty());
            return;
        }
        if key.share.is_some() {
            self.shared.retain(|s| !s.route.workers.is_empty());
            return;
        }
        match key.policy {
            MatchPolicy::Exact => {
                if self.exact.get(&key.topic).is_some_and(|r| r.workers.is_empty()) {
                    self.exact.remove(&key.topic);
                }
            }
            MatchPolicy::Prefix => self.prefix.retain(|(_, r)| !r.workers.is_empty()),
            MatchPolicy::Wildcard => self.wildcard.drop_if_empty(&wildcard_parts(&key.topic)),
            MatchPolicy::Filter => self.filter.drop_if_empty(&mqtt_parts(&key.topic)),
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.prefix.is_empty()
            && self.wildcard.is_empty()
            && self.filter.is_empty()
            && self.shared.is_empty()
            && self.filtered.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct TopicTable {
    realms: AHashMap<Realm, RealmTopics>,
    /// Subscription ID -> its key (for the meta API).
    by_id: AHashMap<u64, SubKey>,
}

impl TopicTable {
    /// Routes events matching `key` to `worker` under `subscription`. A key
    /// has one subscription ID at a time; the owner only re-numbers a key
    /// after every worker released it.
    pub fn add(&mut self, key: &SubKey, subscription: u64, created: u64, worker: WorkerId) {
        let realm = self.realms.entry(key.realm.clone()).or_default();
        let route = realm.route_mut(key, true).expect("created");
        if route.workers.is_empty() {
            route.subscription = subscription;
            route.created = created;
            self.by_id.insert(subscription, key.clone());
        }
        assert_eq!(route.subscription, subscription, "one subscription ID per key at a time");
        if let Err(at) = route.workers.binary_search(&worker) {
            route.workers.insert(at, worker);
        }
    }

    pub fn remove(&mut self, key: &SubKey, subscription: u64, worker: WorkerId) {
        let Some(realm) = self.realms.get_mut(&key.realm) else { return };
        if let Some(route) = realm.route_mut(key, false) {
            if route.subscription == subscription {
                if let Ok(at) = route.workers.binary_search(&worker) {
                    route.workers.remove(at);
                }
                if route.workers.is_empty() {
                    self.by_id.remove(&subscription);
                }
            }
        }
        realm.drop_if_empty(key);
        if realm.is_empty() {
            self.realms.remove(&key.realm);
        }
    }

    /// Calls `f` for every subscription whose pattern matches `topic`.
    pub fn for_each_match<'a>(&'a self, realm: &str, topic: &str, mut f: impl FnMut(MatchPolicy, &'a Route)) {
        let Some(realm) = self.realms.get(realm) else { return };
        if let Some(route) = realm.exact.get(topic) {
            f(MatchPolicy::Exact, route);
        }
        for (prefix, route) in &realm.prefix {
            if topic.starts_with(prefix.as_str()) {
                f(MatchPolicy::Prefix, route);
            }
        }
        realm.wildcard.for_each_match(topic, &mut |r| f(MatchPolicy::Wildcard, r));
        realm.filter.for_each_match(topic, &mut |r| f(MatchPolicy::Filter, r));
        for (key, route) in &realm.filtered {
            if matches(key.policy, &key.topic, topic) {
                f(key.policy, route);
            }
        }
    }

    /// Calls `f` for every shared subscription matching `topic` (they are
    /// not reported by `for_each_match`: one member of each gets a message),
    /// with its turns to advance.
    pub fn for_each_shared(&mut self, realm: &str, topic: &str, mut f: impl FnMut(&SubKey, &Route, &mut Turns)) {
        let Some(realm) = self.realms.get_mut(realm) else { return };
        for s in &mut realm.shared {
            if s.hits(topic) {
                f(&s.key, &s.route, &mut s.turns);
            }
        }
    }

    /// Whether some shared subscription with subscribers matches `topic`.
    pub fn any_shared(&self, realm: &str, topic: &str) -> bool {
        let Some(realm) = self.realms.get(realm) else { return false };
        realm.shared.iter().any(|s| !s.route.workers.is_empty() && s.hits(topic))
    }

    /// A subscription by ID: its key and route.
    pub fn by_id(&self, subscription: u64) -> Option<(&SubKey, &Route)> {
        let key = self.by_id.get(&subscription)?;
        let route = self.get(key)?;
        Some((key, route))
    }

    /// The route of exactly this key.
    pub fn get(&self, key: &SubKey) -> Option<&Route> {
        let realm = self.realms.get(&key.realm)?;
        if key.filter.is_some() {
            return realm.filtered.iter().find(|(k, _)| k == key).map(|(_, r)| r);
        }
        if key.share.is_some() {
            return realm.shared.iter().find(|s| s.key == *key).map(|s| &s.route);
        }
        match key.policy {
            MatchPolicy::Exact => realm.exact.get(&key.topic),
            MatchPolicy::Prefix => realm.prefix.iter().find(|(t, _)| *t == key.topic).map(|(_, r)| r),
            MatchPolicy::Wildcard => realm.wildcard.get(&wildcard_parts(&key.topic)),
            MatchPolicy::Filter => realm.filter.get(&mqtt_parts(&key.topic)),
        }
    }

    /// Every subscription of a realm (shared ones included).
    pub fn for_each(&self, realm: &str, mut f: impl FnMut(&SubKey, &Route)) {
        for (id, key) in &self.by_id {
            if &*key.realm == realm {
                if let Some(route) = self.get(key) {
                    debug_assert_eq!(route.subscription, *id);
                    f(key, route);
                }
            }
        }
    }

    /// Number of distinct subscription keys (for tests and metrics).
    pub fn len(&self) -> usize {
        self.realms
            .values()
            .map(|r| {
                r.exact.len() + r.prefix.len() + r.wildcard.len() + r.filter.len() + r.shared.len() + r.filtered.len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.realms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, policy: MatchPolicy) -> SubKey {
        SubKey { realm: "r".into(), topic: topic.into(), policy, share: None, filter: None }
    }

    fn matches(t: &TopicTable, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        t.for_each_match("r", topic, |_, r| out.push(r.subscription));
        out.sort();
        out
    }

    #[test]
    fn exact_prefix_wildcard() {
        let mut t = TopicTable::default();
        t.add(&key("a.b.c", MatchPolicy::Exact), 1, 0, 0);
        t.add(&key("a.b", MatchPolicy::Prefix), 2, 0, 1);
        t.add(&key("a..c", MatchPolicy::Wildcard), 3, 0, 0);
        t.add(&key("a..c", MatchPolicy::Wildcard), 3, 0, 1);
        assert_eq!(t.by_id(3).map(|(k, r)| (k.topic.as_str(), r.workers.len())), Some(("a..c", 2)));
        assert_eq!(t.get(&key("a.b", MatchPolicy::Prefix)).map(|r| r.subscription), Some(2));
        assert_eq!(matches(&t, "a.b.c"), vec![1, 2, 3]);
        assert_eq!(matches(&t, "a.x.c"), vec![3]);
        assert_eq!(matches(&t, "a.bc"), vec![2]);
        assert_eq!(matches(&t, "a.x.c.d"), Vec::<u64>::new());
        let mut workers = Vec::new();
        t.for_each_match("r", "a.x.c", |_, r| workers = r.workers.clone());
        assert_eq!(workers, vec![0, 1]);
        assert!(matches(&TopicTable::default(), "a.b.c").is_empty());
    }

    #[test]
    fn wildcard_patterns_without_tries() {
        use super::matches as m;
        assert!(m(MatchPolicy::Wildcard, "a..c", "a.b.c"));
        assert!(m(MatchPolicy::Wildcard, "..", "x.y.z"));
        assert!(!m(MatchPolicy::Wildcard, "a..c", "a.b.c.d"));
        assert!(!m(MatchPolicy::Wildcard, "a..c", "a.b"));
        assert!(!m(MatchPolicy::Wildcard, "a..c", "a.b.d"));
        assert!(m(MatchPolicy::Wildcard, "", "x") && !m(MatchPolicy::Wildcard, "", "x.y"));
    }

    #[test]
    fn remove_cleans_up() {
        let mut t = TopicTable::default();
        let k = key("a", MatchPolicy::Exact);
        t.add(&k, 7, 0, 0);
        t.add(&k, 7, 0, 2);
        t.remove(&k, 7, 0);
        assert_eq!(matches(&t, "a"), vec![7]);
        t.remove(&k, 7, 2);
        assert!(t.is_empty() && t.by_id(7).is_none());
        // A stale remove of an old ID does not touch a new route.
        t.add(&k, 9, 0, 1);
        t.remove(&k, 7, 1);
        assert_eq!(matches(&t, "a"), vec![9]);
        assert_eq!(t.len(), 1);
    }
}
