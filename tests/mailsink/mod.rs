//! The project's SMTP sink (`tests/mailsink/sink.py`, aiosmtpd) run from a
//! test: a test CA and a `localhost`/`127.0.0.1` leaf made with the
//! `openssl` CLI, plain+STARTTLS and implicit-TLS ports picked free on
//! loopback, AUTH with a user and password, what arrived read back and
//! parsed with mail-parser, faults set through `DIR/fault`. Killed on drop.
//!
//! Needs `/usr/bin/python3` with aiosmtpd (Debian `python3-aiosmtpd`;
//! `scripts/check` installs it) and `openssl`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

#[path = "../tls/mod.rs"]
mod tls;
use tls::{free_port, make_certs};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mailsink/sink.py");
pub const USER: &str = "xxdc2004@163.com";
pub const PASSWORD: &str = "sq-auth-code-16ch";

/// One SMTP transaction the sink accepted (a line of `envelopes.jsonl`).
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub n: u64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub auth_user: Option<String>,
    pub tls: bool,
    pub port: u16,
    pub file: String,
}

/// A message that arrived, as bytes, with its envelope.
#[derive(Debug, Clone)]
pub struct Received {
    pub envelope: Envelope,
    pub raw: Vec<u8>,
}

impl Received {
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("a parsable message")
    }

    /// The one recipient of the envelope.
    pub fn to(&self) -> &str {
        assert_eq!(self.envelope.rcpt_tos.len(), 1, "{:?}", self.envelope);
        &self.envelope.rcpt_tos[0]
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_string()
    }

    /// `<id>` as our outbox wrote it.
    pub fn message_id(&self) -> String {
        format!("<{}>", self.parsed().message_id().unwrap_or_default())
    }

    /// A header's decoded text, trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed().header_raw(name).map(|v| v.trim().to_string())
    }

    pub fn body(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|b| b.into_owned())
            .unwrap_or_default()
    }
}

/// A running sink.
#[derive(Debug)]
pub struct Sink {
    dir: tempfile::TempDir,
    child: Child,
    /// Plain SMTP offering STARTTLS.
    pub port: u16,
    /// Implicit TLS.
    pub smtps_port: u16,
}

impl Sink {
    /// Starts the sink with AUTH required ([`USER`], [`PASSWORD`]); waits
    /// until both ports answer.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xxdc-sink-")
            .tempdir()
            .expect("temp dir");
        let tls = dir.path().join("tls");
        std::fs::create_dir_all(&tls).expect("mkdir tls");
        make_certs(&tls, "leaf", "2");
        std::fs::write(dir.path().join("password"), PASSWORD).expect("password file");
        let spool = dir.path().join("spool");
        let mut last = String::new();
        for _ in 0..5 {
            let (port, smtps_port) = (free_port(), free_port());
            if port == smtps_port {
                continue;
            }
            let log = dir.path().join("sink.log");
            let mut child = Command::new("/usr/bin/python3")
                .arg(SCRIPT)
                .arg("--dir")
                .arg(&spool)
                .args(["--port", &port.to_string()])
                .args(["--smtps-port", &smtps_port.to_string()])
                .arg("--cert")
                .arg(tls.join("leaf.pem"))
                .arg("--key")
                .arg(tls.join("leaf.key"))
                .args(["--user", USER, "--password", PASSWORD])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("sink log"))
                .spawn()
                .expect("start /usr/bin/python3 tests/mailsink/sink.py");
            let started = Instant::now();
            loop {
                if spool.join("ready").exists() {
                    return Self {
                        dir,
                        child,
                        port,
                        smtps_port,
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    last = std::fs::read_to_string(&log).unwrap_or_default();
                    break;
                }
                if started.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = "not ready within 20 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the SMTP sink did not start (is python3-aiosmtpd installed?): {last}");
    }

    /// Where messages are written.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The test CA's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    /// An `[smtp]` section for this sink: `tls` is `implicit` or
    /// `starttls`; `extra` adds keys (`rate_per_minute = 3`).
    pub fn smtp_toml(&self, tls: &str, extra: &str) -> String {
        let port = if tls == "implicit" {
            self.smtps_port
        } else {
            self.port
        };
        let rate = if extra.contains("rate_per_minute") {
            ""
        } else {
            "rate_per_minute = 1000\n"
        };
        format!(
            "[smtp]\ntransport = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{tls}\"\n\
             ca_file = \"{ca}\"\nusername = \"{USER}\"\npassword_file = \"{pw}\"\n\
             from = \"信息督查科 <{USER}>\"\n{rate}{extra}\n",
            ca = self.ca().display(),
            pw = self.password_file().display(),
        )
    }

    /// Sets the fault directives (see `sink.py`); `""` clears them.
    pub fn set_fault(&self, text: &str) {
        let path = self.dir().join("fault");
        let tmp = self.dir().join("fault.set");
        std::fs::write(&tmp, format!("{text}\n")).expect("write fault");
        std::fs::rename(&tmp, &path).expect("set fault");
    }

    /// What the fault file holds now (counted faults count down).
    pub fn fault(&self) -> String {
        std::fs::read_to_string(self.dir().join("fault")).unwrap_or_default()
    }

    pub fn envelopes(&self) -> Vec<Envelope> {
        let text = std::fs::read_to_string(self.dir().join("envelopes.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("an envelope line"))
            .collect()
    }

    /// Every message that arrived, in order.
    pub fn received(&self) -> Vec<Received> {
        self.envelopes()
            .into_iter()
            .map(|envelope| {
                let raw = std::fs::read(self.dir().join(&envelope.file)).expect("message file");
                Received { envelope, raw }
            })
            .collect()
    }

    pub fn count(&self) -> usize {
        self.envelopes().len()
    }

    /// Waits (real time) until at least `n` messages arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let started = Instant::now();
        while self.count() < n {
            assert!(
                started.elapsed() < timeout,
                "{} of {n} messages arrived within {timeout:?}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.received()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
