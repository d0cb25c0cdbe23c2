//! A component trie of subscription patterns, so that matching a topic
//! costs its number of components (times the wildcard branches taken), not
//! the number of patterns.
//!
//! Patterns are given as components: `Part::Lit` for a literal component,
//! `Part::One` for any one component (WAMP's empty wildcard component, MQTT's
//! `+`), `Part::Rest` as the last part for this component and everything
//! below, or nothing below (MQTT's `#`: `a/#` matches `a` and `a/b/c`).
//! With `dollar_rule`, a pattern starting with `One` or `Rest` does not match
//! a topic whose first component starts with `$` (MQTT 4.7.2), nor one in
//! the router's `wamp.` namespace (its meta events).

use super::topics::Route;
use ahash::AHashMap;

/// What a trie holds at the end of a pattern. A slot that is `vacant` is
/// removed (and the branch pruned) by `drop_if_empty`.
pub trait Slot: Default {
    fn vacant(&self) -> bool;
}

impl Slot for Route {
    fn vacant(&self) -> bool {
        self.workers.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Lit(&'a str),
    One,
    Rest,
}

#[derive(Debug)]
struct Node<T> {
    children: AHashMap<String, Node<T>>,
    one: Option<Box<Node<T>>>,
    /// A pattern ending in `Rest` here.
    rest: Option<T>,
    /// A pattern ending here.
    end: Option<T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node { children: AHashMap::new(), one: None, rest: None, end: None }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.one.is_none() && self.rest.is_none() && self.end.is_none()
    }
}

#[derive(Debug)]
pub struct Trie<T = Route> {
    root: Node<T>,
    len: usize,
    dollar_rule: bool,
}

impl<T: Slot> Default for Trie<T> {
    fn default() -> Self {
        Trie::new(false)
    }
}

impl<T: Slot> Trie<T> {
    pub fn new(dollar_rule: bool) -> Trie<T> {
        Trie { root: Node::default(), len: 0, dollar_rule }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of a pattern, created empty if `create`.
    pub fn route_mut(&mut self, parts: &[Part], create: bool) -> Option<&mut T> {
        let mut node = &mut self.root;
        for (i, part) in parts.iter().enumerate() {
            node = match *part {
                Part::Lit(c) => {
                    if !node.children.contains_key(c) {
                        if !create {
                            return None;
                        }
                        node.children.insert(c.to_owned(), Node::default());
                    }
                    node.children.get_mut(c).expect("present")
                }
                Part::One => {
                    if node.one.is_none() && !create {
                        return None;
                    }
                    node.one.get_or_insert_with(Default::default)
                }
                Part::Rest => {
                    debug_assert_eq!(i + 1, parts.len(), "Rest is last");
                    if node.rest.is_none() {
                        if !create {
                            return None;
                        }
                        self.len += 1;
                        node.rest = Some(T::default());
                    }
                    return node.rest.as_mut();
                }
            };
        }
        if node.end.is_none() {
            if !create {
                return None;
            }
            self.len += 1;
            node.end = Some(T::default());
        }
        node.end.as_mut()
    }

    /// The slot of a pattern, if it is there.
    pub fn get(&self, parts: &[Part]) -> Option<&T> {
        let mut node = &self.root;
        for (i, part) in parts.iter().enumerate() {
            node = match *part {
                Part::Lit(c) => node.children.get(c)?,
                Part::One => node.one.as_deref()?,
                Part::Rest => {
                    debug_assert_eq!(i + 1, parts.len(), "Rest is last");
                    return node.rest.as_ref();
                }
            };
        }
        node.end.as_ref()
    }

    /// Removes the pattern if its slot is vacant, and prunes.
    pub fn drop_if_empty(&mut self, parts: &[Part]) {
        if prune(&mut self.root, parts) {
            self.len -= 1;
        }
    }

    /// Calls `f` for every pattern matching `topic` (components split on `.`).
    pub fn for_each_match<'a>(&'a self, topic: &str, f: &mut impl FnMut(&'a T)) {
        if self.len == 0 {
            return;
        }
        let dollar = self.dollar_rule && (topic.starts_with('$') || super::is_meta(topic));
        walk(&self.root, Some(topic), true, dollar, f);
    }

    /// The most specific pattern (without `Rest`) matching `topic`: at the first component where two matching patterns
    /// differ, the one with a literal there wins over the one with a
    /// wildcard (WAMP's rule for pattern-based registrations: the longest
    /// run of fixed components before each wildcard). A depth-first walk
    /// that tries the literal child before the wildcard child finds it first.
    pub fn best_match(&self, topic: &str) -> Option<&T> {
        if self.len == 0 {
            return None;
        }
        best(&self.root, Some(topic))
    }

    /// Every slot, in no particular order.
    pub fn for_each<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        fn visit<'a, T>(node: &'a Node<T>, f: &mut impl FnMut(&'a T)) {
            node.end.iter().chain(node.rest.iter()).for_each(&mut *f);
            node.children.values().for_each(|c| visit(c, f));
            if let Some(one) = &node.one {
                visit(one, f);
            }
        }
        visit(&self.root, f)
    }
}

fn best<'a, T>(node: &'a Node<T>, rest: Option<&str>) -> Option<&'a T> {
    let Some(rest) = rest else { return node.end.as_ref() };
    let (component, after) = match rest.find('.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    node.children
        .get(component)
        .and_then(|child| best(child, after))
        .or_else(|| node.one.as_deref().and_then(|one| best(one, after)))
}

