//! Joining a realm with WAMP-CRA and with cryptosign. A router with
//! these principals (fennec.toml):
//!
//!   [[realm]]
//!   name = "secure"
//!   [[realm.principal]]
//!   authid = "alice"
//!   role = "user"
//!   cra_secret = "alice-secret"
//!   [[realm.principal]]
//!   authid = "device-7"
//!   role = "user"
//!   cryptosign = ["<the public key this example prints>"]
//!   [[realm.role]]
//!   name = "user"
//!   [[realm.role.permission]]
//!   uri = ""
//!   match = "prefix"
//!   call = true
//!   register = true
//!   publish = true
//!   subscribe = true
//!
//!   cargo run -p fennec -- --config fennec.toml &
//!   cargo run -p fennec-client --example auth [URL]

use fennec_client::{Auth, Client, Error, Options};

fn main() -> fennec_client::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    // A fixed seed for the example; a device keeps its own secret.
    let seed = [7u8; 32];
    println!("device-7's public key: {}", Auth::cryptosign_public_key(&seed));

    let logins = [
        Auth::WampCra { authid: "alice".into(), secret: "alice-secret".into() },
        Auth::Cryptosign { authid: "device-7".into(), seed },
        Auth::WampCra { authid: "alice".into(), secret: "a wrong one".into() },
    ];
    for auth in logins {
        match Client::connect_with(&url, "secure", Options { auth: auth.clone(), ..Options::default() }) {
            Ok(c) => {
                let details = c.welcome_details();
                let get =
                    |k: &str| details.iter().find(|(n, _)| n == k).and_then(|(_, v)| v.as_str().map(str::to_owned));
                println!("joined as {:?} ({:?}), role {:?}", get("authid"), get("authmethod"), get("authrole"));
                c.leave()?;
            }
            Err(Error::Aborted { reason, .. }) => println!("refused: {reason}"),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
