//! Reading attachments in child processes with hard limits.
//!
//! calamine's xls and xlsx readers can `abort()` the whole process on a 6 KB
//! crafted or truncated file (an allocation of hundreds of GB), and the PDF
//! and xlsb readers panic on corrupt input. An abort cannot be caught, so
//! attachments are read by children — this same binary, started with the
//! hidden `__worker` subcommand — under an address-space limit, a CPU limit
//! per job, a wall-clock deadline per job and a bound on what they may
//! answer, confined so that they can neither open a file nor a socket nor
//! start a program ([`confine`]). A crash, an abort or a timeout becomes an
//! error for that attachment only; the parent carries on with the rest.
//!
//! The children are warm workers kept in a [`pool::Pool`]: one reads one
//! attachment after another over its pipes ([`frame`]), so a message costs
//! a few pipe writes, not a process start (and an OCR worker loads its
//! models once). [`worker`] is the child's side.

pub mod confine;
pub mod frame;
pub mod pool;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// The read limits as a job carries them: a JSON object with every key of
/// [`ReadLimits`] and no other. A missing key is refused, not defaulted.
pub fn limits_from_value(given: serde_json::Value) -> Result<ReadLimits, String> {
    let all = serde_json::to_value(ReadLimits::default()).unwrap_or_default();
    let (Some(given_keys), Some(all_keys)) = (given.as_object(), all.as_object()) else {
        return Err("读取上限应为 JSON 对象".into());
    };
    if let Some(missing) = all_keys.keys().find(|k| !given_keys.contains_key(*k)) {
        return Err(format!("读取上限缺少 {missing}"));
    }
    serde_json::from_value(given).map_err(|e| format!("读取上限有误（{e}）"))
}

/// Limits of reading one attachment in a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChildLimits {
    /// Address space of the worker, in MiB.
    pub memory_mb: u64,
    /// CPU seconds of one job.
    pub cpu_seconds: u64,
    /// Wall-clock seconds of one job before the worker is killed.
    pub timeout_seconds: u64,
    /// Bytes the worker may answer for one job (its JSON grid).
    pub max_output_bytes: usize,
}

