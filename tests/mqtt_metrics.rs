//! MQTT latency histograms and counters reach StatsD (driven by rumqttc).

mod common;

use common::{counter, mqtt_wait as wait_for, router, statsd_lines};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

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
