//! The Fennec router for the client's tests, in-process: WAMP on a free
//! port (or the one asked), no MQTT, no pinning, nothing on disk, two
//! workers; `flags` add listeners, `toml` is the configuration file.
#![allow(dead_code)]

use fennec::config::{Cli, Config, File};

pub fn router_with(flags: &[&str], toml: &str) -> fennec::server::Running {
    let mut args = vec!["fennec", "--no-mqtt", "--no-pin", "--durability", "none", "--cores", "2"];
    if !flags.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args.extend_from_slice(flags);
    let cli = <Cli as clap::Parser>::try_parse_from(args).expect("flags");
    let file: File = toml::from_str(toml).expect("configuration");
    fennec::server::start(Config::resolve(cli, file).expect("config")).expect("start")
}

/// The router's WebSocket URL.
pub fn url(r: &fennec::server::Running) -> String {
    format!("ws://{}/ws", r.local_addr)
}
