//! WAMP URI rules (spec section "URIs"), checked without regexes.
//!
//! Loose: components are non-empty and contain no whitespace, `.` or `#`.
//! Strict: components are non-empty and made of `[0-9a-z_]`.
//! Wildcard patterns may have empty components; prefix patterns may end in an
//! empty component (`com.example.` prefix-matches `com.example.x`).

use crate::router::MatchPolicy;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UriCheck {
    #[default]
    Loose,
    Strict,
}

impl std::str::FromStr for UriCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "loose" => Ok(UriCheck::Loose),
            "strict" => Ok(UriCheck::Strict),
            _ => Err(format!("unknown URI check '{s}' (loose or strict)")),
        }
    }
}

fn component_ok(c: &str, check: UriCheck) -> bool {
    match check {
        UriCheck::Loose => !c.chars().any(|ch| ch.is_whitespace() || ch == '.' || ch == '#'),
        UriCheck::Strict => c.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_'),
    }
}

/// Whether a URI has at most `max` components. Every URI the router
/// matches is bounded so, and so are its tries and their (recursive) walks.
pub fn short_enough(uri: &str, max: usize) -> bool {
    uri.len() < max || uri.bytes().filter(|&b| b == b'.').count() < max
}

/// A concrete URI (topic to publish to, procedure to call or register).
pub fn valid_uri(uri: &str, check: UriCheck) -> bool {
    !uri.is_empty() && uri.split('.').all(|c| !c.is_empty() && component_ok(c, check))
}

/// A subscription topic under a match policy.
pub fn valid_pattern(uri: &str, policy: MatchPolicy, check: UriCheck) -> bool {
    match policy {
        MatchPolicy::Exact => valid_uri(uri, check),
        MatchPolicy::Prefix => {
            let parts: Vec<&str> = uri.split('.').collect();
            let last = parts.len() - 1;
            !uri.is_empty()
                && parts.iter().enumerate().all(|(i, c)| (i == last || !c.is_empty()) && component_ok(c, check))
        }
        MatchPolicy::Wildcard => !uri.is_empty() && uri.split('.').all(|c| component_ok(c, check)),
        // MQTT filters are not a WAMP match policy.
        MatchPolicy::Filter => false,
    }
}

/// Realm names are URIs; the `wamp.` namespace is reserved.
pub fn valid_realm(realm: &str, check: UriCheck) -> bool {
    valid_uri(realm, check) && !realm.starts_with("wamp.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_bound() {
        assert!(short_enough("a", 1) && !short_enough("a.b", 1));
        assert!(short_enough(&["x"; 256].join("."), 256));
        assert!(!short_enough(&["x"; 257].join("."), 256));
        assert!(!short_enough(&".".repeat(256), 256));
        assert!(short_enough(&".".repeat(255), 256));
    }
    use MatchPolicy::*;
    use UriCheck::*;

    #[test]
    fn loose_and_strict() {
        assert!(valid_uri("com.myapp.topic1", Strict));
        assert!(valid_uri("com.MyApp.Topic-1", Loose));
        assert!(!valid_uri("com.MyApp.topic", Strict));
        for bad in ["", "a..b", ".a", "a.", "a b", "a#b", "a.\tb"] {
            assert!(!valid_uri(bad, Loose), "{bad:?}");
        }
    }

    #[test]
    fn patterns() {
        assert!(valid_pattern("com..topic", Wildcard, Strict));
        assert!(valid_pattern("..", Wildcard, Loose));
        assert!(!valid_pattern("com..topic", Exact, Loose));
        assert!(valid_pattern("com.myapp.", Prefix, Loose));
        assert!(valid_pattern("com.myapp", Prefix, Loose));
        assert!(!valid_pattern("com..myapp", Prefix, Loose));
        assert!(!valid_pattern("a b.", Prefix, Loose));
    }

    #[test]
    fn realms() {
        assert!(valid_realm("realm1", Loose));
        assert!(!valid_realm("wamp.realm", Loose));
        assert!(!valid_realm("bad realm", Loose));
    }
}
