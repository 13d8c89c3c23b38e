//! The parent side of the reader workers: a pool of warm child processes.
//!
//! Starting a process per attachment (exec of a large binary, relocation,
//! page faults, for OCR also loading and planning the models) cost far more
//! than reading a form. A worker stays alive and reads one attachment after
//! another over its pipes ([`super::frame`]); the per-job limits are
//! enforced as before: the worker sets its own CPU limit for each job, the
//! parent kills it at the job's wall deadline or when its answer grows past
//! the output bound, and its address-space limit holds for its whole life.
//!
//! A worker is replaced after it dies, after a limit, after a panic it
//! caught, after `max_jobs` jobs and once its peak memory passed
//! `max_peak_mb`. A job whose worker died for no reason of its own (killed
//! from outside, crashed) is tried once more on a fresh worker; then its
//! error is recorded, for that attachment only.
//!
//! Workers come in classes: the address-space limit and the OCR models are
//! fixed at start, so an OCR job (2 GiB, models loaded once and kept warm)
//! never runs in a spreadsheet worker (1 GiB). Each class has at most
//! `workers` processes, so that a scan now and then does not evict the warm
//! spreadsheet readers (nor they the OCR worker and its loaded models);
//! no more jobs run at once than messages are processed in parallel.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::frame::{self, Job, NoReply, Reply};
use super::{ChildLimits, crash_error};
use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// How many workers, and when one is replaced (`[workers]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Worker processes at most; 0: one per CPU core.
    pub count: usize,
    /// Jobs a worker reads before it is replaced.
    pub max_jobs: u64,
    /// A worker whose peak resident memory passed this (MiB) is replaced
    /// after its job.
    pub max_peak_mb: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            count: 0,
            max_jobs: 500,
            max_peak_mb: 512,
        }
    }
}

impl PoolConfig {
    /// The number of workers: `count`, or the CPU cores when it is 0.
    pub fn workers(&self) -> usize {
        match self.count {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }
}

/// What the workers did, for the log and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub jobs: u64,
    pub started: u64,
    /// Replaced after `max_jobs`.
    pub recycled_jobs: u64,
    /// Replaced after passing `max_peak_mb`.
    pub recycled_memory: u64,
    /// Killed at a job's wall deadline or output bound.
    pub killed: u64,
    /// Died during a job (a limit of its own, a crash, killed from outside).
    pub died: u64,
    /// Jobs tried again on a fresh worker.
    pub retried: u64,
}

#[derive(Default)]
struct Counters {
    jobs: AtomicU64,
    started: AtomicU64,
    recycled_jobs: AtomicU64,
    recycled_memory: AtomicU64,
    killed: AtomicU64,
    died: AtomicU64,
    retried: AtomicU64,
}

/// The worker processes of one program.
pub struct Pool {
    exe: PathBuf,
    config: PoolConfig,
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
    counters: Counters,
}

#[derive(Default)]
struct State {
    idle: Vec<Worker>,
    /// Workers in existence per class: idle, busy, or being started.
    live: Vec<(Class, usize)>,
    /// The process ids of the started ones.
    pids: Vec<u32>,
}

