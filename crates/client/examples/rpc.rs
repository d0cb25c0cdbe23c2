//! A procedure and a call of it, with typed arguments.
//!
//!   cargo run -p fennec -- &            # a router on ws://127.0.0.1:8080/ws
//!   cargo run -p fennec-client --example rpc [URL]

use fennec_client::{Args, Client, Error};

fn main() -> fennec_client::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let callee = Client::connect(&url, "realm1")?;
    callee.register("com.example.divide", |inv| {
        let (a, b): (f64, f64) = inv.args.to()?;
        if b == 0.0 {
            return Err(Error::Application {
                uri: "com.example.division_by_zero".into(),
                args: vec![],
                kwargs: vec![],
            });
        }
        Args::from(a / b)
    })?;
    let caller = Client::connect(&url, "realm1")?;
    let q: f64 = caller.call("com.example.divide", (7.0, 2.0))?;
    println!("7 / 2 = {q}");
    match caller.call::<_, f64>("com.example.divide", (1.0, 0.0)) {
        Err(e) => println!("1 / 0: {e}"),
        Ok(q) => println!("1 / 0 = {q}?"),
    }
    caller.leave()?;
    callee.leave()
}
