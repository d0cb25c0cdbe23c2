//! The aggregate engine's arithmetic, pure: what a row contributes to the
//! tables it propagates to, and an aggregate row's state as contributions
//! come and go. A replaced row takes its old contribution back before its
//! new one counts, so totals are those of the current rows only.

use super::decimal::Decimal;
use super::schema::{key_of, topic_of, Agg, Schema};
use crate::router::fold::field;
use crate::value::{Dict, Value};
use std::collections::BTreeMap;

/// One row's share in one aggregate row: the target table, its key (and
/// topic), and the values of the target's fields it maps.
#[derive(Clone, Debug, PartialEq)]
pub struct Contribution {
    pub table: usize,
    pub key: Vec<Value>,
    pub topic: String,
    pub values: Dict,
}

/// What `row` of table `t` contributes to each table it propagates to (a
/// row a rule's filter leaves out contributes nothing there). A rule whose
/// key the row lacks is skipped (`check_row` refused such source rows).
pub fn contributions(schema: &Schema, t: usize, row: &Value) -> Vec<Contribution> {
    let mut out = Vec::new();
    for p in &schema.tables[t].propagate {
        if p.filter.as_ref().is_some_and(|f| !crate::router::keys::fits(f, Some(row))) {
            continue;
        }
        let Ok(key) = key_of(row, &p.key) else { continue };
        let values = p.fields.iter().filter_map(|(to, from)| Some((to.clone(), field(row, from)?.clone()))).collect();
        let target = &schema.tables[p.target];
        out.push(Contribution { table: p.target, topic: topic_of(&target.name, &key), key, values });
    }
    out
}

/// A min or max field's values, counted (so that one taken back is gone
/// only when no row has it any more).
type Values = BTreeMap<Ordered, u32>;

/// Values min and max order: numbers (by value) before strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ordered {
    Num(Decimal),
    Str(String),
}

impl Ordered {
    fn of(v: &Value) -> Option<Ordered> {
        match v {
            Value::Str(s) => Some(Ordered::Str(s.clone())),
            v => Decimal::from_value(v).map(Ordered::Num),
        }
    }
}

#[derive(Clone, Debug)]
enum State {
    Sum(Decimal),
    Count(u64),
    Extreme(Values),
}

/// One aggregate row: how many rows contribute, and each field's state.
#[derive(Clone, Debug, Default)]
pub struct AggRow {
    rows: u64,
    fields: Vec<State>,
}

impl AggRow {
    fn init(&mut self, schema: &Schema, t: usize) {
        if self.fields.is_empty() {
            self.fields = schema.tables[t]
                .aggregates
                .iter()
                .map(|(_, a)| match a {
                    Agg::Sum => State::Sum(Decimal::ZERO),
                    Agg::Count => State::Count(0),
                    Agg::Min | Agg::Max => State::Extreme(Values::new()),
                })
                .collect();
        }
    }

    /// Adds (`sign` 1) or takes back (-1) a contribution. `Err`: a sum that
    /// would not fit (the row is unchanged).
    pub fn apply(&mut self, schema: &Schema, c: &Contribution, sign: i8) -> Result<(), String> {
        self.init(schema, c.table);
        let table = &schema.tables[c.table];
        let mut next = self.fields.clone();
        for ((name, agg), state) in table.aggregates.iter().zip(next.iter_mut()) {
            let v = c.values.iter().find(|(k, _)| k == name).map(|(_, v)| v);
            match (state, agg) {
                (State::Sum(total), _) => {
                    let Some(x) = v.and_then(Decimal::from_value) else { continue };
                    *total = if sign > 0 { total.checked_add(x) } else { total.checked_sub(x) }
                        .ok_or_else(|| format!("{}.{name}: the sum does not fit", table.name))?;
                }
                (State::Count(n), _) => {
                    // Unmapped: counts rows; mapped: rows that have the field.
                    let mapped = schema
                        .tables
                        .iter()
                        .flat_map(|t| &t.propagate)
                        .any(|p| p.target == c.table && p.fields.iter().any(|(to, _)| to == name));
                    if !mapped || v.is_some() {
                        *n = if sign > 0 { *n + 1 } else { n.saturating_sub(1) };
                    }
                }
                (State::Extreme(values), _) => {
                    let Some(x) = v.and_then(Ordered::of) else { continue };
                    if sign > 0 {
                        *values.entry(x).or_default() += 1;
                    } else if let Some(k) = values.get_mut(&x) {
                        *k -= 1;
                        if *k == 0 {
                            values.remove(&x);
                        }
                    }
                }
            }
        }
        self.fields = next;
        self.rows = if sign > 0 { self.rows + 1 } else { self.rows.saturating_sub(1) };
        Ok(())
    }

