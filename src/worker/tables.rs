//! The aggregate engine on the workers (`tables`): where a publication
//! goes, and the owners' side of rows.
//!
//! A publication to a source table's topic is checked where it was
//! published (`Shard::divert`: the table's JSON Schema, its key, values
//! that are summed being numbers) and goes as a row to the owner of its
//! row topic `<table>.<key...>` (`ShardMsg::TableRow`). The owner keeps the
//! row as that topic's retained value (stored, and published: the change
//! event) and sends what the row adds and takes back to the owners of the
//! aggregate rows it propagates to (`ShardMsg::TableDelta`, one per
//! aggregate row, the old contribution and the new together). Each
//! aggregate row's owner keeps its state (`AggRow`), publishes the row when
//! it changes (retained: subscribers see the current rows first, then the
//! changes) and propagates the change further down the chain. So the work
//! of one row happens at its owner, nothing blocks, and a replaced row
//! takes the difference, not both versions.
//!
//! At start the aggregate rows are made again from the source rows the
//! store kept (`rebuild`), so a crash between a row and its propagation
//! loses nothing. The rows' topics are the engine's: a client publishing
//! under them is refused, but for an empty retained publication to a
//! source row's topic, which deletes that row (MQTT's way of clearing a
//! retained value).

use super::Shard;
use crate::payload::Payload;
use crate::router::keys::value_of;
use crate::router::{owner_of, Body, Publication, Realm, ShardMsg, WorkerId};
use crate::tables::engine::{contributions, AggRow, Contribution};
use crate::tables::schema::Schema;
use crate::value::{Dict, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where a client's publication goes instead of to its subscribers.
pub enum Divert {
    /// Delivered as it is.
    None,
    /// To its topic's reducer (`worker::reduce`).
    Reduce,
    /// A row of a source table, to the owner of its topic (none: the row
    /// is deleted).
    Row { table: usize, topic: String, row: Option<Value> },
}

/// Why a publication is refused before it is routed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its value does not fit: WAMP `wamp.error.invalid_argument`, MQTT 5 0x99.
    Invalid(String),
    /// Its topic is an aggregate row's: WAMP `wamp.error.not_authorized`, MQTT 5 0x87.
    Reserved(String),
}

/// A source row on its way to its owner.
#[derive(Debug)]
pub struct RowWrite {
    pub realm: Realm,
    pub table: usize,
    pub topic: String,
    /// None: the row is deleted.
    pub row: Option<Value>,
    /// The publisher's worker and ticket: told once the row is stored.
    pub ack: Option<(WorkerId, u64)>,
}

/// What a changed row adds to and takes back from one aggregate row.
#[derive(Debug)]
pub struct Delta {
    pub realm: Realm,
    pub table: usize,
    pub key: Vec<Value>,
    pub topic: String,
    pub minus: Option<Dict>,
    pub plus: Option<Dict>,
}

impl Shard {
    /// Where a client's publication goes (see `Divert`).
    pub fn divert(&self, p: &Publication) -> Result<Divert, Refusal> {
        if let Some(schema) = self.cfg.tables(&p.realm) {
            if let Some(t) = schema.row_table(&p.topic) {
                let name = &schema.tables[t].name;
                // A source row is deleted as MQTT clears a retained value:
                // an empty retained publication to its topic.
                let empty = crate::router::retained::is_empty_body(&p.body);
                if schema.tables[t].source.is_some() && p.retain && empty {
                    return Ok(Divert::Row { table: t, topic: p.topic.clone(), row: None });
                }
                return Err(Refusal::Reserved(format!(
                    "the rows of table '{name}' are written by the aggregate engine"
                )));
            }
            if let Some(t) = schema.source_for(&p.topic) {
                let row = value_of(&p.body).unwrap_or(Value::Null);
                let topic = schema.check_row(t, &row).map_err(Refusal::Invalid)?;
                return Ok(Divert::Row { table: t, topic, row: Some(row) });
            }
        }
        if p.retain {
            return Ok(Divert::None); // sets the value, reducer or not
        }
        if let Some(rule) = self.cfg.reducer_rule(&p.realm, &p.topic) {
            let event = value_of(&p.body);
            crate::router::fold::fold(rule.kind, rule.field.as_deref(), rule.limit, None, event.as_ref())
                .map_err(Refusal::Invalid)?;
            return Ok(Divert::Reduce);
        }
        if self.procs.reducer_for(&p.realm, &p.topic).is_some() {
            return Ok(Divert::Reduce);
        }
        Ok(Divert::None)
    }

