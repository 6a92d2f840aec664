//! `mailroom-fakes`: serves the five fake APIs on one port, for `make demo`.
//! Usage: mailroom-fakes [ADDR] [KEY]   (default 127.0.0.1:0, key `demo-key`)
//! Prints its URL on the first line, then serves until SIGTERM or Ctrl-C.

use mailroom_fakes::{Config, Fake};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let key = args.next().unwrap_or_else(|| "demo-key".into());
    let fake = match Fake::start_on(&addr, Config::with_key(&key)).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("mailroom-fakes: binding {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{}", fake.url);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("mailroom-fakes: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    std::process::ExitCode::SUCCESS
}
