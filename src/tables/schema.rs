//! A realm's table schema (`[[realm]] schema = "tables.json"`), in the
//! shape fox-wamp's README gives it: one object per table, by name.
//!
//! ```json
//! "invoice": {
//!     "type": "object",
//!     "properties": { "date": {"type": "string"}, "customer": {"type": "string"},
//!                     "amount": {"type": "string"} },
//!     "primary_key": ["date", "customer"],
//!     "propagate": { "detail": [{ "key": ["customer"], "fields": {"total": "amount"},
//!                                 "filter": {"type": "sale"} }] }
//! },
//! "detail": {
//!     "type": "aggregate",
//!     "properties": { "customer": {"type": "string"}, "total": {"type": "string"} },
//!     "primary_key": ["customer"],
//!     "sum": ["total"]
//! }
//! ```
//!
//! A table of any other `type` is a source table: its rows are published
//! (to `topic`, by default the table's name; under `match` prefix or
//! wildcard, to the topics it matches) and checked against the table
//! object read as a JSON Schema (less the keywords `primary_key`,
//! `propagate` and `topic`). An `aggregate` table's rows are made by the
//! engine from the rows propagated into it; its fields are aggregated by
//! `sum`, `count`, `min` and `max` (lists of field names). `propagate`
//! maps a table's rows into other tables: `key` names the fields that make
//! the target's primary key, `fields` maps target fields to this table's
//! fields, `filter` (a condition as for `when`) picks the rows that count.
//! An aggregate table may propagate further (chains); cycles are refused.

use crate::router::fold::field;
use crate::router::MatchPolicy;
use crate::value::{Dict, Value};
use ahash::AHashMap;
use std::path::Path;

/// How an aggregate table computes a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Sum,
    /// Rows that have the source field (a count field mapped by no
    /// propagation counts the rows).
    Count,
    Min,
    Max,
}

pub struct Propagation {
    pub target: usize,
    /// This table's fields whose values are the target's primary key.
    pub key: Vec<String>,
    /// (target field, this table's field).
    pub fields: Vec<(String, String)>,
    pub filter: Option<Value>,
}

pub struct Table {
    pub name: String,
    /// Source tables: where their rows are published, and the JSON Schema
    /// they are checked against. `None`: an aggregate table.
    pub source: Option<Source>,
    pub primary_key: Vec<String>,
    /// Aggregate tables: each aggregated field, in the schema's order.
    pub aggregates: Vec<(String, Agg)>,
    /// Fields declared `"type": "string"`: totals are written as decimal
    /// strings there (the README's `total`), as numbers elsewhere.
    pub string_fields: Vec<String>,
    pub propagate: Vec<Propagation>,
}

pub struct Source {
    /// The topic its rows are published to, under `policy` (`match`:
    /// exact by default, or prefix / wildcard: many topics, one table).
    pub topic: String,
    pub policy: MatchPolicy,
    validator: jsonschema::Validator,
}

/// Keywords of ours in a table object (not JSON Schema).
const OURS: &[&str] = &["primary_key", "propagate", "topic", "match", "sum", "count", "min", "max"];

pub struct Schema {
    pub tables: Vec<Table>,
    by_name: AHashMap<String, usize>,
    /// Source tables published to one exact topic, and the others (by
    /// pattern) in the order they are tried: as WAMP picks a registration,
    /// the longest prefix first, then the wildcards (by table name).
    by_topic: AHashMap<String, usize>,
    by_pattern: Vec<usize>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_list().entries(self.tables.iter().map(|t| &t.name)).finish()
    }
}

fn strings(v: Option<&serde_json::Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(|| format!("{what} must be a list of field names")))
            .collect(),
        Some(_) => Err(format!("{what} must be a list of field names")),
    }
}