/// Removes a vacant slot at the end of `parts`; true if one was removed.
fn prune<T: Slot>(node: &mut Node<T>, parts: &[Part]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        if node.end.as_ref().is_some_and(T::vacant) {
            node.end = None;
            return true;
        }
        return false;
    };
    match *first {
        Part::Rest => {
            if node.rest.as_ref().is_some_and(T::vacant) {
                node.rest = None;
                return true;
            }
            false
        }
        Part::One => {
            let Some(child) = node.one.as_deref_mut() else { return false };
            let removed = prune(child, rest);
            if child.is_empty() {
                node.one = None;
            }
            removed
        }
        Part::Lit(c) => {
            let Some(child) = node.children.get_mut(c) else { return false };
            let removed = prune(child, rest);
            if child.is_empty() {
                node.children.remove(c);
            }
            removed
        }
    }
}

/// `rest` is what is left of the topic: `None` once every component is used.
fn walk<'a, T>(node: &'a Node<T>, rest: Option<&str>, first: bool, dollar: bool, f: &mut impl FnMut(&'a T)) {
    let wild_ok = !(first && dollar);
    if let (Some(r), true) = (&node.rest, wild_ok) {
        f(r);
    }
    let Some(rest) = rest else {
        if let Some(r) = &node.end {
            f(r);
        }
        return;
    };
    let (component, after) = match rest.find('.') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(component) {
        walk(child, after, false, dollar, f);
    }
    if let (Some(one), true) = (&node.one, wild_ok) {
        walk(one, after, false, dollar, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> Vec<Part<'_>> {
        p.split('.')
            .map(|c| match c {
                "+" => Part::One,
                "#" => Part::Rest,
                c => Part::Lit(c),
            })
            .collect()
    }

    fn add(t: &mut Trie, p: &str, id: u64) {
        let r = t.route_mut(&parts(p), true).unwrap();
        r.subscription = id;
        r.workers = vec![0];
    }

    fn hits(t: &Trie, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        t.for_each_match(topic, &mut |r| out.push(r.subscription));
        out.sort();
        out
    }

    #[test]
    fn matches_like_mqtt() {
        let mut t = Trie::new(true);
        for (i, p) in ["a.b", "a.+", "a.#", "#", "+.b", "a.+.c", "$SYS.#"].iter().enumerate() {
            add(&mut t, p, i as u64 + 1);
        }
        assert_eq!(hits(&t, "a.b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(hits(&t, "a"), vec![3, 4]);
        assert_eq!(hits(&t, "a.x.c"), vec![3, 4, 6]);
        assert_eq!(hits(&t, "$SYS.x"), vec![7]);
        assert_eq!(hits(&t, "$SYS.b"), vec![7]);
        assert_eq!(hits(&t, ".b"), vec![4, 5]);
        assert_eq!(hits(&t, "wamp.b"), Vec::<u64>::new());
        assert_eq!(hits(&t, "wampx.b"), vec![4, 5]);
        assert_eq!(t.len(), 7);
    }

    #[derive(Default, Debug, PartialEq)]
    struct Id(u64);

    impl Slot for Id {
        fn vacant(&self) -> bool {
            self.0 == 0
        }
    }

    fn wild(p: &str) -> Vec<Part<'_>> {
        p.split('.').map(|c| if c.is_empty() { Part::One } else { Part::Lit(c) }).collect()
    }

    /// The spec's examples for pattern-based registrations.
    #[test]
    fn best_match_prefers_longer_fixed_runs() {
        let mut t: Trie<Id> = Trie::new(false);
        for (i, p) in ["a1.b2..d4.e5", "a1.b2.c33..e5", "a1.b2..d4.e5..g7", "a1.b2..d4..f6.g7"].iter().enumerate() {
            t.route_mut(&wild(p), true).unwrap().0 = i as u64 + 4;
        }
        let best = |topic: &str| t.best_match(topic).map(|i| i.0);
        assert_eq!(best("a1.b2.c55.d4.e5"), Some(4));
        assert_eq!(best("a1.b2.c33.d4.e5"), Some(5));
        assert_eq!(best("a1.b2.c88.d4.e5.f6.g7"), Some(6));
        assert_eq!(best("a1.b2.c88.d4.e6.f6.g7"), Some(7));
        assert_eq!(best("a2.b2.c2.d2.e2"), None);
        assert_eq!(best("a1.b2.c33.d4"), None);
        // A literal branch that fails deeper down falls back to the wildcard.
        assert_eq!(best("a1.b2.c33.d4.e6"), None);
        assert_eq!(best("a1.b2.c33.d4.e5"), Some(5));
        let mut all = Vec::new();
        t.for_each(&mut |i| all.push(i.0));
        all.sort();
        assert_eq!(all, vec![4, 5, 6, 7]);
    }

    #[test]
    fn removal_prunes() {
        let mut t = Trie::new(false);
        add(&mut t, "a.+.c", 1);
        add(&mut t, "a.#", 2);
        t.route_mut(&parts("a.+.c"), false).unwrap().workers.clear();
        t.drop_if_empty(&parts("a.+.c"));
        assert_eq!(hits(&t, "a.b.c"), vec![2]);
        assert!(t.route_mut(&parts("a.+.c"), false).is_none());
        t.route_mut(&parts("a.#"), false).unwrap().workers.clear();
        t.drop_if_empty(&parts("a.#"));
        assert!(t.is_empty() && t.root.is_empty());
        // Without the dollar rule, '$' topics are ordinary.
        add(&mut t, "+", 3);
        assert_eq!(hits(&t, "$x"), vec![3]);
    }
}