    /// A source row at the owner of its topic.
    pub(crate) fn table_row(&mut self, w: RowWrite) {
        let Some(schema) = self.cfg.tables(&w.realm).cloned() else { return };
        let old = self.row_value(&w.realm, &w.topic);
        self.publish_row(&w.realm, &w.topic, w.row.clone(), w.ack);
        self.propagate(&schema, &w.realm, w.table, old.as_ref(), w.row.as_ref());
    }

    /// A change to one aggregate row, at its owner.
    pub(crate) fn table_delta(&mut self, d: Delta) {
        let Some(schema) = self.cfg.tables(&d.realm).cloned() else { return };
        let key = (d.realm.clone(), d.topic.clone());
        let state = self.table_rows.entry(key.clone()).or_default();
        let mut next = state.clone();
        let c = |values: Dict| Contribution { table: d.table, key: d.key.clone(), topic: d.topic.clone(), values };
        let applied = d
            .minus
            .map_or(Ok(()), |m| next.apply(&schema, &c(m), -1))
            .and_then(|()| d.plus.map_or(Ok(()), |p| next.apply(&schema, &c(p), 1)));
        if let Err(e) = applied {
            log::warn!("worker {}: table row '{}' not changed: {e}", self.id, d.topic);
            self.metrics.counters.table_errors += 1;
            return;
        }
        let row = next.row(&schema, d.table, &d.key);
        match row {
            Some(_) => *state = next,
            None => {
                self.table_rows.remove(&key);
            }
        }
        let old = self.row_value(&d.realm, &d.topic);
        if old == row {
            return;
        }
        self.publish_row(&d.realm, &d.topic, row.clone(), None);
        self.propagate(&schema, &d.realm, d.table, old.as_ref(), row.as_ref());
    }

    /// A row's value now (its topic's retained value).
    fn row_value(&self, realm: &Realm, topic: &str) -> Option<Value> {
        let v = self.retained.get(realm, topic)?.value.as_ref()?;
        value_of(&v.body)
    }

    /// Sends what a row's change (`old` to `new`) means for each aggregate
    /// row it propagates to: one delta per aggregate row.
    fn propagate(&mut self, schema: &Schema, realm: &Realm, t: usize, old: Option<&Value>, new: Option<&Value>) {
        let mut by_topic: BTreeMap<String, Delta> = BTreeMap::new();
        let mut add = |c: Contribution, plus: bool| {
            let d = by_topic.entry(c.topic.clone()).or_insert_with(|| Delta {
                realm: realm.clone(),
                table: c.table,
                key: c.key.clone(),
                topic: c.topic.clone(),
                minus: None,
                plus: None,
            });
            if plus {
                d.plus = Some(c.values);
            } else {
                d.minus = Some(c.values);
            }
        };
        for c in old.map(|o| contributions(schema, t, o)).unwrap_or_default() {
            add(c, false);
        }
        for c in new.map(|n| contributions(schema, t, n)).unwrap_or_default() {
            add(c, true);
        }
        for (topic, d) in by_topic {
            if d.minus.is_some() && d.minus == d.plus {
                continue; // the same share as before
            }
            let owner = owner_of(realm, &topic, self.workers);
            self.peers_send(owner, ShardMsg::TableDelta(Box::new(d)));
        }
    }

    /// A row's new value (none: deleted) as its topic's retained value,
    /// published to the topic's subscribers.
    fn publish_row(&mut self, realm: &Realm, topic: &str, row: Option<Value>, ack: Option<(WorkerId, u64)>) {
        let payload = match row {
            Some(v) => Payload::args(vec![v]),
            None => Payload::new(None, None),
        };
        let (id, body) = (self.ids.next_id(), Body::Wamp(payload));
        let p = Arc::new(Publication::router_value(realm.clone(), topic.to_owned(), id, self.id, body, self.now));
        self.retain(p.clone(), ack);
        self.publish_counted(p);
    }