/// What a worker is fixed to at start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    memory_mb: u64,
    ocr_models: Option<PathBuf>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("exe", &self.exe)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool of workers of the program `exe` (this binary); none is started
    /// before the first job.
    pub fn new(exe: PathBuf, config: PoolConfig) -> Self {
        Self {
            exe,
            config,
            size: config.workers().max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
            counters: Counters::default(),
        }
    }

    /// Reads `bytes` as `format` in a worker under `child` limits; with
    /// `ocr_models`, a scan is read by OCR.
    pub fn read(
        &self,
        child: &ChildLimits,
        format: Format,
        bytes: &[u8],
        limits: &ReadLimits,
        ocr_models: Option<&std::path::Path>,
    ) -> Result<Extracted, ReadError> {
        let class = Class {
            memory_mb: child.memory_mb,
            ocr_models: ocr_models.map(PathBuf::from),
        };
        let job = Job {
            format,
            limits: *limits,
            cpu_seconds: child.cpu_seconds,
        };
        self.counters.jobs.fetch_add(1, Ordering::Relaxed);
        let mut tried = false;
        loop {
            let mut worker = self.checkout(&class)?;
            let ran = worker.run(&job, bytes, child);
            let keep = match &ran {
                Ran::Done(reply) => !reply.retire && self.keep(&worker),
                _ => false,
            };
            self.checkin(worker, keep);
            match ran {
                Ran::Done(reply) => return reply.result,
                Ran::Stopped(error) => {
                    self.counters.killed.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
                Ran::Died(death) => {
                    self.counters.died.fetch_add(1, Ordering::Relaxed);
                    // A limit of the job's own (CPU, memory) would only be
                    // reached again; any other death may be the worker's, not
                    // the file's: once more on a fresh worker.
                    if death.own_limit || tried {
                        return Err(death.error);
                    }
                    tried = true;
                    self.counters.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %death.error, "reader worker died, job tried again");
                }
            }
        }
    }

    /// What the workers did so far.
    pub fn stats(&self) -> PoolStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            jobs: get(&c.jobs),
            started: get(&c.started),
            recycled_jobs: get(&c.recycled_jobs),
            recycled_memory: get(&c.recycled_memory),
            killed: get(&c.killed),
            died: get(&c.died),
            retried: get(&c.retried),
        }
    }

    /// The process ids of the live workers, idle or busy (for tests and
    /// diagnostics).
    pub fn worker_pids(&self) -> Vec<u32> {
        let mut pids = self.lock().pids.clone();
        pids.sort_unstable();
        pids
    }

    fn keep(&self, worker: &Worker) -> bool {
        if worker.jobs >= self.config.max_jobs.max(1) {
            self.counters.recycled_jobs.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // `/proc/PID/status` costs as much as a small job: looked at every
        // few jobs (a worker's peak only grows).
        if worker.jobs.is_multiple_of(PEAK_EVERY)
            && worker.peak_kb() / 1024 >= self.config.max_peak_mb
        {
            self.counters
                .recycled_memory
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left the lists consistent: every
        // change to them is a single push, remove or count.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle worker of `class`, else a new one while the class has room;
    /// else waits for one.
    fn checkout(&self, class: &Class) -> Result<Worker, ReadError> {
        let mut state = self.lock();
        loop {
            if let Some(i) = state.idle.iter().position(|w| w.class == *class) {
                return Ok(state.idle.swap_remove(i));
            }
            if state.live_of(class) < self.size {
                state.count(class, 1);
                drop(state);
                return self.start(class);
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Starts a worker in a slot already counted in `live`.
    fn start(&self, class: &Class) -> Result<Worker, ReadError> {
        match Worker::start(&self.exe, class) {
            Ok(worker) => {
                self.counters.started.fetch_add(1, Ordering::Relaxed);
                self.lock().pids.push(worker.child.id());
                Ok(worker)
            }
            Err(e) => {
                self.lock().count(class, -1);
                self.freed.notify_all();
                Err(ReadError::Damaged(format!("无法启动附件读取进程：{e}")))
            }
        }
    }

    /// Gives a worker back: kept idle, or ended and its slot freed.
    fn checkin(&self, mut worker: Worker, keep: bool) {
        let retired = if keep && worker.alive() {
            self.lock().idle.push(worker);
            None
        } else {
            let mut state = self.lock();
            state.count(&worker.class, -1);
            let pid = worker.child.id();
            state.pids.retain(|&p| p != pid);
            Some(worker)
        };
        self.freed.notify_all();
        if let Some(w) = retired {
            w.stop();
        }
    }
}

impl State {
    fn live_of(&self, class: &Class) -> usize {
        self.live
            .iter()
            .find(|(c, _)| c == class)
            .map_or(0, |(_, n)| *n)
    }

    fn count(&mut self, class: &Class, delta: isize) {
        match self.live.iter_mut().find(|(c, _)| c == class) {
            Some((_, n)) => *n = n.saturating_add_signed(delta),
            None => self.live.push((class.clone(), delta.max(0).unsigned_abs())),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        for w in idle {
            w.stop();
        }
    }
}

/// How one job on a worker ended.
enum Ran {
    /// The worker answered (the read may still have failed).
    Done(Reply),
    /// The parent stopped the worker: wall deadline, output bound, a bad
    /// answer.
    Stopped(ReadError),
    /// The worker died during the job.
    Died(Death),
}

struct Death {
    error: ReadError,
    /// The job's own limit stopped it (CPU, memory): not worth a retry.
    own_limit: bool,
}

struct Worker {
    class: Class,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Non-blocking: answers are read by the job's own thread, against the
    /// job's deadline.
    stdout: Option<ChildStdout>,
    /// The end of what the worker wrote on stderr (a panic, an allocation
    /// failure), for the error of a worker that died.
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    jobs: u64,
}

/// Jobs between two looks at a worker's peak memory.
const PEAK_EVERY: u64 = 8;

/// Bytes of the worker's stderr kept.
const STDERR_TAIL: usize = 4096;

impl Worker {
    fn start(exe: &PathBuf, class: &Class) -> std::io::Result<Worker> {
        let mut command = Command::new(exe);
        command.arg("__worker").arg(class.memory_mb.to_string());
        if let Some(models) = &class.ocr_models {
            command.arg("--ocr-models").arg(models);
        }
        let mut child = command
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let (stdout, stderr_pipe) = (child.stdout.take(), child.stderr.take());
        if let Some(out) = &stdout {
            let flags = rustix::fs::fcntl_getfl(out)?;
            rustix::fs::fcntl_setfl(out, flags | rustix::fs::OFlags::NONBLOCK)?;
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        if let Some(mut err) = stderr_pipe {
            let tail = Arc::clone(&stderr);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            }));
        }
        Ok(Worker {
            class: class.clone(),
            child,
            stdin,
            stdout,
            stderr,
            threads,
            jobs: 0,
        })
    }

    /// The worker's peak resident memory (`VmHWM`), in KiB; read by the
    /// parent because the confined worker cannot open `/proc`.
    fn peak_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn run(&mut self, job: &Job, bytes: &[u8], limits: &ChildLimits) -> Ran {
        self.jobs += 1;
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let deadline = Instant::now() + Duration::from_secs(limits.timeout_seconds.max(1));
        let sent = match self.stdin.as_mut() {
            Some(stdin) => frame::write_job(stdin, job, bytes).and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        let answer = match (sent, self.stdout.as_mut()) {
            (Ok(()), Some(out)) => frame::read_reply_until(out, limits.max_output_bytes, deadline),
            // The worker is gone: its end of the pipe closed.
            _ => Err(NoReply::Closed),
        };
        match answer {
            Ok(bytes) => match serde_json::from_slice::<Reply>(&bytes) {
                Ok(reply) => Ran::Done(reply),
                Err(e) => {
                    self.kill();
                    Ran::Stopped(ReadError::Damaged(format!("附件读取进程输出无法解析：{e}")))
                }
            },
            Err(NoReply::TooLong(_)) => {
                self.kill();
                Ran::Stopped(ReadError::TooLarge(format!(
                    "读取结果超过输出上限 {} 字节",
                    limits.max_output_bytes
                )))
            }
            Err(NoReply::Timeout) => {
                self.kill();
                Ran::Stopped(ReadError::TooLarge(format!(
                    "读取超时：超过 {} 秒仍未读完，已中止",
                    limits.timeout_seconds
                )))
            }
            Err(NoReply::Closed) => Ran::Died(self.death(limits)),
        }
    }

    /// Why the worker died, once it has.
    fn death(&mut self, limits: &ChildLimits) -> Death {
        self.stdin = None;
        self.stdout = None;
        let status = self.child.wait();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let stderr = String::from_utf8_lossy(&tail);
        match status {
            Ok(status) => {
                let error = crash_error(status, &stderr, limits);
                Death {
                    own_limit: super::is_limit_death(status, &stderr),
                    error,
                }
            }
            Err(e) => Death {
                error: ReadError::Damaged(format!("等待附件读取进程失败：{e}")),
                own_limit: false,
            },
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
        self.stdout = None;
    }

    /// Ends the worker: closing its stdin ends its loop; it is killed too,
    /// so that a worker never outlives its use.
    fn stop(mut self) {
        self.kill();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
