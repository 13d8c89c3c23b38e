//! Reading one attachment in a child process with hard limits.
//!
//! calamine's xls and xlsx readers can `abort()` the whole process on a 6 KB
//! crafted or truncated file (an allocation of hundreds of GB), and the PDF
//! and xlsb readers panic on corrupt input. An abort cannot be caught, so
//! each attachment is read by a child — this same binary, started with the
//! hidden `__read` subcommand — under an address-space limit, a CPU limit,
//! a wall-clock timeout and a bound on what it may print. A crash, an abort
//! or a timeout becomes an error for that attachment only; the parent
//! carries on with the rest of the message.
//!
//! Protocol: the parent writes the attachment's bytes to the child's stdin;
//! the child prints one JSON `Result<Extracted, ReadError>` on stdout.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// Limits of the child process that reads one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChildLimits {
    /// Address space of the child, in MiB.
    pub memory_mb: u64,
    /// CPU seconds of the child.
    pub cpu_seconds: u64,
    /// Wall-clock seconds before the child is killed.
    pub timeout_seconds: u64,
    /// Bytes the child may print (its JSON grid).
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
    /// In a child process of `exe` (the xxdc-intake binary).
    Child { exe: PathBuf, limits: ChildLimits },
    /// In this process. Only for trusted input (unit tests, benchmarks of
    /// the readers themselves): a hostile file can abort the process.
    InProcess,
}

impl Isolation {
    /// Child processes of the running binary.
    pub fn current_exe(limits: ChildLimits) -> Self {
        match std::env::current_exe() {
            Ok(exe) => Isolation::Child { exe, limits },
            Err(_) => Isolation::InProcess,
        }
    }
}

/// Reads `bytes` as `format` under `isolation`.
pub fn read(
    isolation: &Isolation,
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
) -> Result<Extracted, ReadError> {
    match isolation {
        Isolation::InProcess => crate::parse::readers::read(format, bytes, limits),
        Isolation::Child { exe, limits: child } => read_in_child(exe, child, format, bytes, limits),
    }
}

fn read_in_child(
    exe: &PathBuf,
    child_limits: &ChildLimits,
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
) -> Result<Extracted, ReadError> {
    let limits_json = serde_json::to_string(limits).unwrap_or_default();
    let mut child = Command::new(exe)
        .arg("__read")
        .arg(format.as_arg())
        .arg(&limits_json)
        .arg(child_limits.memory_mb.to_string())
        .arg(child_limits.cpu_seconds.to_string())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ReadError::Damaged(format!("无法启动附件读取进程：{e}")))?;

    // Feed and drain on threads so that neither pipe can fill up and block.
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A child that exits early closes the pipe; that is not our error.
            let _ = s.write_all(&input);
        }
    });
    let cap = child_limits.max_output_bytes;
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || bounded_read(stdout, cap));
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || bounded_read(stderr, 4096));

    let timeout = Duration::from_secs(child_limits.timeout_seconds.max(1));
    let status = match child.wait_timeout(timeout) {
        Ok(Some(status)) => Some(status),
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
        Err(e) => return Err(ReadError::Damaged(format!("等待附件读取进程失败：{e}"))),
    };
    let _ = writer.join();
    let (out, truncated) = reader.join().unwrap_or_default();
    let (err_text, _) = err_reader.join().unwrap_or_default();

    let Some(status) = status else {
        return Err(ReadError::TooLarge(format!(
            "读取超时：超过 {} 秒仍未读完，已中止",
            child_limits.timeout_seconds
        )));
    };
    if truncated {
        return Err(ReadError::TooLarge(format!(
            "读取结果超过输出上限 {} 字节",
            cap
        )));
    }
    if !status.success() {
        return Err(crash_error(
            status,
            &String::from_utf8_lossy(&err_text),
            child_limits,
        ));
    }
    serde_json::from_slice::<Result<Extracted, ReadError>>(&out)
        .map_err(|e| ReadError::Damaged(format!("附件读取进程输出无法解析：{e}")))?
}

fn crash_error(status: std::process::ExitStatus, stderr: &str, limits: &ChildLimits) -> ReadError {
    use std::os::unix::process::ExitStatusExt;
    let memory = stderr.contains("memory allocation") || stderr.contains("capacity overflow");
    match status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => ReadError::TooLarge(format!(
            "读取超出处理时间上限（CPU {} 秒），已中止",
            limits.cpu_seconds
        )),
        Some(libc::SIGABRT) if memory => ReadError::TooLarge(format!(
            "读取所需内存超出上限 {} MB，已中止",
            limits.memory_mb
        )),
        Some(sig) => ReadError::Damaged(format!(
            "文件导致读取程序异常终止（信号 {sig}），文件可能已损坏"
        )),
        None if stderr.contains("panicked") => {
            ReadError::Damaged("文件结构异常，读取程序无法处理，文件可能已损坏".into())
        }
        None => ReadError::Damaged(format!(
            "读取程序异常退出（退出码 {}）",
            status.code().unwrap_or(-1)
        )),
    }
}

/// Reads at most `cap` bytes; the flag tells whether more was offered.
fn bounded_read<R: Read>(source: Option<R>, cap: usize) -> (Vec<u8>, bool) {
    let Some(source) = source else {
        return (Vec::new(), false);
    };
    let mut buf = Vec::new();
    let mut limited = source.take(cap as u64 + 1);
    let _ = limited.read_to_end(&mut buf);
    let truncated = buf.len() > cap;
    buf.truncate(cap);
    // Drain the rest so the child is not blocked on a full pipe.
    let mut rest = limited.into_inner();
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
    (buf, truncated)
}

/// The child side: applies the limits to itself, reads stdin, prints the
/// result. Returns the process exit code.
pub fn child_main(format: &str, limits_json: &str, memory_mb: &str, cpu_seconds: &str) -> i32 {
    let memory = memory_mb
        .parse::<u64>()
        .unwrap_or(1024)
        .saturating_mul(1024 * 1024);
    let cpu = cpu_seconds.parse::<u64>().unwrap_or(20);
    if rlimit::setrlimit(rlimit::Resource::AS, memory, memory).is_err()
        || rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu.saturating_add(1)).is_err()
    {
        eprintln!("cannot set resource limits");
        return 70;
    }
    let Some(format) = Format::from_arg(format) else {
        eprintln!("unknown format {format}");
        return 64;
    };
    let limits: ReadLimits = serde_json::from_str(limits_json).unwrap_or_default();
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return 66;
    }
    let result = crate::parse::readers::read(format, &bytes, &limits);
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &result) {
        Ok(()) => 0,
        Err(_) => 74,
    }
}
