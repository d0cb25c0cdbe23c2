//! MQTT over WebSocket (subprotocol `mqtt`, path `/mqtt` on the WAMP
//! listener), driven by tungstenite's WebSocket client with packets encoded
//! and decoded by rumqttc's codec, talking to a rumqttc client over TCP.

mod common;

use bytes::BytesMut;
use common::{mqtt_wait as wait_for, router};
use rumqttc::mqttbytes::v4::{Connect, Packet as P4, PubAck, Publish as Pub4, Subscribe};
use rumqttc::mqttbytes::QoS as Q;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

struct WsMqtt {
    ws: WebSocket<TcpStream>,
    input: BytesMut,
}

impl WsMqtt {
    fn open(addr: std::net::SocketAddr) -> WsMqtt {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
        let (ws, resp) = tungstenite::client(req, stream).expect("WebSocket handshake on /mqtt");
        assert_eq!(resp.headers()["sec-websocket-protocol"], "mqtt");
        WsMqtt { ws, input: BytesMut::new() }
    }

    /// Sends one packet, split over two WebSocket messages when `split`.
    fn send(&mut self, bytes: &[u8], split: bool) {
        if split {
            let (a, b) = bytes.split_at(bytes.len() / 2);
            self.ws.send(Message::binary(a.to_vec())).unwrap();
            self.ws.send(Message::binary(b.to_vec())).unwrap();
        } else {
            self.ws.send(Message::binary(bytes.to_vec())).unwrap();
        }
    }

    fn recv(&mut self) -> P4 {
        loop {
            match P4::read(&mut self.input, 1 << 20) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the broker: {e:?}"),
            }
            match self.ws.read().expect("a WebSocket message") {
                Message::Binary(b) => self.input.extend_from_slice(&b),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn encode(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    f(&mut b);
    b
}

#[test]
fn mqtt_over_websocket_talks_to_mqtt_over_tcp() {
    let r = router(&["--cores", "2"]);
    let mut ws = WsMqtt::open(r.local_addr);
    let connect = encode(|b| {
        Connect::new("ws-client").write(b).unwrap();
    });
    ws.send(&connect, true);
    assert!(matches!(ws.recv(), P4::ConnAck(c) if c.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success));
    let mut sub = Subscribe::new("ws/in", Q::AtLeastOnce);
    sub.pkid = 1;
    ws.send(
        &encode(|b| {
            sub.write(b).unwrap();
        }),
        false,
    );
    assert!(matches!(ws.recv(), P4::SubAck(s) if s.pkid == 1));

    let addr = r.mqtt_addr.unwrap();
    let mut opts = MqttOptions::new("tcp-client", addr.ip().to_string(), addr.port());
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (tcp, mut conn) = Client::new(opts, 16);
    wait_for(&mut conn, "CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(()));
    tcp.subscribe("ws/out", QoS::AtMostOnce).unwrap();
    wait_for(&mut conn, "SUBACK", |e| matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(()));

    // TCP -> WebSocket, QoS 1.
    tcp.publish("ws/in", QoS::AtLeastOnce, false, b"over tcp".to_vec()).unwrap();
    wait_for(&mut conn, "PUBACK", |e| matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(()));
    let P4::Publish(p) = ws.recv() else { panic!("expected PUBLISH") };
    assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), ("ws/in", &b"over tcp"[..], Q::AtLeastOnce));
    ws.send(
        &encode(|b| {
            PubAck::new(p.pkid).write(b).unwrap();
        }),
        false,
    );

    // WebSocket -> TCP, QoS 0, a packet split over two messages and a
    // large one.
    let big = vec![b'z'; 100_000];
    for (payload, split) in [(b"over ws".to_vec(), true), (big.clone(), false)] {
        let publish = Pub4::new("ws/out", Q::AtMostOnce, payload.clone());
        ws.send(
            &encode(|b| {
                publish.write(b).unwrap();
            }),
            split,
        );
        let got = wait_for(&mut conn, "the PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.payload.to_vec()),
            _ => None,
        });
        assert_eq!(got, payload);
    }
    drop(tcp);
    r.shutdown();
}
