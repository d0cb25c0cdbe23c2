//! Topic lookup micro-benchmarks: matching a topic against the replicated
//! subscription table with 10k exact subscriptions, plus 100 prefix and 100
//! wildcard patterns; and an MQTT fleet of 10k `devices/<id>/+/cmd` filters.
//! Run: cargo bench --bench topics

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fennec::router::topics::TopicTable;
use fennec::router::{MatchPolicy, SubKey};

fn key(topic: String, policy: MatchPolicy) -> SubKey {
    SubKey { realm: "realm1".into(), topic, policy, share: None, filter: None }
}

fn bench(c: &mut Criterion) {
    let mut exact_only = TopicTable::default();
    let mut mixed = TopicTable::default();
    let mut id = 0;
    for i in 0..10_000 {
        id += 1;
        let k = key(format!("com.example.device{i}.temperature"), MatchPolicy::Exact);
        exact_only.add(&k, id, 0, (i % 4) as u16);
        mixed.add(&k, id, 0, (i % 4) as u16);
    }
    for i in 0..100 {
        id += 1;
        mixed.add(&key(format!("com.other{i}."), MatchPolicy::Prefix), id, 0, 0);
        id += 1;
        mixed.add(&key(format!("com.other{i}..humidity"), MatchPolicy::Wildcard), id, 0, 1);
    }
    // An MQTT fleet: 10k devices, each subscribed to its command filter.
    let mut fleet = TopicTable::default();
    for i in 0..10_000 {
        id += 1;
        fleet.add(&key(format!("devices.d{i}.+.cmd"), MatchPolicy::Filter), id, 0, (i % 4) as u16);
    }
    id += 1;
    fleet.add(&key("devices.#".into(), MatchPolicy::Filter), id, 0, 0);
    let mut g = c.benchmark_group("topics");
    g.bench_function("mqtt_10k_filters_hit", |b| {
        b.iter(|| {
            let mut n = 0;
            fleet.for_each_match("realm1", black_box("devices.d4242.lamp.cmd"), |_, _| n += 1);
            assert_eq!(n, 2);
        })
    });
    g.throughput(Throughput::Elements(1));
    for (name, table) in [("exact_10k", &exact_only), ("exact_10k_plus_200_patterns", &mixed)] {
        g.bench_function(format!("{name}_hit"), |b| {
            b.iter(|| {
                let mut n = 0;
                table.for_each_match("realm1", black_box("com.example.device4242.temperature"), |_, _| n += 1);
                assert_eq!(n, 1);
            })
        });
        g.bench_function(format!("{name}_miss"), |b| {
            b.iter(|| {
                let mut n = 0;
                table.for_each_match("realm1", black_box("com.example.nothing.here"), |_, _| n += 1);
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
