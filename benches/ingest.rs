//! `cargo bench --bench ingest`: how fast the IMAP source takes a backlog.
//!
//! Starts a private Dovecot (`tests/support`), APPENDs a backlog of 5,000
//! small registration emails (the golden fixtures of 4–20 KB, each made
//! distinct), then measures:
//!
//! - (a) a bare fetch of the backlog with async-imap (`UID FETCH …
//!   BODY.PEEK[]` in batches of 50, nothing kept), the floor for any client;
//! - (b) `sources::poll_once` into SQLite: every message archived (one
//!   file each) and recorded in the ledger, one transaction per fetched
//!   batch, the whole round flushed to disk once at its end. Processing is
//!   separate (see `benches/parse.rs`).
//!
//! Prints messages per second, the ratio of (b) to (a) (target: under 1.5)
//! and the peak resident memory of this process (`VmHWM`, target: under
//! 100 MB). `XXDC_BENCH_MESSAGES` sets another backlog size.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use support::{Dovecot, TestApp, imap_source};
use xxdc_intake::sources;

fn main() {
    let n: usize = std::env::var("XXDC_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(n));
}

async fn bench(n: usize) {
    let templates = templates();
    let dovecot = Dovecot::start();

    let started = Instant::now();
    let mut client = dovecot.client("alice", "secret").await;
    let mut bytes = 0usize;
    for i in 0..n {
        let raw = distinct(&templates[i % templates.len()], i);
        bytes += raw.len();
        client.append("INBOX", &raw, None).await;
    }
    client.logout().await;
    println!(
        "backlog: {n} messages, {:.1} MB, average {:.1} KB, APPENDed in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64 / 1e3,
        started.elapsed().as_secs_f64()
    );
    let rss_seed = peak_rss_kb();
    // Flush the seeding's writes first, so that their writeback does not
    // throttle the ingest being measured.
    let _ = std::process::Command::new("sync").status();

    // Warm Dovecot's index and the page cache, so both timings see the same
    // server.
    let _ = bare_fetch(&dovecot).await;
    let (fetched, fetched_bytes, bare) = bare_fetch(&dovecot).await;
    assert_eq!(fetched, n, "bare fetch");
    let rss_bare = peak_rss_kb();

    let t = TestApp::open(&imap_source("bench", dovecot.imap_port, "alice", "")).await;
    let source = t.source("bench");
    let started = Instant::now();
    let taken = sources::poll_once(&source, &t.ctx)
        .await
        .expect("poll_once");
    let ingest = started.elapsed();
    assert_eq!(taken, n, "poll_once");
    assert_eq!(t.entries().await, n as i64);
    let rss_ingest = peak_rss_kb();

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "(a) bare fetch:     {:>7.2} s  {:>8.0} messages/s  {:>6.1} MB/s",
        bare.as_secs_f64(),
        rate(bare),
        fetched_bytes as f64 / 1e6 / bare.as_secs_f64()
    );
    println!(
        "(b) ingest (SQLite): {:>6.2} s  {:>8.0} messages/s  ratio to (a): {:.2} (target < 1.5)",
        ingest.as_secs_f64(),
        rate(ingest),
        ingest.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "peak RSS (VmHWM): {:.1} MB after seeding, {:.1} MB after the bare fetch, {:.1} MB after ingest (target < 100 MB)",
        rss_seed as f64 / 1024.0,
        rss_bare as f64 / 1024.0,
        rss_ingest as f64 / 1024.0
    );
}

/// Fetches every message of alice's INBOX in batches of 50 and throws it
/// away: (messages, bytes, time).
async fn bare_fetch(dovecot: &Dovecot) -> (usize, usize, Duration) {
    let started = Instant::now();
    let mut client = dovecot.client("alice", "secret").await;
    let uids = client.uids("INBOX").await;
    let mut count = 0;
    let mut bytes = 0;
    for chunk in uids.chunks(50) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut stream = client
            .session
            .uid_fetch(&set, "(UID BODY.PEEK[])")
            .await
            .expect("fetch");
        while let Some(fetch) = stream.try_next().await.expect("fetch") {
            bytes += fetch.body().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    client.logout().await;
    (count, bytes, started.elapsed())
}

/// Golden fixtures of 4–20 KB: typical registration emails.
fn templates() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/cases");
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    names.sort();
    for path in names {
        let raw = std::fs::read(&path).expect("read fixture");
        if (4_000..=20_000).contains(&raw.len()) {
            out.push(raw);
        }
    }
    assert!(
        !out.is_empty(),
        "no fixtures of 4–20 KB in {}",
        dir.display()
    );
    out
}

/// A copy with its own Message-ID, so every message is distinct.
fn distinct(template: &[u8], i: usize) -> Vec<u8> {
    let mut out = format!("Message-ID: <bench-{i}@units.test>\r\n").into_bytes();
    let mut rest = template;
    // Drop the template's own Message-ID line.
    if let Some(at) = find(template, b"Message-ID:")
        && let Some(end) = find(&template[at..], b"\n")
    {
        out.extend_from_slice(&template[..at]);
        rest = &template[at + end + 1..];
    }
    out.extend_from_slice(rest);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Peak resident memory of this process, in KB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
