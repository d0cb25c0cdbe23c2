//! A component trie of subscription patterns, so that matching a topic
//! costs its number of components (times the wildcard branches taken), not
//! the number of patterns.
//!
//! Patterns are given as components: `Part::Lit` for a literal component,
//! `Part::One` for any one component (WAMP's empty wildcard component, MQTT's
//! `+`), `Part::Rest` as the last part for this component and everything
//! below, or nothing below (MQTT's `#`: `a/#` matches `a` and `a/b/c`).
//! With `dollar_rule`, a pattern starting with `One` or `Rest` does not match
//! a topic whose first component starts with `$` (MQTT 4.7.2).

use super::topics::Route;
use ahash::AHashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Lit(&'a str),
    One,
    Rest,
}

#[derive(Debug, Default)]
struct Node {
    children: AHashMap<String, Node>,
    one: Option<Box<Node>>,
    /// A pattern ending in `Rest` here.
    rest: Option<Route>,
    /// A pattern ending here.
    end: Option<Route>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.one.is_none() && self.rest.is_none() && self.end.is_none()
    }
}

#[derive(Debug, Default)]
pub struct Trie {
    root: Node,
    len: usize,
    dollar_rule: bool,
}

impl Trie {
    pub fn new(dollar_rule: bool) -> Trie {
        Trie { root: Node::default(), len: 0, dollar_rule }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The route of a pattern, created empty if `create`.
    pub fn route_mut(&mut self, parts: &[Part], create: bool) -> Option<&mut Route> {
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
                        node.rest = Some(Route { subscription: 0, workers: Vec::new() });
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
            node.end = Some(Route { subscription: 0, workers: Vec::new() });
        }
        node.end.as_mut()
    }

    /// Removes the pattern if its route has no workers left, and prunes.
    pub fn drop_if_empty(&mut self, parts: &[Part]) {
        if prune(&mut self.root, parts) {
            self.len -= 1;
        }
    }

    /// Calls `f` for every pattern matching `topic` (components split on `.`).
    pub fn for_each_match<'a>(&'a self, topic: &str, f: &mut impl FnMut(&'a Route)) {
        if self.len == 0 {
            return;
        }
        let dollar = self.dollar_rule && topic.starts_with('$');
        walk(&self.root, Some(topic), true, dollar, f);
    }
}

/// Removes an emptied route at the end of `parts`; true if one was removed.
fn prune(node: &mut Node, parts: &[Part]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        if node.end.as_ref().is_some_and(|r| r.workers.is_empty()) {
            node.end = None;
            return true;
        }
        return false;
    };
    match *first {
        Part::Rest => {
            if node.rest.as_ref().is_some_and(|r| r.workers.is_empty()) {
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
fn walk<'a>(node: &'a Node, rest: Option<&str>, first: bool, dollar: bool, f: &mut impl FnMut(&'a Route)) {
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
        assert_eq!(t.len(), 7);
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
