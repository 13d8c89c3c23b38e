//! `cargo bench --bench idle`: how long a message takes from arriving in
//! the mailbox to being recorded and processed, with the service running as
//! deployed and waiting in IMAP IDLE.
//!
//! Starts a private Dovecot (`tests/support`), runs the release binary
//! (`xxdc-intake run`, as systemd would, on SQLite in a temporary folder),
//! waits for a first message to be processed (the workers are then warm, as
//! in service), then APPENDs `XXDC_BENCH_ARRIVALS` (40) registration mails
//! one at a time, half a second apart, and for each measures the time from
//! the APPEND's completion to the message's row reaching `done` (the store
//! is read every 2 ms; a message counts when the number of done messages
//! grows). Prints every latency's p50, p95 and maximum (target: p95 at most
//! 1 s).
//!
//! ```text
//! cargo build --release && cargo bench --bench idle
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Dovecot, message};
use xxdc_intake::store::{MessageState, Store};

fn main() {
    let n = std::env::var("XXDC_BENCH_ARRIVALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(n));
}

async fn done(store: &Store) -> i64 {
    store
        .count_by_state()
        .await
        .expect("count")
        .into_iter()
        .find(|(s, _)| *s == MessageState::Done)
        .map_or(0, |(_, n)| n)
}

/// Waits until `want` messages are done; the time it took.
async fn until_done(store: &Store, want: i64, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < bound {
        if done(store).await >= want {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

async fn bench(n: usize) {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display().to_string();
    std::fs::write(dir.path().join("imap-password"), "secret\n").expect("password");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{d}/xxdc.db\"\n[archive]\ndir = \"{d}/messages\"\n\
             [[source]]\nname = \"idle\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"none\"\nusername = \"alice\"\npassword_file = \"{d}/imap-password\"\n\
             poll_interval = \"10m\"\n",
            dovecot.imap_port
        ),
    )
    .expect("config");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_xxdc-intake"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start xxdc-intake run");

    let mut client = dovecot.client("alice", "secret").await;
    // The store exists once the service has started.
    let store = loop {
        if dir.path().join("xxdc.db").exists()
            && let Ok(store) = Store::open(&format!("sqlite://{d}/xxdc.db")).await
        {
            break store;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client
        .append("INBOX", &message("idle", 0, 6_000, true), None)
        .await;
    until_done(&store, 1, Duration::from_secs(60))
        .await
        .expect("the first message is processed");

    let mut latencies = Vec::with_capacity(n);
    for i in 1..=n {
        // Long enough for the source to be back in IDLE.
        tokio::time::sleep(Duration::from_millis(500)).await;
        client
            .append("INBOX", &message("idle", i, 6_000, true), None)
            .await;
        match until_done(&store, i as i64 + 1, Duration::from_secs(30)).await {
            Some(t) => latencies.push(t),
            None => panic!("message {i} not processed within 30 s"),
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();

    latencies.sort();
    let at = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "IDLE arrival → processed, {} messages: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (target: p95 ≤ 1000 ms)",
        latencies.len(),
        ms(at(0.50)),
        ms(at(0.95)),
        ms(at(1.0)),
    );
}
