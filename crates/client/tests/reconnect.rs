//! fennec-client's reconnection against the Fennec router, in-process: the
//! router goes away and comes back on the same port; the client joins
//! again and makes its subscriptions and registrations again, requests
//! meanwhile fail with `Error::Disconnected`, and a client whose tries
//! are used up ends with `Error::Closed`.

mod common;

use fennec_client::{Args, Client, Error, Options, Reconnect};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn router(port: u16) -> fennec::server::Running {
    common::router_with(&["--listen", &format!("127.0.0.1:{port}")], "")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn subscriptions_and_registrations_survive_a_router_restart() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let r1 = router(port);
    let reconnect = Reconnect { initial: Duration::from_millis(50), max: Duration::from_millis(300), attempts: None };
    let opts = Options { reconnect: Some(reconnect), timeout: Some(Duration::from_secs(5)), ..Options::default() };
    let a = Client::connect_with(&url, "realm1", opts).unwrap();
    let first = a.session_id();
    let (tx, events) = mpsc::channel();
    let sub = a.subscribe("com.news", move |e| tx.send(e.args.get::<String>(0).unwrap()).unwrap()).unwrap();
    let reg = a.register("com.echo", |inv| Ok(inv.args)).unwrap();

    r1.shutdown();
    // Down: requests fail at once, typed.
    until("Error::Disconnected", || matches!(a.publish("com.news", ("lost",)), Err(Error::Disconnected)));
    assert!(matches!(a.call::<_, String>("com.echo", ("x",)), Err(Error::Disconnected)));

    let r2 = router(port);
    until("a new session", || a.session_id() != first);
    let b = Client::connect(&url, "realm1").unwrap();
    // The registration is back (once the router has it).
    until("the registration", || b.call::<_, String>("com.echo", ("hi",)).is_ok_and(|s| s == "hi"));
    b.publish_acked("com.news", Args::from(("again",)).unwrap(), vec![]).unwrap();
    assert_eq!(events.recv_timeout(Duration::from_secs(5)).unwrap(), "again");
    // The handles from before still work.
    a.unsubscribe(sub).unwrap();
    a.unregister(reg).unwrap();
    assert!(matches!(b.call::<_, String>("com.echo", ("x",)), Err(Error::NoSuchProcedure(_))));
    a.leave().unwrap();
    b.leave().unwrap();
    r2.shutdown();
}

#[test]
fn a_client_out_of_tries_is_closed() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let r = router(port);
    let reconnect = Reconnect { initial: Duration::from_millis(20), max: Duration::from_millis(40), attempts: Some(3) };
    let a = Client::connect_with(&url, "realm1", Options { reconnect: Some(reconnect), ..Options::default() }).unwrap();
    r.shutdown();
    until("Error::Closed", || matches!(a.publish("com.x", ()), Err(Error::Closed)));
    // Without reconnecting, a lost connection ends the session at once.
    let r = router(port);
    let b = Client::connect(&url, "realm1").unwrap();
    r.shutdown();
    until("Error::Closed", || matches!(b.publish("com.x", ()), Err(Error::Closed)));
}

#[test]
fn leaving_ends_the_session_for_good() {
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let r = router(port);
    let reconnect = Reconnect { initial: Duration::from_millis(20), max: Duration::from_millis(40), attempts: None };
    let a = Client::connect_with(&url, "realm1", Options { reconnect: Some(reconnect), ..Options::default() }).unwrap();
    let first = a.session_id();
    a.leave().unwrap();
    until("Error::Closed", || matches!(a.publish("com.x", ()), Err(Error::Closed)));
    // Many backoff periods later: still closed, never joined again.
    std::thread::sleep(Duration::from_millis(500));
    assert!(matches!(a.publish("com.x", ()), Err(Error::Closed)));
    assert_eq!(a.session_id(), first);
    r.shutdown();
}
