//! The frames between the parent and a reader worker, over its pipes.
//!
//! Parent → worker, per job: `u32` length (little-endian) and the job's
//! JSON ([`Job`]: format, read limits with every key, CPU seconds), then a
//! `u64` length and the attachment's bytes. Worker → parent: `u32` length
//! and the JSON [`Reply`]. Each side bounds what it accepts: the parent
//! never reads an answer longer than the job's output limit, the worker
//! never takes a job header longer than [`MAX_JOB_HEADER`].

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::parse::grid::{Extracted, ReadError, ReadLimits};
use crate::parse::sniff::Format;

/// Bytes of a job's JSON header at most.
pub const MAX_JOB_HEADER: usize = 64 * 1024;

/// One attachment to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub format: Format,
    pub limits: ReadLimits,
    pub cpu_seconds: u64,
}

/// The job header as written: the format by its argument name, the limits
/// as a JSON object that must carry every key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobHeader {
    format: String,
    limits: serde_json::Value,
    cpu_seconds: u64,
}

/// The worker's answer to one job.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub result: Result<Extracted, ReadError>,
    /// The worker caught a panic and ends after this answer.
    pub retire: bool,
}

pub fn write_job(out: &mut impl Write, job: &Job, bytes: &[u8]) -> io::Result<()> {
    let header = JobHeader {
        format: job.format.as_arg().to_string(),
        limits: serde_json::to_value(job.limits).map_err(io::Error::other)?,
        cpu_seconds: job.cpu_seconds,
    };
    let header = serde_json::to_vec(&header).map_err(io::Error::other)?;
    // One write for the frame's head, and for a small attachment the whole
    // frame: every write to the pipe may wake the worker.
    let mut head = Vec::with_capacity(12 + header.len() + bytes.len().min(SMALL_BODY));
    head.extend_from_slice(&(header.len() as u32).to_le_bytes());
    head.extend_from_slice(&header);
    head.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    if bytes.len() <= SMALL_BODY {
        head.extend_from_slice(bytes);
        return out.write_all(&head);
    }
    out.write_all(&head)?;
    out.write_all(bytes)
}

/// Attachments up to this size are copied into the frame's one write.
const SMALL_BODY: usize = 256 * 1024;

/// A job that could not be taken: the worker says why and ends.
#[derive(Debug)]
pub enum BadJob {
    Io(io::Error),
    Refused(String),
}

/// The next job and its bytes; `Ok(None)` at the end of input (the parent
/// closed the pipe).
pub fn read_job(input: &mut impl Read) -> Result<Option<(Job, Vec<u8>)>, BadJob> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(BadJob::Io(e)),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_JOB_HEADER {
        return Err(BadJob::Refused(format!("任务说明过长（{len} 字节）")));
    }
    let mut header = vec![0u8; len];
    input.read_exact(&mut header).map_err(BadJob::Io)?;
    let header: JobHeader = serde_json::from_slice(&header)
        .map_err(|e| BadJob::Refused(format!("任务说明不是有效的 JSON（{e}）")))?;
    let format = Format::from_arg(&header.format)
        .ok_or_else(|| BadJob::Refused(format!("不认识的文件格式“{}”", header.format)))?;
    let limits = super::limits_from_value(header.limits).map_err(BadJob::Refused)?;
    if header.cpu_seconds == 0 {
        return Err(BadJob::Refused("CPU 时间上限应大于 0".into()));
    }
    let mut size = [0u8; 8];
    input.read_exact(&mut size).map_err(BadJob::Io)?;
    let size = u64::from_le_bytes(size);
    // The address-space limit bounds what fits; the first reservation is
    // kept small so that a false length fails as a short read, not an abort.
    let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
    input
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(BadJob::Io)?;
    if bytes.len() as u64 != size {
        return Err(BadJob::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some((
        Job {
            format,
            limits,
            cpu_seconds: header.cpu_seconds,
        },
        bytes,
    )))
}

pub fn write_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let body = serde_json::to_vec(reply).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// How waiting for an answer ended without one.
#[derive(Debug, PartialEq, Eq)]
pub enum NoReply {
    /// The deadline passed.
    Timeout,
    /// The answer announced this many bytes, more than allowed (not read).
    TooLong(usize),
    /// The pipe closed: the worker is gone.
    Closed,
}

/// The next answer from a non-blocking pipe, waiting at most until
/// `deadline` in all (a worker that writes half an answer and stops is
/// caught by the deadline too).
pub fn read_reply_until(
    pipe: &mut (impl Read + std::os::fd::AsFd),
    cap: usize,
    deadline: std::time::Instant,
) -> Result<Vec<u8>, NoReply> {
    let mut len = [0u8; 4];
    fill_until(pipe, &mut len, deadline)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > cap {
        return Err(NoReply::TooLong(len));
    }
    let mut body = vec![0u8; len];
    fill_until(pipe, &mut body, deadline)?;
    Ok(body)
}