impl Schema {
    /// Reads a schema file: JSON, or TOML if its name ends in `.toml`.
    pub fn load(path: &Path) -> Result<Schema, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let doc: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
            let t: toml::Value = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::to_value(t).map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        Schema::parse(&doc).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(doc: &serde_json::Value) -> Result<Schema, String> {
        let Some(tables) = doc.as_object() else { return Err("a schema is an object of tables by name".into()) };
        let by_name: AHashMap<String, usize> = tables.keys().enumerate().map(|(i, k)| (k.clone(), i)).collect();
        let mut out = Vec::with_capacity(tables.len());
        for (name, t) in tables {
            let bad = |e: String| format!("table '{name}': {e}");
            let Some(obj) = t.as_object() else { return Err(bad("must be an object".into())) };
            if name.is_empty() || !crate::wamp::uri::valid_uri(name, crate::wamp::uri::UriCheck::Loose) {
                return Err(bad("its name must be a URI".into()));
            }
            let primary_key = strings(obj.get("primary_key"), "primary_key").map_err(bad)?;
            if primary_key.is_empty() {
                return Err(bad("needs a primary_key".into()));
            }
            let aggregate = obj.get("type").and_then(|v| v.as_str()) == Some("aggregate");
            let mut aggregates = Vec::new();
            for (word, agg) in [("sum", Agg::Sum), ("count", Agg::Count), ("min", Agg::Min), ("max", Agg::Max)] {
                for f in strings(obj.get(word), word).map_err(bad)? {
                    if !aggregate {
                        return Err(bad(format!("'{word}' is for aggregate tables")));
                    }
                    if aggregates.iter().any(|(g, _)| *g == f) || primary_key.contains(&f) {
                        return Err(bad(format!("field '{f}' is aggregated twice, or is part of the key")));
                    }
                    aggregates.push((f, agg));
                }
            }
            let string_fields = obj
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| {
                    p.iter()
                        .filter(|(_, d)| d.get("type").and_then(|t| t.as_str()) == Some("string"))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            let source = if aggregate {
                if obj.contains_key("topic") {
                    return Err(bad("an aggregate table has no topic: its rows are the engine's".into()));
                }
                None
            } else {
                let policy = match obj.get("match").map(|m| m.as_str().and_then(MatchPolicy::parse)) {
                    None => MatchPolicy::Exact,
                    Some(Some(p)) if p != MatchPolicy::Filter => p,
                    Some(_) => return Err(bad("match must be exact, prefix or wildcard".into())),
                };
                let loose = crate::wamp::uri::UriCheck::Loose;
                let topic = match obj.get("topic") {
                    None => name.clone(),
                    Some(serde_json::Value::String(s)) if crate::wamp::uri::valid_pattern(s, policy, loose) => {
                        s.clone()
                    }
                    Some(_) => return Err(bad(format!("topic must be a URI pattern for match {}", policy.name()))),
                };
                let mut json_schema = t.clone();
                if let Some(o) = json_schema.as_object_mut() {
                    o.retain(|k, _| !OURS.contains(&k.as_str()));
                }
                let validator =
                    jsonschema::validator_for(&json_schema).map_err(|e| bad(format!("JSON Schema: {e}")))?;
                Some(Source { topic, policy, validator })
            };
            let mut propagate = Vec::new();
            if let Some(p) = obj.get("propagate") {
                let Some(p) = p.as_object() else { return Err(bad("propagate must be an object".into())) };
                for (target, rules) in p {
                    let &ti =
                        by_name.get(target).ok_or_else(|| bad(format!("propagates to an unknown table '{target}'")))?;
                    let rules = match rules {
                        serde_json::Value::Array(a) => a.clone(),
                        r @ serde_json::Value::Object(_) => vec![r.clone()],
                        _ => return Err(bad(format!("propagate.{target} must be a list of rules"))),
                    };
                    for r in rules {
                        let key = strings(r.get("key"), "key").map_err(bad)?;
                        let mut fields = Vec::new();
                        if let Some(f) = r.get("fields") {
                            let Some(f) = f.as_object() else { return Err(bad("fields must be an object".into())) };
                            for (to, from) in f {
                                let Some(from) = from.as_str() else {
                                    return Err(bad(format!("fields.{to} must name a field")));
                                };
                                fields.push((to.clone(), from.to_owned()));
                            }
                        }
                        let filter = match r.get("filter") {
                            None => None,
                            Some(f) => {
                                Some(serde_json::from_value::<Value>(f.clone()).map_err(|e| bad(e.to_string()))?)
                            }
                        };
                        propagate.push(Propagation { target: ti, key, fields, filter });
                    }
                }
            }
            out.push(Table { name: name.clone(), source, primary_key, aggregates, string_fields, propagate });
        }
        // Propagations fit their targets.
        for t in &out {
            for p in &t.propagate {
                let target = &out[p.target];
                let bad = |e: String| format!("table '{}' propagating to '{}': {e}", t.name, target.name);
                if target.source.is_some() {
                    return Err(bad("only aggregate tables take propagated rows".into()));
                }
                if p.key.len() != target.primary_key.len() {
                    return Err(bad(format!(
                        "key names {} fields for a primary key of {}",
                        p.key.len(),
                        target.primary_key.len()
                    )));
                }
                for (to, _) in &p.fields {
                    if !target.aggregates.iter().any(|(f, _)| f == to) {
                        return Err(bad(format!("field '{to}' is not aggregated there (sum, count, min or max)")));
                    }
                }
            }
        }
        let by_topic = out
            .iter()
            .enumerate()
            .filter(|(_, t)| t.source.as_ref().is_some_and(|s| s.policy == MatchPolicy::Exact))
            .filter_map(|(i, t)| Some((t.source.as_ref()?.topic.clone(), i)))
            .collect();
        let mut by_pattern: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].source.as_ref().is_some_and(|s| s.policy != MatchPolicy::Exact))
            .collect();
        by_pattern.sort_by_key(|&i| {
            let s = out[i].source.as_ref().expect("a source table");
            (s.policy == MatchPolicy::Wildcard, std::cmp::Reverse(s.topic.len()), out[i].name.clone())
        });
        let schema = Schema { by_topic, by_pattern, by_name, tables: out };
        if schema.by_topic.len() + schema.by_pattern.len()
            != schema.tables.iter().filter(|t| t.source.is_some()).count()
        {
            return Err("two source tables share a topic".into());
        }
        schema.check_acyclic()?;
        Ok(schema)
    }

    fn check_acyclic(&self) -> Result<(), String> {
        // 0: not seen, 1: on the path, 2: done.
        fn visit(s: &Schema, i: usize, state: &mut [u8]) -> Result<(), String> {
            match state[i] {
                1 => return Err(format!("tables propagate in a cycle through '{}'", s.tables[i].name)),
                2 => return Ok(()),
                _ => {}
            }
            state[i] = 1;
            for p in &s.tables[i].propagate {
                visit(s, p.target, state)?;
            }
            state[i] = 2;
            Ok(())
        }
        let mut state = vec![0u8; self.tables.len()];
        (0..self.tables.len()).try_for_each(|i| visit(self, i, &mut state))
    }

    /// The tables in an order where each comes after every table that
    /// propagates into it (the schema has no cycle).
    pub fn topological(&self) -> Vec<usize> {
        fn visit(s: &Schema, i: usize, seen: &mut [bool], out: &mut Vec<usize>) {
            if std::mem::replace(&mut seen[i], true) {
                return;
            }
            for p in &s.tables[i].propagate {
                visit(s, p.target, seen, out);
            }
            out.push(i);
        }
        let (mut seen, mut out) = (vec![false; self.tables.len()], Vec::new());
        for i in 0..self.tables.len() {
            visit(self, i, &mut seen, &mut out);
        }
        out.reverse();
        out
    }

    pub fn table(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The source table whose rows are published to `topic`.
    /// (A pattern never takes a table row's topic: `divert` asks
    /// `row_table` first.)
    pub fn source_for(&self, topic: &str) -> Option<usize> {
        if let Some(&t) = self.by_topic.get(topic) {
            return Some(t);
        }
        self.by_pattern.iter().copied().find(|&t| {
            let s = self.tables[t].source.as_ref().expect("a source table");
            crate::router::topics::matches(s.policy, &s.topic, topic)
        })
    }

    /// The table whose rows live under `topic` (`<table>.<key...>`), if any.
    pub fn row_table(&self, topic: &str) -> Option<usize> {
        self.tables.iter().position(|t| {
            topic.len() > t.name.len() && topic.starts_with(&t.name) && topic.as_bytes()[t.name.len()] == b'.'
        })
    }

    /// Checks a published row of source table `t`: its schema, its key, and
    /// that every value it propagates can be aggregated. The row's topic.
    pub fn check_row(&self, t: usize, row: &Value) -> Result<String, String> {
        let table = &self.tables[t];
        let source = table.source.as_ref().expect("a source table");
        let Value::Dict(dict) = row else { return Err(format!("a row of '{}' is an object", table.name)) };
        let json = serde_json::to_value(row).map_err(|e| e.to_string())?;
        if let Some(e) = source.validator.iter_errors(&json).next() {
            let at = e.instance_path().to_string();
            return Err(format!(
                "a row of '{}' does not meet its schema: {e}{}",
                table.name,
                if at.is_empty() { String::new() } else { format!(" (at {at})") }
            ));
        }
        let topic = self.row_topic(t, dict)?;
        for p in &table.propagate {
            if p.filter.as_ref().is_some_and(|f| !crate::router::keys::fits(f, Some(row))) {
                continue;
            }
            key_of(row, &p.key).map_err(|e| format!("propagating to '{}': {e}", self.tables[p.target].name))?;
            for (to, from) in &p.fields {
                let agg = self.tables[p.target].aggregates.iter().find(|(f, _)| f == to).map(|(_, a)| *a);
                if let (Some(Agg::Sum), Some(v)) = (agg, field(row, from)) {
                    if super::decimal::Decimal::from_value(v).is_none() {
                        return Err(format!(
                            "field '{from}' is summed into {}.{to}: {v:?} is not a number",
                            self.tables[p.target].name
                        ));
                    }
                }
            }
        }
        Ok(topic)
    }

    /// `<table>.<key value>...`, each value made a URI component.
    pub fn row_topic(&self, t: usize, row: &Dict) -> Result<String, String> {
        let table = &self.tables[t];
        let row_value = Value::Dict(row.clone());
        let key = key_of(&row_value, &table.primary_key)?;
        Ok(topic_of(&table.name, &key))
    }
}

/// The values of `fields` in `row` (each a string, number or boolean).
pub fn key_of(row: &Value, fields: &[String]) -> Result<Vec<Value>, String> {
    fields
        .iter()
        .map(|f| match field(row, f) {
            Some(v @ (Value::Str(_) | Value::UInt(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_))) => {
                Ok(v.clone())
            }
            Some(_) => Err(format!("key field '{f}' must be a string, a number or a boolean")),
            None => Err(format!("key field '{f}' is missing")),
        })
        .collect()
}

/// A row's topic: the table, then each key value as a URI component
/// (bytes other than letters, digits, `-` and `_` written `%XX`).
pub fn topic_of(table: &str, key: &[Value]) -> String {
    let mut t = table.to_owned();
    for v in key {
        t.push('.');
        let text = match v {
            Value::Str(s) => s.clone(),
            other => serde_json::to_string(other).unwrap_or_default(),
        };
        if text.is_empty() {
            t.push('%');
        }
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                t.push(b as char);
            } else {
                t.push_str(&format!("%{b:02X}"));
            }
        }
    }
    t
}
