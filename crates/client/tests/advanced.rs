//! fennec-client's Advanced Profile RPC against the Fennec router,
//! in-process: progressive results, progressive calls, CANCEL in each mode
//! and the callee's INTERRUPT, the router's call timeout.

mod common;

use fennec_client::{Args, CancelMode, Client, Error, Options, Reply};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

fn router() -> (fennec::server::Running, String) {
    let r = common::router_with(&[], "");
    let url = common::url(&r);
    (r, url)
}

fn client(url: &str) -> Client {
    let opts = Options { timeout: Some(Duration::from_secs(10)), ..Options::default() };
    Client::connect_with(url, "realm1", opts).unwrap()
}

#[test]
fn progressive_results_in_order_then_the_result() {
    let (r, url) = router();
    let callee = client(&url);
    let caller = client(&url);
    callee
        .register("com.count", |inv| {
            let n: u32 = inv.args.get(0)?;
            if inv.receives_progress() {
                for i in 0..n {
                    inv.progress(Args::from((i,))?)?;
                }
            } else {
                assert!(inv.progress(Args::from((0,))?).is_err(), "progress nobody asked for");
            }
            Args::from(("done", n))
        })
        .unwrap();
    let call = caller.start_call("com.count", Args::from((5u32,)).unwrap(), vec![]).unwrap();
    let mut progress = Vec::new();
    loop {
        match call.next().unwrap() {
            Reply::Progress(a) => progress.push(a.get::<u32>(0).unwrap()),
            Reply::Final(a) => {
                assert_eq!(a.get::<String>(0).unwrap(), "done");
                break;
            }
        }
    }
    assert_eq!(progress, vec![0, 1, 2, 3, 4]);
    assert!(matches!(call.next(), Err(Error::Closed)), "nothing after the result");
    // A plain call of the same procedure gets the result only.
    let result = caller.call_with("com.count", Args::from((3u32,)).unwrap(), vec![]).unwrap();
    assert_eq!(result.get::<u32>(1).unwrap(), 3);
    // `result()` skips the progress.
    let call = caller.start_call("com.count", Args::from((50u32,)).unwrap(), vec![]).unwrap();
    assert_eq!(call.result().unwrap().get::<u32>(1).unwrap(), 50);
    r.shutdown();
}

#[test]
fn a_progressive_call_streams_its_input_to_the_handler() {
    let (r, url) = router();
    let callee = client(&url);
    let caller = client(&url);
    callee
        .register("com.sum", |inv| {
            let mut sum: i64 = inv.args.get(0)?;
            let mut chunks = 1;
            while let Some(more) = inv.next_input() {
                sum += more.get::<i64>(0)?;
                chunks += 1;
            }
            Args::from((sum, chunks))
        })
        .unwrap();
    let progress = vec![("progress".to_owned(), fennec_client::Value::Bool(true))];
    let call = caller.start_call("com.sum", Args::from((1,)).unwrap(), progress).unwrap();
    for i in 2..=9 {
        call.send(Args::from((i,)).unwrap(), false).unwrap();
    }
    call.send(Args::from((10,)).unwrap(), true).unwrap();
    assert!(call.send(Args::from((11,)).unwrap(), true).is_err(), "the input has ended");
    let result = call.result().unwrap();
    assert_eq!((result.get::<i64>(0).unwrap(), result.get::<u32>(1).unwrap()), (55, 10));
    r.shutdown();
}

/// A callee whose handler runs until it is interrupted (or 5 s), and says
/// which on `seen`.
fn stubborn(callee: &Client) -> mpsc::Receiver<bool> {
    let (tx, seen) = mpsc::channel();
    let tx = Mutex::new(tx);
    callee
        .register("com.stubborn", move |inv| {
            let until = Instant::now() + Duration::from_secs(5);
            while !inv.interrupted() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.lock().unwrap().send(inv.interrupted()).unwrap();
            Args::from("finished")
        })
        .unwrap();
    seen
}

#[test]
fn cancel_in_each_mode() {
    let (r, url) = router();
    let callee = client(&url);
    let caller = client(&url);
    let seen = stubborn(&callee);
    for mode in [CancelMode::Kill, CancelMode::KillNoWait] {
        let call = caller.start_call("com.stubborn", Args::default(), vec![]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        call.cancel(mode).unwrap();
        assert!(matches!(call.next(), Err(Error::Canceled(_))), "{mode:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{mode:?}: canceled, not finished");
        assert!(seen.recv_timeout(Duration::from_secs(5)).unwrap(), "{mode:?}: the handler saw the INTERRUPT");
    }
    // skip: the caller is answered at once; the callee is not told.
    let call = caller.start_call("com.stubborn", Args::default(), vec![]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    call.cancel(CancelMode::Skip).unwrap();
    assert!(matches!(call.next(), Err(Error::Canceled(_))));
    assert!(seen.recv_timeout(Duration::from_secs(3)).is_err(), "skip does not interrupt the callee");
    assert!(!seen.recv_timeout(Duration::from_secs(5)).unwrap(), "it runs to its end");
    // The session goes on.
    callee.register("com.ok", |_| Args::from(1)).unwrap();
    assert_eq!(caller.call::<_, i32>("com.ok", ()).unwrap(), 1);
    r.shutdown();
}

#[test]
fn the_routers_call_timeout_interrupts_the_callee() {
    let (r, url) = router();
    let callee = client(&url);
    let caller = client(&url);
    let seen = stubborn(&callee);
    let timeout = vec![("timeout".to_owned(), fennec_client::Value::UInt(200))];
    match caller.call_with("com.stubborn", Args::default(), timeout) {
        Err(Error::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(seen.recv_timeout(Duration::from_secs(5)).unwrap(), "the handler saw the INTERRUPT");
    r.shutdown();
}