    /// The row as subscribers see it: its key fields and each aggregated
    /// field; `None` once no row contributes.
    pub fn row(&self, schema: &Schema, t: usize, key: &[Value]) -> Option<Value> {
        if self.rows == 0 {
            return None;
        }
        let table = &schema.tables[t];
        let mut d: Dict = table.primary_key.iter().cloned().zip(key.iter().cloned()).collect();
        for ((name, agg), state) in table.aggregates.iter().zip(&self.fields) {
            let as_string = table.string_fields.contains(name);
            let number = |x: Decimal| if as_string { Value::Str(x.to_string()) } else { x.to_number() };
            let v = match state {
                State::Sum(x) => number(*x),
                State::Count(n) => Value::UInt(*n),
                State::Extreme(values) => {
                    let pick = if *agg == Agg::Min { values.keys().next() } else { values.keys().next_back() };
                    match pick {
                        Some(Ordered::Num(x)) => number(*x),
                        Some(Ordered::Str(s)) => Value::Str(s.clone()),
                        None => Value::Null,
                    }
                }
            };
            d.push((name.clone(), v));
        }
        Some(Value::Dict(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The README's example, as written (the interop suite's schema file).
    pub fn readme() -> Schema {
        let text = include_str!("../../tests/interop/tables.json");
        Schema::parse(&serde_json::from_str(text).unwrap()).expect("the README's schema")
    }

    fn v(j: serde_json::Value) -> Value {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn the_readme_example_sums_amounts_per_customer_and_replacements_take_the_difference() {
        let s = readme();
        let invoice = s.table("invoice").unwrap();
        let row = v(json!({"date": "2024-01-05", "customer": "acme", "amount": "12.50", "type": "sale"}));
        assert_eq!(s.check_row(invoice, &row), Ok("invoice.2024-01-05.acme".to_owned()));
        let c = contributions(&s, invoice, &row);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].topic, "detail.acme");
        let mut detail = AggRow::default();
        detail.apply(&s, &c[0], 1).unwrap();
        let second = v(json!({"date": "2024-01-06", "customer": "acme", "amount": "7.25", "type": "sale"}));
        detail.apply(&s, &contributions(&s, invoice, &second)[0], 1).unwrap();
        let t = s.table("detail").unwrap();
        assert_eq!(detail.row(&s, t, &c[0].key), Some(v(json!({"customer": "acme", "total": "19.75"}))));
        // The first invoice replaced: its old amount goes, the new one counts.
        let replaced = v(json!({"date": "2024-01-05", "customer": "acme", "amount": "10.00", "type": "sale"}));
        detail.apply(&s, &c[0], -1).unwrap();
        detail.apply(&s, &contributions(&s, invoice, &replaced)[0], 1).unwrap();
        assert_eq!(detail.row(&s, t, &c[0].key), Some(v(json!({"customer": "acme", "total": "17.25"}))));
        // A refund is not a sale: the filter leaves it out.
        let refund = v(json!({"date": "2024-01-07", "customer": "acme", "amount": "3", "type": "refund"}));
        assert!(contributions(&s, invoice, &refund).is_empty());
        // Rows taken back to none: the aggregate row is gone.
        detail.apply(&s, &contributions(&s, invoice, &replaced)[0], -1).unwrap();
        detail.apply(&s, &contributions(&s, invoice, &second)[0], -1).unwrap();
        assert_eq!(detail.row(&s, t, &c[0].key), None);
    }

    #[test]
    fn rows_are_checked_against_the_schema_key_and_sums() {
        let s = readme();
        let invoice = s.table("invoice").unwrap();
        let err = |j| s.check_row(invoice, &v(j)).unwrap_err();
        assert!(err(json!({"date": "d", "customer": "c", "amount": 12})).contains("does not meet its schema"));
        assert!(err(json!({"date": "d", "amount": "1"})).contains("key field 'customer' is missing"));
        assert!(err(json!({"date": "d", "customer": "c", "amount": "lots", "type": "sale"})).contains("not a number"));
        assert!(err(json!(["not", "an", "object"])).contains("is an object"));
        // Not a sale: not summed, so any string amount is fine.
        assert!(s.check_row(invoice, &v(json!({"date": "d", "customer": "c", "amount": "n/a"}))).is_ok());
        assert_eq!(topic_of("t", &[v(json!("a.b c")), v(json!(7))]), "t.a%2Eb%20c.7");
    }

    #[test]
    fn a_source_table_may_take_the_topics_a_pattern_matches() {
        let s = Schema::parse(&json!({
            "reading": { "type": "object", "primary_key": ["id"], "topic": "plant.", "match": "prefix" },
            "alarm": { "type": "object", "primary_key": ["id"], "topic": "plant..alarm", "match": "wildcard" },
            "exact": { "type": "object", "primary_key": ["id"] }
        }))
        .unwrap();
        let (reading, alarm, exact) = (s.table("reading"), s.table("alarm"), s.table("exact"));
        // An exact topic first, then the longest prefix, then wildcards.
        assert_eq!(s.source_for("exact"), exact);
        assert_eq!(s.source_for("plant.a.alarm"), reading);
        assert_eq!(s.source_for("plant.a"), reading);
        assert_eq!(s.source_for("elsewhere"), None);
        assert!(alarm.is_some());
        let bad = json!({"t": {"type": "object", "primary_key": ["id"], "topic": "a..b", "match": "exact"}});
        assert!(Schema::parse(&bad).unwrap_err().contains("URI pattern"));
        let bad = json!({"t": {"type": "object", "primary_key": ["id"], "match": "fuzzy"}});
        assert!(Schema::parse(&bad).unwrap_err().contains("match must be"));
    }

    #[test]
    fn min_max_and_count_undo_exactly_and_chains_and_cycles() {
        let s = Schema::parse(&json!({
            "reading": {
                "type": "object",
                "primary_key": ["sensor", "at"],
                "propagate": {
                    "sensor_stats": { "key": ["sensor"], "fields": {"low": "t", "high": "t", "n": "t"} }
                }
            },
            "sensor_stats": {
                "type": "aggregate",
                "primary_key": ["sensor"],
                "min": ["low"], "max": ["high"], "count": ["n", "rows"],
                "propagate": { "all": { "key": ["kind"], "fields": {"top": "high"} } }
            },
            "all": { "type": "aggregate", "primary_key": ["kind"], "max": ["top"] }
        }))
        .unwrap();
        let reading = s.table("reading").unwrap();
        let stats = s.table("sensor_stats").unwrap();
        let mut row = AggRow::default();
        let rows: Vec<Value> =
            [3, 9, 9, 1].iter().enumerate().map(|(i, t)| v(json!({"sensor": "s1", "at": i, "t": t}))).collect();
        let c: Vec<Contribution> = rows.iter().map(|r| contributions(&s, reading, r).remove(0)).collect();
        for x in &c {
            row.apply(&s, x, 1).unwrap();
        }
        let no_t = v(json!({"sensor": "s1", "at": 9}));
        row.apply(&s, &contributions(&s, reading, &no_t)[0], 1).unwrap();
        let key = vec![v(json!("s1"))];
        let as_json = |r: Option<Value>| serde_json::to_value(r).unwrap();
        assert_eq!(as_json(row.row(&s, stats, &key)), json!({"sensor": "s1", "low": 1, "high": 9, "n": 4, "rows": 5}));
        row.apply(&s, &c[1], -1).unwrap();
        row.apply(&s, &c[3], -1).unwrap();
        assert_eq!(as_json(row.row(&s, stats, &key)), json!({"sensor": "s1", "low": 3, "high": 9, "n": 2, "rows": 3}));
        // sensor_stats rows have no `kind`: they propagate nothing further.
        assert!(contributions(&s, stats, &row.row(&s, stats, &key).unwrap()).is_empty());
        let cyclic = json!({
            "a": {"type": "aggregate", "primary_key": ["k"], "sum": ["x"], "propagate": {"b": {"key": ["k"], "fields": {"x": "x"}}}},
            "b": {"type": "aggregate", "primary_key": ["k"], "sum": ["x"], "propagate": {"a": {"key": ["k"], "fields": {"x": "x"}}}}
        });
        assert!(Schema::parse(&cyclic).unwrap_err().contains("cycle"));
        let unmapped = json!({
            "a": {"type": "object", "primary_key": ["k"], "propagate": {"b": {"key": ["k"], "fields": {"y": "x"}}}},
            "b": {"type": "aggregate", "primary_key": ["k"], "sum": ["x"]}
        });
        assert!(Schema::parse(&unmapped).unwrap_err().contains("not aggregated"));
    }
}
