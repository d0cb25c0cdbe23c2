use fennec::config::Config;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cfg = match Config::from_args() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("fennec: {e}");
            return ExitCode::from(2);
        }
    };
    // Install the handlers before announcing readiness, so a signal sent
    // right after the announcement is not lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fennec: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = cfg.path.clone();
    let mqtt_ws = cfg.mqtt.ws_path.clone();
    let cores = cfg.cores;
    let running = match fennec::server::start(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fennec: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("fennec listening on ws://{}{} ({} workers)", running.local_addr, path, cores);
    if let (Some(addr), Some(ws)) = (running.mqtt_addr, mqtt_ws) {
        println!("fennec MQTT listening on mqtt://{addr} and ws://{}{ws}", running.local_addr);
    }
    if let Some(addr) = running.rawsocket_addr {
        println!("fennec RawSocket listening on tcp://{addr}");
    }
    let _ = std::io::stdout().flush();
    if let Some(sig) = signals.forever().next() {
        eprintln!("fennec: signal {sig}, shutting down");
    }
    running.shutdown();
    ExitCode::SUCCESS
}
