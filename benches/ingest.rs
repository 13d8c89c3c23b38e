//! `cargo bench --bench ingest`: how fast the IMAP source takes a backlog.
//!
//! Starts a private Dovecot (`tests/support`, its files in `/dev/shm` when
//! there is one), APPENDs a backlog of 5,000 small registration emails (the
//! golden fixtures of 4–20 KB, each made distinct), then, in each of a few
//! rounds, measures:
//!
//! - (a) a bare fetch of the backlog with async-imap (`UID FETCH …
//!   BODY.PEEK[]` in batches of 200 as the source does, nothing kept), the
//!   floor for any client;
//! - (b) `sources::poll_once` into a fresh SQLite store under the temporary
//!   folder: every message archived (one file each) and recorded in the
//!   ledger, and the whole round flushed to disk at its end. Processing is
//!   separate (see `benches/parse.rs`).
//!
//! Prints messages per second, the CPU time of this process, the ratio of
//! (b) to (a) per round and its median (target: under 1.5), and the peak
//! resident memory (`VmHWM`, target: under 100 MB).
//!
//! The disk matters: on an ext4 without a journal (as on this project's
//! VMs) the kernel skips inodes deleted in the last one to six minutes when
//! it allocates new ones (`recently_deleted` in `fs/ext4/ialloc.c`), so
//! right after many files were deleted (a test run, an earlier run of this
//! bench, a build) every file creation can cost a millisecond instead of
//! tens of microseconds. The bench prints what a file creation costs before
//! it measures; for steady figures run it on a disk left alone for six
//! minutes, or set `XXDC_BENCH_SETTLE` (seconds to wait after seeding).
//! `XXDC_BENCH_MESSAGES` sets another backlog size, `XXDC_BENCH_ROUNDS`
//! the number of rounds (3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use support::{Dovecot, TestApp, imap_source};
use xxdc_intake::service::sources;

fn main() {
    let n = env_number("XXDC_BENCH_MESSAGES", 5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(n));
}