impl Default for ChildLimits {
    fn default() -> Self {
        Self {
            memory_mb: 1024,
            cpu_seconds: 20,
            timeout_seconds: 30,
            max_output_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Where attachments are read.
#[derive(Debug, Clone)]
pub enum Isolation {
    /// In the worker processes of `pool`, under `limits` per job.
    Workers {
        pool: Arc<pool::Pool>,
        limits: ChildLimits,
    },
    /// In this process. Only for trusted input (unit tests, benchmarks of
    /// the readers themselves): a hostile file can abort the process.
    InProcess,
}

impl Isolation {
    /// Workers of the program `exe` (the xxdc-intake binary).
    pub fn workers(exe: PathBuf, limits: ChildLimits, config: pool::PoolConfig) -> Self {
        Isolation::Workers {
            pool: Arc::new(pool::Pool::new(exe, config)),
            limits,
        }
    }

    /// Workers of the running binary.
    pub fn current_exe(limits: ChildLimits, config: pool::PoolConfig) -> Self {
        match std::env::current_exe() {
            Ok(exe) => Self::workers(exe, limits, config),
            Err(_) => Isolation::InProcess,
        }
    }

    /// What the workers did so far (nothing in process).
    pub fn stats(&self) -> pool::PoolStats {
        match self {
            Isolation::Workers { pool, .. } => pool.stats(),
            Isolation::InProcess => pool::PoolStats::default(),
        }
    }
}

/// OCR of scans: the models' folder and the child limits a read that may
/// OCR runs under (a model needs more memory and time than a spreadsheet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcrSetup {
    pub models: PathBuf,
    pub limits: ChildLimits,
}

/// Reads `bytes` as `format` under `isolation`; with `ocr`, a scan (an
/// image or an image-only PDF) is read by OCR too.
pub fn read(
    isolation: &Isolation,
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
    ocr: Option<&OcrSetup>,
) -> Result<Extracted, ReadError> {
    let ocr = ocr.filter(|_| matches!(format, Format::Image | Format::Pdf));
    match isolation {
        Isolation::InProcess => crate::parse::readers::read_with_ocr(
            format,
            bytes,
            limits,
            ocr.map(|o| o.models.as_path()),
        ),
        Isolation::Workers {
            pool,
            limits: child,
        } => {
            // A PDF is read by an ordinary worker first: most have a text
            // layer, and only a scanned one goes on to the OCR worker (whose
            // models are loaded once; no reason to keep it for text).
            if format == Format::Pdf && ocr.is_some() {
                let read = pool.read(child, format, bytes, limits, None);
                if !matches!(&read, Ok(e) if e.scanned) {
                    return read;
                }
            }
            match ocr {
                Some(o) => pool.read(&o.limits, format, bytes, limits, Some(&o.models)),
                None => pool.read(child, format, bytes, limits, None),
            }
        }
    }
}

/// Whether a worker's death was a limit of the job's own (CPU, memory, a
/// job it refused), which another worker would reach again.
fn is_limit_death(status: std::process::ExitStatus, stderr: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let memory = stderr.contains("memory allocation") || stderr.contains("capacity overflow");
    match status.signal() {
        Some(libc::SIGXCPU) => true,
        Some(libc::SIGABRT) => memory,
        _ => status.code() == Some(worker::EXIT_WORKER_USAGE),
    }
}

fn crash_error(status: std::process::ExitStatus, stderr: &str, limits: &ChildLimits) -> ReadError {
    use std::os::unix::process::ExitStatusExt;
    let memory = stderr.contains("memory allocation") || stderr.contains("capacity overflow");
    match status.signal() {
        Some(libc::SIGXCPU) => ReadError::TooLarge(format!(
            "读取超出处理时间上限（CPU {} 秒），已中止",
            limits.cpu_seconds
        )),
        Some(libc::SIGABRT) if memory => ReadError::TooLarge(format!(
            "读取所需内存超出上限 {} MB，已中止",
            limits.memory_mb
        )),
        Some(libc::SIGKILL) => {
            ReadError::Damaged("附件读取进程被系统终止（可能内存不足），已中止".into())
        }
        Some(sig) => ReadError::Damaged(format!(
            "文件导致读取程序异常终止（信号 {sig}），文件可能已损坏"
        )),
        None if status.code() == Some(worker::EXIT_WORKER_USAGE) => ReadError::Damaged(
            stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("附件读取进程拒绝了参数")
                .to_string(),
        ),
        None if stderr.contains("panicked") => {
            ReadError::Damaged("文件结构异常，读取程序无法处理，文件可能已损坏".into())
        }
        None => ReadError::Damaged(format!(
            "读取程序异常退出（退出码 {}）",
            status.code().unwrap_or(-1)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits as a job's header text carries them.
    fn limits_from_arg(text: &str) -> Result<ReadLimits, String> {
        let given: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("读取上限不是有效的 JSON（{e}）"))?;
        limits_from_value(given)
    }

    #[test]
    fn limits_argument_must_carry_every_key() {
        let full = serde_json::to_string(&ReadLimits::default()).expect("json");
        assert_eq!(limits_from_arg(&full), Ok(ReadLimits::default()));
        assert!(limits_from_arg("{}").unwrap_err().contains("缺少"));
        assert!(limits_from_arg("not json").is_err());
        assert!(limits_from_arg("[1, 2]").is_err());
        let unknown = full.replacen('{', "{\"max_bogus\": 1, ", 1);
        assert!(limits_from_arg(&unknown).is_err());
        let wrong_type = full.replace("20000", "\"many\"");
        assert!(limits_from_arg(&wrong_type).is_err());
    }

    #[test]
    fn a_refused_argument_is_the_attachment_error() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(worker::EXIT_WORKER_USAGE << 8);
        let stderr = "附件读取进程的任务有误：不认识的文件格式“x”\n";
        let error = crash_error(status, stderr, &ChildLimits::default());
        assert_eq!(
            error,
            ReadError::Damaged("附件读取进程的任务有误：不认识的文件格式“x”".into())
        );
        assert!(is_limit_death(status, stderr), "refused again elsewhere");
    }
}
