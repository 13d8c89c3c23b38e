//! What a reader worker gives up once it has started: the file system
//! (Landlock: every file access handled, none allowed) and every system call
//! that reading does not need (seccomp: an allow-list; anything else fails
//! with `EPERM` — no `socket`, no `open`, no `execve`, no `fork`).
//!
//! A worker reads bytes from its stdin and writes its answer to stdout; it
//! needs memory, threads' futexes, its own resource limits and usage, time,
//! random numbers (hash maps) and signals to itself (`abort`). The list was
//! taken from `strace -f` of workers reading every format, scans by OCR
//! included, and is checked by the tests that read every format through the
//! workers and by `probe` (a confined process tries to open a file, create
//! one, open sockets and start a program).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule};

/// System calls a worker may make after it is confined.
const ALLOWED: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getrlimit,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_setrlimit,
];

/// Confines the calling process; the worker calls it before its first job.
/// Landlock is best effort (a kernel without it, or a service manager that
/// filters its calls, still leaves the seccomp filter, which forbids `open`
/// as well); the seccomp filter is required (the systemd unit allows the
/// `seccomp` and `landlock_*` calls for this).
pub fn confine() -> Result<(), String> {
    let _ = forbid_file_system();
    let program = filter()?;
    seccompiler::apply_filter(&program).map_err(|e| format!("seccomp: {e}"))
}

fn forbid_file_system() -> Result<(), String> {
    use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr};
    // No rule is added: every access of the handled kinds is denied.
    Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V5))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map(|_| ())
        .map_err(|e| format!("landlock: {e}"))
}

fn filter() -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e}"))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&call| (call, Vec::new())).collect();
    SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .and_then(|f| f.try_into())
    .map_err(|e| format!("seccomp: {e}"))
}

/// What a confined process could still do: the hidden `__confine-probe`
/// command confines itself as a worker does, tries each, and prints this
/// as JSON (for the tests).
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Probe {
    pub read_file: bool,
    pub create_file: bool,
    pub tcp_socket: bool,
    pub unix_socket: bool,
    pub start_program: bool,
    /// What still works: memory, threads' basics, the CPU budget.
    pub allocate_and_limit: bool,
}

/// Confines this process and tries what a hostile file would want.
/// `existing` is a file that may be read before confinement; `scratch` a
/// folder where one may be created.
pub fn probe(existing: &std::path::Path, scratch: &std::path::Path) -> Result<Probe, String> {
    confine()?;
    let read_file = std::fs::read(existing).is_ok();
    let create_file = std::fs::File::create(scratch.join("created-by-worker")).is_ok();
    let tcp_socket = std::net::TcpListener::bind("127.0.0.1:0").is_ok()
        || std::net::TcpStream::connect("127.0.0.1:5432").is_ok();
    let unix_socket = std::os::unix::net::UnixDatagram::unbound().is_ok();
    let start_program = std::process::Command::new("/bin/true").status().is_ok();
    let big = vec![7u8; 8 << 20];
    let allocate_and_limit = big.iter().map(|&b| b as u64).sum::<u64>() == 7 * (8 << 20)
        && rlimit::getrlimit(rlimit::Resource::CPU).is_ok();
    Ok(Probe {
        read_file,
        create_file,
        tcp_socket,
        unix_socket,
        start_program,
        allocate_and_limit,
    })
}
