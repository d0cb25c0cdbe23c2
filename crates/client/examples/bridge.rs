//! WAMP <-> MQTT through one Fennec router: an MQTT device (rumqttc)
//! publishes its temperature on `sensors/7/temp` and takes commands on
//! `sensors/7/cmd`; a Rust service (fennec-client) sees the readings as
//! WAMP events on `sensors.7.temp` and sends a command by publishing to
//! `sensors.7.cmd`. The router maps `/` to `.`; an MQTT payload that is
//! JSON reaches WAMP as its value, and a WAMP event's single argument
//! reaches MQTT as JSON.
//!
//!   cargo run -p fennec -- &     # WAMP on ws://127.0.0.1:8080/ws, MQTT on 127.0.0.1:1883
//!   cargo run -p fennec-client --example bridge [WAMP-URL] [MQTT-HOST:PORT]

use fennec_client::{Args, Client};
use rumqttc::{Event, MqttOptions, Packet, QoS};
use std::sync::mpsc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv = std::env::args().skip(1);
    let url = argv.next().unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let mqtt = argv.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let (host, port) = mqtt.rsplit_once(':').ok_or("MQTT address is HOST:PORT")?;

    // The service, on WAMP.
    let service = Client::connect(&url, "realm1")?;
    let (readings_tx, readings) = mpsc::channel();
    service.subscribe("sensors.7.temp", move |e| {
        let _ = readings_tx.send(e.args.get::<f64>(0));
    })?;

    // The device, on MQTT (its default realm is realm1 too).
    let mut options = MqttOptions::new("sensor-7", host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(30));
    let (device, mut connection) = rumqttc::Client::new(options, 16);
    device.subscribe("sensors/7/cmd", QoS::AtLeastOnce)?;
    let (commands_tx, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = commands_tx.send(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(_) => {}
                Err(e) => return eprintln!("MQTT: {e}"),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // the device's SUBACK

    for temp in [21.5, 22.0, 23.25] {
        device.publish("sensors/7/temp", QoS::AtLeastOnce, false, temp.to_string())?;
        let got = readings.recv_timeout(Duration::from_secs(5))??;
        println!("WAMP service got a reading from the MQTT device: {got}");
    }
    service.publish_acked("sensors.7.cmd", Args::from((serde_json_like("fan", "on"),))?, vec![])?;
    println!("MQTT device got a command from the WAMP service: {}", commands.recv_timeout(Duration::from_secs(5))?);
    device.disconnect()?;
    service.leave()?;
    Ok(())
}

/// A small map for the command (it reaches MQTT as JSON).
fn serde_json_like(k: &str, v: &str) -> std::collections::BTreeMap<String, String> {
    [(k.to_owned(), v.to_owned())].into_iter().collect()
}
