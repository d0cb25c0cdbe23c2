//! Progressive results (a download reporting its progress) and a
//! progressive call (a sum of numbers sent one by one), and a cancel.
//!
//!   cargo run -p fennec -- &            # a router on ws://127.0.0.1:8080/ws
//!   cargo run -p fennec-client --example progressive [URL]

use fennec_client::{Args, CancelMode, Client, Reply, Value};
use std::time::Duration;

fn main() -> fennec_client::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let callee = Client::connect(&url, "realm1")?;
    callee.register("com.example.download", |inv| {
        let chunks: u32 = inv.args.get(0)?;
        for done in 1..=chunks {
            if inv.interrupted() {
                break; // canceled: what we return now is dropped
            }
            std::thread::sleep(Duration::from_millis(50));
            if inv.receives_progress() {
                inv.progress(Args::from((done, chunks))?)?;
            }
        }
        Args::from("complete")
    })?;
    callee.register("com.example.sum", |inv| {
        let mut sum: f64 = inv.args.get(0)?;
        while let Some(more) = inv.next_input() {
            sum += more.get::<f64>(0)?;
        }
        Args::from(sum)
    })?;

    let caller = Client::connect(&url, "realm1")?;
    let call = caller.start_call("com.example.download", Args::from((5,))?, vec![])?;
    loop {
        match call.next()? {
            Reply::Progress(p) => println!("download: {}/{}", p.get::<u32>(0)?, p.get::<u32>(1)?),
            Reply::Final(r) => break println!("download: {}", r.get::<String>(0)?),
        }
    }

    let progressive = vec![("progress".to_owned(), Value::Bool(true))];
    let sum = caller.start_call("com.example.sum", Args::from((1.5,))?, progressive)?;
    sum.send(Args::from((2.5,))?, false)?;
    sum.send(Args::from((6.0,))?, true)?;
    println!("sum: {}", sum.result()?.get::<f64>(0)?);

    let call = caller.start_call("com.example.download", Args::from((100,))?, vec![])?;
    std::thread::sleep(Duration::from_millis(120));
    call.cancel(CancelMode::Kill)?;
    loop {
        match call.next() {
            Ok(Reply::Progress(_)) => continue,
            Ok(Reply::Final(_)) => break println!("finished before the cancel"),
            Err(e) => break println!("canceled: {e}"),
        }
    }
    caller.leave()?;
    callee.leave()
}
