//! Reducers and the aggregate engine (issue 14), without sockets: two
//! shards (`worker::testkit`), a publisher on one, a subscriber of the
//! result on the other. Each iteration hands the router one PUBLISH and
//! lets both shards settle: the figure is the router's CPU per
//! publication, everything it causes included (the owner's work, the
//! change event to the subscriber; the test kit has no store).
//!
//! - `retained_publish`: a plain retained PUBLISH (the baseline).
//! - `sum_reducer`: a PUBLISH folded by the built-in `sum` reducer.
//! - `invoice_detail`: an invoice row (fox-wamp's README schema) upserted,
//!   its amount propagated into the customer's total. The rows cycle over
//!   1,000 keys, so after the first thousand each one replaces a row
//!   (the total takes the difference).
//!
//! Run: cargo bench --bench tables

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fennec::worker::testkit::Cluster;
use serde_json::json;

/// fox-wamp's README example, as the interop suite has it.
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tables.json");

/// A case: its name, the topic (prefix) its subscriber watches, and the
/// PUBLISH of iteration `i`.
type Case = (&'static str, &'static str, fn(u64) -> serde_json::Value);

fn roles() -> serde_json::Value {
    json!({"publisher": {}, "subscriber": {}})
}

fn bench(c: &mut Criterion) {
    let toml = format!(
        "[[realm]]\nname = \"realm1\"\nschema = {SCHEMA:?}\n[[realm.reducer]]\nuri = \"bench.sum\"\nkind = \"sum\"\n"
    );
    let mut g = c.benchmark_group("tables");
    g.throughput(Throughput::Elements(1));
    let cases: [Case; 3] = [
        ("retained_publish", "bench.retained", |i| json!([16, 1, {"retain": true}, "bench.retained", [i]])),
        ("sum_reducer", "bench.sum", |i| json!([16, 1, {}, "bench.sum", [i % 100]])),
        ("invoice_detail", "detail.", |i| {
            let row = json!({"date": format!("d{}", i % 1000), "customer": format!("c{}", i % 10),
                             "amount": format!("{}.{:02}", i % 100, i % 97), "type": "sale"});
            json!([16, 1, {}, "invoice", [row]])
        }),
    ];
    for (name, watch, publish) in cases {
        let mut cl = Cluster::from_toml(2, &toml);
        let (publisher, watcher) = (cl.wamp(0), cl.wamp(1));
        cl.join(publisher, roles());
        cl.join(watcher, roles());
        cl.send(watcher, json!([32, 1, {"match": "prefix"}, watch]));
        assert_eq!(cl.one(watcher)[0], 33);
        // Encoded beforehand: the iteration is the router's work only.
        let msgs: Vec<Vec<u8>> = (0..1000).map(|i| serde_json::to_vec(&publish(i)).unwrap()).collect();
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % msgs.len();
                fennec::wamp::session::on_message(&mut cl.shards[0], publisher.handle, &msgs[i]);
                cl.settle();
                cl.drain(watcher);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
