//! MQTT topic names and filters <-> the core's topic form (WAMP's).
//!
//! The core keeps topics in WAMP form, components separated by `.`. An MQTT
//! topic is mapped by swapping `/` and `.`: `a/b/c` <-> `a.b.c`, and a dot
//! inside an MQTT level becomes a slash inside a WAMP component
//! (`v1.2/x` <-> `v1/2.x`). The swap is its own inverse, so every MQTT topic
//! survives the round trip exactly, and MQTT-only users never see the
//! mapping.
//!
//! Filters: a filter without wildcards is an exact key (shared with WAMP
//! `match=exact` subscribers of the same topic); one with `+` or `#` is kept
//! verbatim (mapped) under `MatchPolicy::Filter`, whose matcher
//! (`filter_matches`) implements MQTT's rules, including `$` topics.

use crate::router::MatchPolicy;

/// Swaps `/` and `.` (both directions: the map is an involution).
pub fn swap(topic: &str) -> String {
    swap_owned(topic.to_owned())
}

/// `swap` in place, for a topic the caller owns (no allocation).
pub fn swap_owned(topic: String) -> String {
    let mut bytes = topic.into_bytes();
    for b in &mut bytes {
        match *b {
            b'/' => *b = b'.',
            b'.' => *b = b'/',
            _ => {}
        }
    }
    // Both are ASCII, which never occurs inside a multi-byte UTF-8 sequence.
    String::from_utf8(bytes).expect("swapping two ASCII bytes keeps UTF-8")
}

/// An MQTT SUBSCRIBE filter, checked and mapped to a core key.
#[derive(Debug, PartialEq, Eq)]
pub struct Filter {
    /// `Some(group)` for `$share/group/filter`.
    pub share: Option<String>,
    /// The core topic or pattern.
    pub topic: String,
    pub policy: MatchPolicy,
}

/// Checks a filter (MQTT 4.7.1): `#` only as the last level and alone in
/// it, `+` alone in its level, no U+0000, not empty.
pub fn parse_filter(filter: &str) -> Result<Filter, &'static str> {
    let (share, rest) = match filter.strip_prefix("$share/") {
        Some(rest) => {
            let Some((group, f)) = rest.split_once('/') else { return Err("shared subscription without a filter") };
            if group.is_empty() || group.contains(['+', '#']) {
                return Err("invalid share name");
            }
            (Some(group.to_owned()), f)
        }
        None => (None, filter),
    };
    if rest.is_empty() {
        return Err("empty topic filter");
    }
    if rest.contains('\0') {
        return Err("topic filter holds U+0000");
    }
    let levels: Vec<&str> = rest.split('/').collect();
    let mut wild = false;
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') {
            if *level != "#" || i + 1 != levels.len() {
                return Err("'#' must be the last level, alone");
            }
            wild = true;
        } else if level.contains('+') {
            if *level != "+" {
                return Err("'+' must be alone in its level");
            }
            wild = true;
        }
    }
    let policy = if wild { MatchPolicy::Filter } else { MatchPolicy::Exact };
    Ok(Filter { share, topic: swap(rest), policy })
}

/// Whether a core-form MQTT pattern (`+` one level, a last `#` this level
/// and below) matches a core topic. A leading wildcard does not match a
/// topic starting with `$`.
pub fn filter_matches(parts: &[String], topic: &str) -> bool {
    let dollar = topic.starts_with('$');
    let mut levels = topic.split('.');
    for (i, p) in parts.iter().enumerate() {
        if p == "#" {
            return !(i == 0 && dollar);
        }
        let Some(level) = levels.next() else { return false };
        if p == "+" {
            if i == 0 && dollar {
                return false;
            }
        } else if p != level {
            return false;
        }
    }
    levels.next().is_none()
}

/// The components of a core-form filter, for `filter_matches`.
pub fn filter_parts(pattern: &str) -> Vec<String> {
    pattern.split('.').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        let f = parse_filter(filter).unwrap();
        match f.policy {
            MatchPolicy::Exact => f.topic == swap(topic),
            _ => filter_matches(&filter_parts(&f.topic), &swap(topic)),
        }
    }

    #[test]
    fn swap_round_trips() {
        assert_eq!(swap("a/b/c"), "a.b.c");
        assert_eq!(swap("v1.2/x"), "v1/2.x");
        assert_eq!(swap(&swap("/a//b.c/")), "/a//b.c/");
        assert_eq!(swap("é.ü/ß"), "é/ü.ß");
    }

    #[test]
    fn mqtt_matching_rules() {
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b/c"));
        assert!(m("#", "a/b"));
        assert!(!m("#", "$SYS/x"));
        assert!(!m("+/x", "$SYS/x"));
        assert!(m("$SYS/#", "$SYS/x"));
        assert!(m("a/+/c", "a/b/c"));
        assert!(m("a/+/c", "a//c"));
        assert!(!m("a/+/c", "a/b/c/d"));
        assert!(m("+", "a"));
        assert!(!m("+", "a/b"));
        assert!(m("/+", "/TopicA"));
        assert!(m("+/+", "/TopicA"));
        assert!(m("a.b/+", "a.b/c"));
        assert!(!m("a/+", "a.b/c"));
        assert!(m("TopicA/#", "TopicA/B"));
        assert!(m("a/b", "a/b"));
    }

    #[test]
    fn invalid_filters() {
        for bad in ["", "a/#/b", "a#", "a/b+", "#/", "$share/g", "$share//a", "a\0"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
        let f = parse_filter("$share/g1/a/+").unwrap();
        assert_eq!((f.share.as_deref(), f.topic.as_str(), f.policy), (Some("g1"), "a.+", MatchPolicy::Filter));
    }
}