async fn bench(n: usize) {
    let templates = templates();
    // The server's files live in memory when possible: while APPENDing,
    // Dovecot rewrites its uidlist and index files thousands of times, and
    // on a journal-less ext4 (as on this project's VMs) every deleted inode
    // slows down the next file creations in that part of the disk for a
    // minute or more (the kernel's `recently_deleted` check). Those would be
    // the server's costs charged to our archive.
    let shm = Path::new("/dev/shm");
    let dovecot = if shm.is_dir() {
        Dovecot::start_in(shm)
    } else {
        Dovecot::start()
    };

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
    // Flush the seeding's writes, so that their writeback does not throttle
    // what is measured.
    let _ = std::process::Command::new("sync").status();
    let settle = env_number("XXDC_BENCH_SETTLE", 0);
    if settle > 0 {
        println!("waiting {settle} s for the disk to settle");
        tokio::time::sleep(Duration::from_secs(settle as u64)).await;
    }
    let (calibration, _calibration_files) = file_creation_cost();
    println!(
        "creating an 8.7 KB file here now costs {:.0} µs (an idle disk: 20–60 µs; see the note at the top)",
        calibration.as_secs_f64() * 1e6
    );

    // Warm Dovecot's index and the page cache, so every timing sees the
    // same server.
    let _ = bare_fetch(&dovecot).await;
    let rss_bare = peak_rss_kb();
    let rounds = env_number("XXDC_BENCH_ROUNDS", 3).max(1);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mut ratios = Vec::new();
    // Every round ingests into a store of its own; all are removed at the
    // end, so no deletion happens between rounds.
    let mut apps = Vec::new();
    for round in 1..=rounds {
        let cpu = cpu_seconds();
        let (fetched, fetched_bytes, bare) = bare_fetch(&dovecot).await;
        let bare_cpu = cpu_seconds() - cpu;
        assert_eq!(fetched, n, "bare fetch");

        let t = TestApp::open(&imap_source("bench", dovecot.imap_port, "alice", "")).await;
        let source = t.source("bench");
        let cpu = cpu_seconds();
        let machine = machine_ticks();
        let started = Instant::now();
        let taken = sources::poll_once(&source, &t.ctx)
            .await
            .expect("poll_once");
        let ingest = started.elapsed();
        let ingest_cpu = cpu_seconds() - cpu;
        let machine = machine_ticks().since(machine);
        assert_eq!(taken, n, "poll_once");
        assert_eq!(t.entries().await, n as i64);
        apps.push(t);

        let ratio = ingest.as_secs_f64() / bare.as_secs_f64();
        ratios.push(ratio);
        println!("round {round}:");
        println!(
            "  (a) bare fetch:      {:>5.2} s  {:>6.0} messages/s  {:>5.1} MB/s  (CPU of this process {:.2} s)",
            bare.as_secs_f64(),
            rate(bare),
            fetched_bytes as f64 / 1e6 / bare.as_secs_f64(),
            bare_cpu
        );
        println!(
            "  (b) ingest (SQLite): {:>5.2} s  {:>6.0} messages/s  ratio to (a): {ratio:.2}  (CPU of this process {ingest_cpu:.2} s; the machine's cores: {:.0}% busy, {:.0}% waiting for the disk)",
            ingest.as_secs_f64(),
            rate(ingest),
            machine.busy * 100.0,
            machine.iowait * 100.0,
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio of ingest to bare fetch over {rounds} rounds: {:.2} (target < 1.5)",
        ratios[ratios.len() / 2]
    );
    println!(
        "peak RSS (VmHWM): {:.1} MB after seeding, {:.1} MB after a bare fetch, {:.1} MB after the ingests (target < 100 MB)",
        rss_seed as f64 / 1024.0,
        rss_bare as f64 / 1024.0,
        peak_rss_kb() as f64 / 1024.0
    );
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The average time to create, write and close one 8.7 KB file in the
/// temporary folder (where the ingests keep their archives), and the folder
/// holding those files: keep it until the end, as deleting it now would
/// slow down the creations measured next.
fn file_creation_cost() -> (Duration, tempfile::TempDir) {
    const FILES: u32 = 500;
    let dir = tempfile::Builder::new()
        .prefix("xxdc-bench-calibration-")
        .tempdir()
        .expect("temp dir");
    let body = vec![b'x'; 8_700];
    let started = Instant::now();
    for i in 0..FILES {
        std::fs::write(dir.path().join(format!("{i}.eml")), &body).expect("write");
    }
    (started.elapsed() / FILES, dir)
}

/// Fetches every message of alice's INBOX in batches of 200 (as the source) and throws it
/// away: (messages, bytes, time).
async fn bare_fetch(dovecot: &Dovecot) -> (usize, usize, Duration) {
    let started = Instant::now();
    let mut client = dovecot.client("alice", "secret").await;
    let uids = client.uids("INBOX").await;
    let mut count = 0;
    let mut bytes = 0;
    for chunk in uids.chunks(200) {
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
/// User + system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks,
    // counted after the command name, which may hold spaces.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's CPU time by state (`/proc/stat`, all cores), in ticks.
#[derive(Clone, Copy, Default)]
struct Ticks {
    busy: f64,
    idle: f64,
    iowait: f64,
}

/// Shares of the machine's CPU time between two readings.
struct Shares {
    busy: f64,
    iowait: f64,
}

impl Ticks {
    fn since(self, earlier: Ticks) -> Shares {
        let busy = self.busy - earlier.busy;
        let idle = self.idle - earlier.idle;
        let iowait = self.iowait - earlier.iowait;
        let all = (busy + idle + iowait).max(1.0);
        Shares {
            busy: busy / all,
            iowait: iowait / all,
        }
    }
}

fn machine_ticks() -> Ticks {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return Ticks::default();
    };
    // cpu user nice system idle iowait irq softirq steal …
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    Ticks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        idle: at(3),
        iowait: at(4),
    }
}
