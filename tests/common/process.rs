//! The built binary as a child process on a data directory: started with
//! its listeners read from its output, killed with SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct Router {
    pub child: Child,
    pub wamp: SocketAddr,
    pub mqtt: SocketAddr,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary (`--cores 2`) on `data` and waits for its listening lines.
pub fn start(data: &std::path::Path) -> Router {
    start_with(data, &[])
}

pub fn start_with(data: &std::path::Path, extra: &[&str]) -> Router {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fennec"))
        .args(["--cores", "2", "--no-pin", "--listen", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fennec");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut wamp, mut mqtt) = (None, None);
    while wamp.is_none() || mqtt.is_none() {
        let line = lines.next().expect("fennec printed its listeners").expect("a line");
        if let Some(rest) = line.strip_prefix("fennec listening on ws://") {
            wamp = rest.split('/').next().and_then(|a| a.parse().ok());
        }
        if let Some(rest) = line.strip_prefix("fennec MQTT listening on mqtt://") {
            mqtt = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
    }
    // Keep draining stdout so the router never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Router { child, wamp: wamp.unwrap(), mqtt: mqtt.unwrap() }
}

pub fn kill9(mut r: Router) {
    r.child.kill().expect("SIGKILL");
    r.child.wait().expect("reaped");
}