fn fill_until(
    pipe: &mut (impl Read + std::os::fd::AsFd),
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> Result<(), NoReply> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut filled = 0;
    while filled < buf.len() {
        match pipe.read(&mut buf[filled..]) {
            Ok(0) => return Err(NoReply::Closed),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(NoReply::Timeout);
                }
                let timeout = Timespec {
                    tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(left.subsec_nanos()),
                };
                let mut fds = [PollFd::new(&*pipe, PollFlags::IN)];
                // Readable, closed or the deadline: the next read tells.
                if let Err(e) = rustix::event::poll(&mut fds, Some(&timeout))
                    && e != rustix::io::Errno::INTR
                {
                    return Err(NoReply::Closed);
                }
            }
            Err(_) => return Err(NoReply::Closed),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            format: Format::Xlsx,
            limits: ReadLimits::default(),
            cpu_seconds: 20,
        }
    }

    #[test]
    fn a_job_goes_through_whole() {
        let mut wire = Vec::new();
        write_job(&mut wire, &job(), b"PK\x03\x04 bytes").expect("write");
        write_job(&mut wire, &job(), b"").expect("write");
        let mut input = wire.as_slice();
        let (first, bytes) = read_job(&mut input).expect("read").expect("a job");
        assert_eq!((first, bytes.as_slice()), (job(), &b"PK\x03\x04 bytes"[..]));
        let (_, empty) = read_job(&mut input).expect("read").expect("a job");
        assert!(empty.is_empty());
        assert!(read_job(&mut input).expect("end").is_none());
    }

    #[test]
    fn a_bad_header_is_refused_with_its_reason() {
        let frame = |header: &str| {
            let mut wire = (header.len() as u32).to_le_bytes().to_vec();
            wire.extend_from_slice(header.as_bytes());
            wire.extend_from_slice(&0u64.to_le_bytes());
            wire
        };
        let limits = serde_json::to_string(&ReadLimits::default()).expect("json");
        let cases = [
            (
                format!(r#"{{"format":"spreadsheet","limits":{limits},"cpu_seconds":20}}"#),
                "不认识的文件格式",
            ),
            (
                r#"{"format":"xlsx","limits":{"max_cells":1},"cpu_seconds":20}"#.to_string(),
                "缺少",
            ),
            (
                format!(r#"{{"format":"xlsx","limits":{limits},"cpu_seconds":0}}"#),
                "CPU",
            ),
            ("not json".to_string(), "JSON"),
        ];
        for (header, why) in cases {
            match read_job(&mut frame(&header).as_slice()) {
                Err(BadJob::Refused(text)) => assert!(text.contains(why), "{header}: {text}"),
                other => panic!("{header}: {other:?}"),
            }
        }
        let mut long = (MAX_JOB_HEADER as u32 + 1).to_le_bytes().to_vec();
        long.extend_from_slice(&[b' '; 16]);
        assert!(matches!(
            read_job(&mut long.as_slice()),
            Err(BadJob::Refused(_))
        ));
    }

    /// A non-blocking pipe holding `bytes`, its writing end kept open or not.
    fn pipe_with(
        bytes: &[u8],
        keep_open: bool,
    ) -> (std::io::PipeReader, Option<std::io::PipeWriter>) {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        writer.write_all(bytes).expect("fill the pipe");
        let flags = rustix::fs::fcntl_getfl(&reader).expect("flags");
        rustix::fs::fcntl_setfl(&reader, flags | rustix::fs::OFlags::NONBLOCK).expect("nonblock");
        (reader, keep_open.then_some(writer))
    }

    #[test]
    fn an_answer_is_read_within_its_bound_and_deadline() {
        let reply = Reply {
            result: Err(ReadError::Encrypted),
            retire: false,
        };
        let mut wire = Vec::new();
        write_reply(&mut wire, &reply).expect("write");
        let len = wire.len() - 4;
        let soon = || std::time::Instant::now() + std::time::Duration::from_millis(100);

        let (mut pipe, _w) = pipe_with(&wire, true);
        assert_eq!(
            read_reply_until(&mut pipe, len, soon()).map(|b| b.len()),
            Ok(len)
        );
        let (mut pipe, _w) = pipe_with(&wire, true);
        assert_eq!(
            read_reply_until(&mut pipe, len - 1, soon()),
            Err(NoReply::TooLong(len))
        );
        // Half an answer and silence: the deadline ends the wait.
        let (mut pipe, _w) = pipe_with(&wire[..len / 2], true);
        assert_eq!(
            read_reply_until(&mut pipe, len, soon()),
            Err(NoReply::Timeout)
        );
        // Half an answer and the worker gone.
        let (mut pipe, _) = pipe_with(&wire[..3], false);
        assert_eq!(
            read_reply_until(&mut pipe, len, soon()),
            Err(NoReply::Closed)
        );
    }
}
