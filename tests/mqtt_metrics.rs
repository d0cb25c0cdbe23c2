//! MQTT latency histograms and counters reach StatsD (driven by rumqttc).

mod common;

use common::router;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn statsd_lines(sock: &UdpSocket, until: impl Fn(&str) -> bool, limit: Duration) -> String {
    let mut all = String::new();
    let start = Instant::now();
    let mut buf = [0u8; 65536];
    while start.elapsed() < limit && !until(&all) {
        if let Ok(n) = sock.recv(&mut buf) {
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            all.push('\n');
        }
    }
    all
}

fn counter(lines: &str, name: &str) -> f64 {
    lines.lines().filter_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.strip_suffix("|c")?.parse::<f64>().ok()).sum()
}

/// Polls a rumqttc connection until `pick` accepts an event.
fn wait_for<T>(conn: &mut rumqttc::Connection, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(ev)) => {
                if let Some(t) = pick(&ev) {
                    return t;
                }
            }
            Ok(Err(e)) => panic!("waiting for {what}: {e}"),
            Err(_) => panic!("no {what} within 5 s"),
        }
    }
}

#[test]
fn mqtt_deliveries_are_histogrammed_by_qos() {
    let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
    statsd.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let target = statsd.local_addr().unwrap().to_string();
    let r = router(&["--cores", "2", "--statsd", &target, "--metrics-interval-ms", "100", "--statsd-prefix", "fm"]);
    let addr = r.mqtt_addr.unwrap();
    let opts = |id: &str| MqttOptions::new(id, addr.ip().to_string(), addr.port());
    let (sub, mut sub_conn) = Client::new(opts("metrics-sub"), 16);
    wait_for(&mut sub_conn, "CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(()));
    sub.subscribe("m/#", QoS::ExactlyOnce).unwrap();
    wait_for(&mut sub_conn, "SUBACK", |e| matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(()));
    let (publ, mut pub_conn) = Client::new(opts("metrics-pub"), 16);
    wait_for(&mut pub_conn, "CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(()));
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publ.publish(format!("m/{i}"), qos, false, vec![b'x'; 8]).unwrap();
        wait_for(&mut pub_conn, "the publish going out", |e| {
            matches!(e, Event::Outgoing(rumqttc::Outgoing::Publish(_))).then_some(())
        });
        let got = wait_for(&mut sub_conn, "the delivery", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.qos),
            _ => None,
        });
        assert_eq!(got, qos);
    }
    // Let the QoS 1/2 flows toward the subscriber finish.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        let _ = sub_conn.recv_timeout(Duration::from_millis(50));
        let _ = pub_conn.recv_timeout(Duration::from_millis(50));
    }
    let lines = statsd_lines(
        &statsd,
        |l| {
            counter(l, "fm.latency.mqtt.publish_deliver.qos2.count") >= 1.0
                && counter(l, "fm.latency.mqtt.publish_deliver.qos0.count") >= 1.0
                && counter(l, "fm.latency.mqtt.publish_deliver.qos1.count") >= 1.0
                && counter(l, "fm.mqtt.connects") >= 2.0
        },
        Duration::from_secs(10),
    );
    for q in 0..3 {
        assert_eq!(counter(&lines, &format!("fm.latency.mqtt.publish_deliver.qos{q}.count")), 1.0, "{lines}");
        assert!(lines.contains(&format!("fm.latency.mqtt.publish_deliver.qos{q}.p99_us:")), "{lines}");
    }
    assert_eq!(counter(&lines, "fm.mqtt.connects"), 2.0, "{lines}");
    assert_eq!(counter(&lines, "fm.latency.mqtt.connect.count"), 2.0, "{lines}");
    assert_eq!(counter(&lines, "fm.mqtt.dropped"), 0.0, "{lines}");
    // CONNECT x2, SUBSCRIBE, PUBLISH x3, PUBREL, and the subscriber's acks
    // (PUBACK, PUBREC, PUBCOMP); PINGREQs may add more.
    assert!(counter(&lines, "fm.messages.in") >= 10.0, "{lines}");
    drop((sub, publ));
    r.shutdown();
}
