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
//! Protocol: the parent starts `__read FORMAT LIMITS MEMORY_MB CPU_SECONDS`
//! ([`ChildArgs`]; `LIMITS` is the JSON of [`ReadLimits`] with every key),
//! writes the attachment's bytes to the child's stdin, and the child prints
//! one JSON `Result<Extracted, ReadError>` on stdout. A child refuses
//! arguments it cannot take — never a default in their place, which would
//! silently change the sandbox's limits — and exits with
//! [`EXIT_CHILD_USAGE`]; the parent reports its message as the
//! attachment's error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// The exit code of a child given arguments it cannot take (EX_USAGE).
pub const EXIT_CHILD_USAGE: i32 = 64;

/// The child's arguments, checked (the command line parses them with
/// [`limits_from_arg`] and range checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildArgs {
    pub format: Format,
    pub limits: ReadLimits,
    /// Address space, in MiB.
    pub memory_mb: u64,
    pub cpu_seconds: u64,
    /// The OCR models' folder: scans are read by OCR when given.
    pub ocr_models: Option<PathBuf>,
}

/// The read limits as the parent passes them: a JSON object with every key
/// of [`ReadLimits`] and no other. A missing key is refused, not defaulted.
pub fn limits_from_arg(text: &str) -> Result<ReadLimits, String> {
    let given: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("读取上限不是有效的 JSON（{e}）"))?;
    let all = serde_json::to_value(ReadLimits::default()).unwrap_or_default();
    let (Some(given_keys), Some(all_keys)) = (given.as_object(), all.as_object()) else {
        return Err("读取上限应为 JSON 对象".into());
    };
    if let Some(missing) = all_keys.keys().find(|k| !given_keys.contains_key(*k)) {
        return Err(format!("读取上限缺少 {missing}"));
    }
    serde_json::from_value(given).map_err(|e| format!("读取上限有误（{e}）"))
}

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
        Isolation::Child { exe, limits: child } => {
            let child = ocr.map_or(*child, |o| o.limits);
            read_in_child(
                exe,
                &child,
                format,
                bytes,
                limits,
                ocr.map(|o| o.models.as_path()),
            )
        }
    }
}

fn read_in_child(
    exe: &PathBuf,
    child_limits: &ChildLimits,
    format: Format,
    bytes: &[u8],
    limits: &ReadLimits,
    ocr_models: Option<&std::path::Path>,
) -> Result<Extracted, ReadError> {
    let limits_json = serde_json::to_string(limits)
        .map_err(|e| ReadError::Damaged(format!("无法传递读取上限：{e}")))?;
    let mut command = Command::new(exe);
    command
        .arg("__read")
        .arg(format.as_arg())
        .arg(&limits_json)
        .arg(child_limits.memory_mb.to_string())
        .arg(child_limits.cpu_seconds.to_string());
    if let Some(models) = ocr_models {
        command.arg("--ocr-models").arg(models);
    }
    let mut child = command
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
        None if status.code() == Some(EXIT_CHILD_USAGE) => ReadError::Damaged(
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
pub fn child_main(args: ChildArgs) -> i32 {
    let memory = args.memory_mb.saturating_mul(1024 * 1024);
    let cpu = args.cpu_seconds;
    if rlimit::setrlimit(rlimit::Resource::AS, memory, memory).is_err()
        || rlimit::setrlimit(rlimit::Resource::CPU, cpu, cpu.saturating_add(1)).is_err()
    {
        eprintln!("附件读取进程无法设置资源上限");
        return 70;
    }
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return 66;
    }
    let result = crate::parse::readers::read_with_ocr(
        args.format,
        &bytes,
        &args.limits,
        args.ocr_models.as_deref(),
    );
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer(&mut out, &result) {
        Ok(()) => 0,
        Err(_) => 74,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let status = std::process::ExitStatus::from_raw(EXIT_CHILD_USAGE << 8);
        let error = crash_error(
            status,
            "附件读取进程的参数有误：invalid value 'x' for '<MEMORY_MB>'\n",
            &ChildLimits::default(),
        );
        assert_eq!(
            error,
            ReadError::Damaged(
                "附件读取进程的参数有误：invalid value 'x' for '<MEMORY_MB>'".into()
            )
        );
    }
}
