//! The worker side: `xxdc-intake __worker MEMORY_MB [--ocr-models DIR]`.
//!
//! The worker limits its own address space, loads the OCR models when it
//! has them (the one time it reads a file), then confines itself
//! ([`super::confine`]: no file system, no sockets, no new programs) and
//! reads jobs from stdin until the parent closes the pipe. Each job runs
//! under its own CPU budget: the soft `RLIMIT_CPU` is set to the CPU used
//! so far plus the job's seconds, so SIGXCPU ends a job that overruns
//! however long the worker has lived. A panic in a reader is caught, turned
//! into the attachment's error, and ends the worker after its answer (its
//! state is not trusted after that).

use std::io::{BufReader, BufWriter, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use super::frame::{self, BadJob, Reply};
use crate::parse::grid::ReadError;

/// The exit code of a worker given arguments or a job it cannot take
/// (EX_USAGE).
pub const EXIT_WORKER_USAGE: i32 = 64;

/// The worker's start arguments (typed and range-checked by the command
/// line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerArgs {
    /// Address space, in MiB.
    pub memory_mb: u64,
    /// The OCR models' folder: scans are read by OCR.
    pub ocr_models: Option<PathBuf>,
}

/// Runs the worker; returns the process exit code.
pub fn worker_main(args: WorkerArgs) -> i32 {
    // A worker never outlives its parent, even one killed with SIGKILL.
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
    {
        eprintln!("附件读取进程无法设置父进程退出信号");
        return 70;
    }
    let memory = args.memory_mb.saturating_mul(1024 * 1024);
    if rlimit::setrlimit(rlimit::Resource::AS, memory, memory).is_err() {
        eprintln!("附件读取进程无法设置内存上限");
        return 70;
    }
    // The models are read now, before the worker gives up the file system;
    // a worker that cannot load them still reads everything but scans.
    let engine = args
        .ocr_models
        .as_deref()
        .map(crate::parse::ocr::load_engine);
    if let Err(e) = super::confine::confine() {
        eprintln!("附件读取进程无法限制自身权限：{e}");
        return 70;
    }

    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    loop {
        let (job, bytes) = match frame::read_job(&mut input) {
            Ok(Some(job)) => job,
            Ok(None) => return 0,
            Err(BadJob::Io(e)) => {
                eprintln!("附件读取进程读取任务失败：{e}");
                return 66;
            }
            Err(BadJob::Refused(why)) => {
                eprintln!("附件读取进程的任务有误：{why}");
                return EXIT_WORKER_USAGE;
            }
        };
        if set_cpu_budget(job.cpu_seconds).is_err() {
            eprintln!("附件读取进程无法设置 CPU 上限");
            return 70;
        }
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut extracted = crate::parse::readers::read(job.format, &bytes, &job.limits)?;
            match &engine {
                Some(Ok(engine)) if extracted.scanned => {
                    engine.read_scan(job.format, &bytes, &job.limits, &mut extracted)?
                }
                Some(Err(error)) if extracted.scanned => return Err(error.clone()),
                _ => {}
            }
            Ok(extracted)
        }));
        let (result, retire) = match read {
            Ok(result) => (result, false),
            Err(_) => (
                Err(ReadError::Damaged(
                    "文件结构异常，读取程序无法处理，文件可能已损坏".into(),
                )),
                true,
            ),
        };
        let reply = Reply { result, retire };
        if frame::write_reply(&mut output, &reply).is_err() {
            return 74;
        }
        if retire {
            let _ = output.flush();
            return 0;
        }
    }
}

/// CPU seconds used by this process so far (all threads, user + system),
/// rounded up.
fn cpu_used() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    secs + u64::from(t.tv_nsec > 0)
}

/// The soft CPU limit: what was used so far plus this job's seconds. The
/// hard limit is left where it was, so that the next job can set its own.
fn set_cpu_budget(seconds: u64) -> std::io::Result<()> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::CPU)?;
    let soft = cpu_used().saturating_add(seconds).min(hard);
    rlimit::setrlimit(rlimit::Resource::CPU, soft, hard)
}
