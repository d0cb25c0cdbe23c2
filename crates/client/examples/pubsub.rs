//! A subscriber and a publisher on one topic.
//!
//!   cargo run -p fennec -- &            # a router on ws://127.0.0.1:8080/ws
//!   cargo run -p fennec-client --example pubsub [URL]

use fennec_client::{Args, Client};
use std::sync::mpsc;
use std::time::Duration;

fn main() -> fennec_client::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let subscriber = Client::connect(&url, "realm1")?;
    let (tx, rx) = mpsc::channel();
    let sub = subscriber.subscribe("com.example.temperature", move |e| {
        let _ = tx.send(e.args.get::<f64>(0));
    })?;
    let publisher = Client::connect(&url, "realm1")?;
    for t in [20.5, 21.0, 21.5] {
        // Acknowledged: the router has routed it when this returns.
        publisher.publish_acked("com.example.temperature", Args::from((t,))?, vec![])?;
    }
    for _ in 0..3 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(t) => println!("temperature: {:?}", t),
            Err(_) => println!("no event within 5 s"),
        }
    }
    subscriber.unsubscribe(sub)?;
    subscriber.leave()?;
    publisher.leave()
}