    fn peers_send(&mut self, to: WorkerId, msg: ShardMsg) {
        use crate::router::owner::Outbox;
        self.peers.send(to, msg);
    }
}

/// A row's realm and topic.
pub type RowKey = (Realm, String);

/// What `rebuild` made.
pub struct Rebuilt {
    /// Each worker's aggregate rows, with their states.
    pub states: Vec<Vec<(RowKey, AggRow)>>,
    /// Rows whose stored value is to be written again.
    pub rewrite: Vec<Arc<Publication>>,
    /// Stored aggregate rows no row contributes to any more.
    pub delete: Vec<RowKey>,
}

/// The aggregate rows again from the source rows kept in the store, before
/// the workers start: `retained[w]` holds worker `w`'s retained values; the
/// aggregate rows among them are replaced by the rebuilt ones (each at its
/// owner).
pub fn rebuild(cfg: &crate::config::Config, retained: &mut [Vec<Arc<Publication>>]) -> Rebuilt {
    let workers = retained.len();
    let mut states: Vec<Vec<(RowKey, AggRow)>> = (0..workers).map(|_| Vec::new()).collect();
    let (mut rewrite, mut delete) = (Vec::new(), Vec::new());
    for realm_cfg in &cfg.realms {
        let Some(schema) = &realm_cfg.tables else { continue };
        let realm: Realm = realm_cfg.name.as_str().into();
        // Source rows by table; the old aggregate rows set aside.
        let mut sources: Vec<(usize, Value)> = Vec::new();
        let mut stale: ahash::AHashSet<String> = ahash::AHashSet::new();
        for part in retained.iter_mut() {
            part.retain(|p| {
                if p.realm != realm {
                    return true;
                }
                let Some(t) = schema.row_table(&p.topic) else { return true };
                if schema.tables[t].source.is_some() {
                    if let Some(v) = value_of(&p.body) {
                        sources.push((t, v));
                    }
                    true
                } else {
                    stale.insert(p.topic.clone());
                    false
                }
            });
        }
        // Sources first, then each aggregate table once its inputs are all in.
        let mut rows: BTreeMap<String, (usize, Vec<Value>, AggRow)> = BTreeMap::new();
        let feed = |rows: &mut BTreeMap<String, (usize, Vec<Value>, AggRow)>, t: usize, v: &Value| {
            for c in contributions(schema, t, v) {
                let e = rows.entry(c.topic.clone()).or_insert_with(|| (c.table, c.key.clone(), AggRow::default()));
                if let Err(e) = e.2.apply(schema, &c, 1) {
                    log::warn!("rebuilding '{}': {e}", c.topic);
                }
            }
        };
        for (t, v) in &sources {
            feed(&mut rows, *t, v);
        }
        for t in schema.topological() {
            if schema.tables[t].source.is_some() {
                continue;
            }
            let made: Vec<Value> =
                rows.values().filter(|(tt, ..)| *tt == t).filter_map(|(_, key, s)| s.row(schema, t, key)).collect();
            for v in &made {
                feed(&mut rows, t, v);
            }
        }
        let now = std::time::Instant::now();
        for (topic, (t, key, state)) in rows {
            let Some(row) = state.row(schema, t, &key) else { continue };
            let owner = owner_of(&realm, &topic, workers) as usize;
            let body = Body::Wamp(Payload::args(vec![row]));
            let p = Arc::new(Publication::router_value(realm.clone(), topic.clone(), 0, owner as WorkerId, body, now));
            stale.remove(&topic);
            retained[owner].push(p.clone());
            rewrite.push(p);
            states[owner].push(((realm.clone(), topic), state));
        }
        delete.extend(stale.into_iter().map(|t| (realm.clone(), t)));
    }
    Rebuilt { states, rewrite, delete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::testkit::Cluster;
    use serde_json::{json, Value as Json};

    fn roles() -> Json {
        json!({"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}})
    }

    /// fox-wamp's README example (the interop suite's schema file).
    const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tables.json");

    fn cluster() -> Cluster {
        Cluster::from_toml(2, &format!("[[realm]]\nname = \"realm1\"\nschema = {SCHEMA:?}\n"))
    }

    fn invoice(date: &str, customer: &str, amount: &str, kind: &str) -> Json {
        json!({"date": date, "customer": customer, "amount": amount, "type": kind})
    }

    #[test]
    fn invoices_sum_into_details_and_replacements_take_the_difference() {
        let mut cl = cluster();
        let (publisher, watcher) = (cl.wamp(0), cl.wamp(1));
        cl.join(publisher, roles());
        cl.join(watcher, roles());
        cl.send(watcher, json!([32, 1, {"match": "prefix"}, "detail."]));
        assert_eq!(cl.one(watcher)[0], 33);
        let rows = [
            invoice("2024-01-05", "acme", "12.50", "sale"),
            invoice("2024-01-06", "acme", "7.25", "sale"),
            invoice("2024-01-06", "umbrella", "100", "sale"),
            invoice("2024-01-07", "acme", "3.00", "refund"),
            // The first invoice again, amended: its old amount goes.
            invoice("2024-01-05", "acme", "10.00", "sale"),
        ];
        for (i, row) in rows.iter().enumerate() {
            cl.send(publisher, json!([16, i + 1, {"acknowledge": true}, "invoice", [row]]));
            assert_eq!(cl.one(publisher)[0], 17, "PUBLISHED once the row is stored");
        }
        let changes: Vec<Json> = cl.take(watcher).into_iter().map(|e| e[4][0].clone()).collect();
        assert_eq!(
            changes,
            vec![
                json!({"customer": "acme", "total": "12.50"}),
                json!({"customer": "acme", "total": "19.75"}),
                json!({"customer": "umbrella", "total": "100"}),
                json!({"customer": "acme", "total": "17.25"}),
            ],
            "the refund is filtered out; the amendment is one change"
        );
        // Every row of both tables is a retained value at its topic.
        let reader = cl.wamp(0);
        cl.join(reader, roles());
        cl.send(reader, json!([32, 1, {"match": "prefix", "get_retained": true}, "invoice."]));
        let got = cl.take(reader);
        assert_eq!(got.len(), 1 + 4, "SUBSCRIBED and four invoices: {got:?}");
        let amended = got.iter().find(|e| e[3]["topic"] == "invoice.2024-01-05.acme").expect("the amended invoice");
        assert_eq!(amended[4][0]["amount"], "10.00");
        // An invoice deleted (an empty retained publication to its row):
        // its amount goes from the total; the last one deletes the total.
        cl.send(publisher, json!([16, 9, {"acknowledge": true, "retain": true}, "invoice.2024-01-06.acme"]));
        assert_eq!(cl.one(publisher)[0], 17);
        cl.send(publisher, json!([16, 10, {"acknowledge": true, "retain": true}, "invoice.2024-01-06.umbrella"]));
        assert_eq!(cl.one(publisher)[0], 17);
        let changes = cl.take(watcher);
        assert_eq!(changes[0][4][0], json!({"customer": "acme", "total": "10.00"}));
        assert_eq!(changes[1][3]["topic"], "detail.umbrella");
        assert!(changes[1].get(4).is_none(), "a deleted row: an EVENT without arguments: {:?}", changes[1]);
        let gone = cl.take(reader);
        assert_eq!(gone.len(), 2, "the deleted invoices, to their subscriber: {gone:?}");
        assert!(gone.iter().all(|e| e[0] == 36 && e.get(4).is_none()));
        // The rows as the meta API reads them.
        cl.send(reader, json!([48, 20, {}, "wamp.table.get", ["detail", ["acme"]]]));
        assert_eq!(cl.one(reader), json!([50, 20, {}, [{"customer": "acme", "total": "10.00"}]]));
        cl.send(reader, json!([48, 21, {}, "wamp.table.get", ["detail", "umbrella"]]));
        assert_eq!(cl.one(reader), json!([50, 21, {}, [null]]));
        cl.send(reader, json!([48, 22, {}, "wamp.table.list", ["invoice", 2]]));
        let listed = cl.one(reader);
        let dates: Vec<&str> = listed[3][0].as_array().unwrap().iter().map(|r| r["date"].as_str().unwrap()).collect();
        assert_eq!(dates, ["2024-01-05", "2024-01-07"], "in key order, two of them");
        cl.send(reader, json!([48, 23, {}, "wamp.table.list", ["invoice", 10, ["2024-01-05", "acme"]]]));
        assert_eq!(cl.one(reader)[3][0].as_array().unwrap().len(), 1, "after the first");
        cl.send(reader, json!([48, 24, {}, "wamp.table.list", ["nope"]]));
        assert_eq!(cl.one(reader)[4], "wamp.error.invalid_argument");
    }

    #[test]
    fn bad_rows_and_writes_to_rows_are_refused() {
        let mut cl = cluster();
        let publisher = cl.wamp(0);
        cl.join(publisher, roles());
        cl.send(
            publisher,
            json!([16, 1, {"acknowledge": true}, "invoice", [{"date": "d", "customer": "c", "amount": 5}]]),
        );
        let e = cl.one(publisher);
        assert_eq!((e[0].clone(), e[4].clone()), (json!(8), json!("wamp.error.invalid_argument")));
        assert!(e[5][0].as_str().unwrap().contains("does not meet its schema"), "{e}");
        cl.send(publisher, json!([16, 2, {"acknowledge": true}, "invoice", [invoice("d", "c", "many", "sale")]]));
        assert!(cl.one(publisher)[5][0].as_str().unwrap().contains("not a number"));
        cl.send(publisher, json!([16, 3, {"acknowledge": true}, "detail.acme", [{"customer": "acme", "total": "1"}]]));
        let e = cl.one(publisher);
        assert_eq!(e[4], "wamp.error.not_authorized", "{e}");
        // fox-wamp's key options are a retained key's, not a row's.
        let row = invoice("d", "c", "1", "sale");
        cl.send(publisher, json!([16, 4, {"retain": true, "when": null}, "invoice", [row]]));
        let e = cl.one(publisher);
        assert_eq!(e[4], "wamp.error.invalid_argument", "{e}");
        assert!(cl.shards.iter().all(|s| s.table_rows.is_empty()), "nothing was applied");
    }

    #[test]
    fn rebuild_makes_the_aggregate_rows_again_from_the_source_rows() {
        let cl = cluster();
        let cfg = cl.shards[0].cfg.clone();
        let row = |topic: &str, v: Json| {
            let body = Body::Wamp(Payload::args(vec![serde_json::from_value(v).unwrap()]));
            Arc::new(Publication::router_value("realm1".into(), topic.into(), 1, 0, body, std::time::Instant::now()))
        };
        let mut parts = vec![
            vec![
                row("invoice.a.acme", invoice("a", "acme", "1.10", "sale")),
                // Stale: the crash came before this total took the second invoice.
                row("detail.acme", json!({"customer": "acme", "total": "1.10"})),
                row("detail.gone", json!({"customer": "gone", "total": "5"})),
            ],
            vec![row("invoice.b.acme", invoice("b", "acme", "2.20", "sale")), row("other.topic", json!(1))],
        ];
        let Rebuilt { states, rewrite, delete } = rebuild(&cfg, &mut parts);
        assert_eq!(rewrite.len(), 1);
        assert_eq!(
            value_of(&rewrite[0].body),
            serde_json::from_value(json!({"customer": "acme", "total": "3.30"})).ok()
        );
        assert_eq!(delete, vec![("realm1".into(), "detail.gone".to_owned())]);
        let owner = owner_of("realm1", "detail.acme", 2) as usize;
        assert_eq!(states[owner].len(), 1);
        assert!(parts[owner].iter().any(|p| p.topic == "detail.acme" && Arc::ptr_eq(p, &rewrite[0])));
        assert_eq!(parts.iter().flatten().filter(|p| p.topic.starts_with("detail.")).count(), 1);
        assert!(parts.iter().flatten().any(|p| p.topic == "other.topic"));
    }
}
