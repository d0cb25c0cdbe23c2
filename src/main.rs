use fennec::config::Config;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
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
    if let Err(e) = fennec::logging::init(&cfg.log_level) {
        eprintln!("fennec: {e}");
        return ExitCode::FAILURE;
    }
    // Install the handlers before announcing readiness, so a signal sent
    // right after the announcement is not lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            fennec::logging::flush();
            return ExitCode::FAILURE;
        }
    };
    let path = cfg.path.clone();
    let mqtt_ws = cfg.mqtt.ws_path.clone();
    let cores = cfg.cores;
    let running = match fennec::server::start(cfg) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start: {e}");
            fennec::logging::flush();
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
    if let Some(addr) = running.wss_addr {
        println!("fennec TLS listening on wss://{addr}{path}");
    }
    if let Some(addr) = running.mqtt_tls_addr {
        println!("fennec MQTT TLS listening on mqtts://{addr}");
    }
    if let Some(addr) = running.admin_addr {
        println!("fennec admin listening on http://{addr}/metrics");
    }
    if let Some(addr) = running.rawsocket_tls_addr {
        println!("fennec RawSocket TLS listening on tls://{addr}");
    }
    let _ = std::io::stdout().flush();
    for sig in signals.forever() {
        if sig == SIGHUP {
            // New certificates for new connections; nothing else changes.
            match running.reload_tls() {
                Ok(()) => log::info!("SIGHUP: TLS certificates reloaded"),
                Err(e) => log::error!("SIGHUP: TLS certificates not reloaded: {e}"),
            }
            continue;
        }
        log::info!("signal {sig}, shutting down");
        break;
    }
    running.shutdown();
    log::info!("stopped");
    fennec::logging::flush();
    ExitCode::SUCCESS
}
