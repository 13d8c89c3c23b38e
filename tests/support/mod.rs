//! Test support for the IMAP source (shared by `tests/imap.rs` and
//! `benches/ingest.rs`): a private Dovecot on loopback, a TCP fault proxy,
//! a small IMAP client to seed and inspect mailboxes, and an `App` on
//! SQLite in a temporary folder.
//!
//! Needs `dovecot-imapd` and `openssl` (Debian; `scripts/check` installs
//! them) and root (Dovecot's mail processes run as uid 65534).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_imap::Session;
use futures::TryStreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use xxdc_intake::clock::Clock;
use xxdc_intake::config::{Config, RawConfig, Source};
use xxdc_intake::parse::sandbox::Isolation;
use xxdc_intake::service::daemon::App;
use xxdc_intake::service::sources::SourceCtx;

#[path = "../tls/mod.rs"]
mod tls;
pub use tls::free_port;
use tls::make_certs;

/// Dovecot's mail processes run as nobody/nogroup (it refuses uid 0).
const MAIL_UID: u32 = 65534;

/// Logs for a failing test: `RUST_LOG=xxdc_intake=debug cargo test`.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A private Dovecot: IMAP (plain + STARTTLS) and IMAPS on free loopback
/// ports, passwd-file users, maildir in a temp folder. Killed on drop.
#[derive(Debug)]
pub struct Dovecot {
    dir: tempfile::TempDir,
    pub imap_port: u16,
    pub imaps_port: u16,
    conf: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot with the user `alice` (password `secret`).
    pub fn start() -> Self {
        Self::start_in(&std::env::temp_dir())
    }

    /// Like [`Dovecot::start`], keeping the server's files under `parent`.
    pub fn start_in(parent: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xxdc-dovecot-")
            .tempdir_in(parent)
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        for sub in ["run", "state", "mail", "tls"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        // Auth runs as `dovecot`, mail processes as 65534: both must get in.
        set_mode(&root, 0o755);
        std::os::unix::fs::chown(root.join("mail"), Some(MAIL_UID), Some(MAIL_UID))
            .expect("chown mail dir (tests must run as root)");
        make_certs(&root.join("tls"), "server", "3650");
        set_mode(&root.join("tls/server.key"), 0o644);
        std::fs::write(root.join("users"), "").expect("users file");
        set_mode(&root.join("users"), 0o644);
        let mut last_error = String::new();
        for _ in 0..5 {
            let (imap_port, imaps_port) = (free_port(), free_port());
            let conf = root.join("dovecot.conf");
            std::fs::write(&conf, config(&root, imap_port, imaps_port)).expect("write conf");
            // The daemon keeps whatever it inherits open: give it a file,
            // never a pipe (`output()` would wait for it forever).
            let errors = root.join("dovecot.stderr");
            let status = Command::new("dovecot")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&errors).expect("stderr file"))
                .status()
                .expect("run dovecot (apt-get install dovecot-imapd)");
            if !status.success() {
                last_error = std::fs::read_to_string(&errors).unwrap_or_default();
                continue;
            }
            let dovecot = Dovecot {
                dir,
                imap_port,
                imaps_port,
                conf,
            };
            if wait_port(imap_port) && wait_port(imaps_port) {
                dovecot.add_user("alice", "secret");
                return dovecot;
            }
            last_error = std::fs::read_to_string(root.join("dovecot.log")).unwrap_or_default();
            dovecot.kill();
            panic!("Dovecot did not listen: {last_error}");
        }
        panic!("cannot start Dovecot: {last_error}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The test CA that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Adds a user (Dovecot re-reads the passwd-file when it changes).
    pub fn add_user(&self, name: &str, password: &str) {
        let users = self.dir.path().join("users");
        let mut text = std::fs::read_to_string(&users).expect("users");
        let home = self.dir.path().join("mail").join(name);
        text.push_str(&format!(
            "{name}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_UID}::{}::\n",
            home.display()
        ));
        std::fs::write(&users, text).expect("users");
    }

    /// Runs `doveadm -c CONF args…`; panics with its output on failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("run doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ends every session of `user` (the server says BYE and closes).
    pub fn kick(&self, user: &str) {
        self.doveadm(&["kick", user]);
    }

    /// Kills `user`'s IMAP processes (EOF without BYE, as a crash would).
    pub fn kill_sessions(&self, user: &str) {
        let who = self.doveadm(&["who", "-1", user]);
        for line in who.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 3 && cols[0] == user && cols[1] == "imap" {
                let _ = Command::new("kill").args(["-KILL", cols[2]]).status();
            }
        }
    }

    /// Gives `mailbox` of `user` a new UIDVALIDITY, as a server that
    /// rebuilt its index would.
    pub fn change_uidvalidity(&self, user: &str, mailbox: &str, uidvalidity: u32) {
        self.doveadm(&[
            "mailbox",
            "update",
            "-u",
            user,
            "--uid-validity",
            &uidvalidity.to_string(),
            mailbox,
        ]);
    }

    /// The current UIDVALIDITY of `mailbox`.
    pub fn uidvalidity(&self, user: &str, mailbox: &str) -> u32 {
        let out = self.doveadm(&[
            "-f",
            "flow",
            "mailbox",
            "status",
            "-u",
            user,
            "uidvalidity",
            mailbox,
        ]);
        out.split("uidvalidity=")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no uidvalidity in {out:?}"))
    }

    /// A plain IMAP session of `user` straight to Dovecot (no proxy).
    pub async fn client(&self, user: &str, password: &str) -> TestClient {
        let tcp = TcpStream::connect(("127.0.0.1", self.imap_port))
            .await
            .expect("connect");
        let client = async_imap::Client::new(tcp);
        let session = client
            .login(user, password)
            .await
            .map_err(|(e, _)| e)
            .expect("login");
        TestClient { session }
    }

    fn kill(&self) {
        // Every process of the instance shares the master's process group
        // (it calls setsid when daemonizing): one signal kills them all.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("run/master.pid")) {
            let pid = pid.trim();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn wait_port(port: u16) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn config(root: &Path, imap_port: u16, imaps_port: u16) -> String {
    let d = root.display();
    format!(
        r#"# standalone: does not include /etc/dovecot
instance_name = xxdc-test-{imap_port}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
shutdown_clients = yes
auth_failure_delay = 0
stats_writer_socket_path =
ssl = yes
ssl_cert = <{d}/tls/server.pem
ssl_key = <{d}/tls/server.key
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
}}
first_valid_uid = 1
mail_location = maildir:~/Maildir
# Test mailboxes need no durability; seeding a backlog is much faster.
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Archive {{
    auto = create
    special_use = \Archive
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
"#
    )
}

/// A plain IMAP session to seed and inspect mailboxes.
#[derive(Debug)]
pub struct TestClient {
    pub session: Session<TcpStream>,
}

impl TestClient {
    /// APPENDs a message; `flags` like `(\Seen)`.
    pub async fn append(&mut self, mailbox: &str, raw: &[u8], flags: Option<&str>) {
        self.session
            .append(mailbox, flags, None, raw)
            .await
            .expect("append");
    }

    /// APPENDs a message with an INTERNALDATE like `01-Jan-2020 08:00:00 +0800`.
    pub async fn append_dated(&mut self, mailbox: &str, raw: &[u8], date: &str) {
        self.session
            .append(mailbox, None, Some(&format!("\"{date}\"")), raw)
            .await
            .expect("append");
    }

    /// UIDs of `mailbox`, ascending.
    pub async fn uids(&mut self, mailbox: &str) -> Vec<u32> {
        self.session.select(mailbox).await.expect("select");
        let mut uids: Vec<u32> = self
            .session
            .uid_search("ALL")
            .await
            .expect("search")
            .into_iter()
            .collect();
        uids.sort_unstable();
        uids
    }

    /// Each message's flags (`\Seen`, `$XxdcRecorded` …), by UID.
    pub async fn flags(&mut self, mailbox: &str) -> Vec<(u32, Vec<String>)> {
        let uids = self.uids(mailbox).await;
        if uids.is_empty() {
            return Vec::new();
        }
        let fetches: Vec<_> = self
            .session
            .uid_fetch("1:*", "(UID FLAGS)")
            .await
            .expect("fetch")
            .try_collect()
            .await
            .expect("fetch");
        let mut out: Vec<(u32, Vec<String>)> = fetches
            .iter()
            .map(|f| {
                (
                    f.uid.unwrap_or(0),
                    f.flags().map(|fl| format!("{fl:?}")).collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Sets flags on messages, e.g. `uid_store("1:*", "+FLAGS (\\Seen)")`.
    pub async fn store(&mut self, mailbox: &str, set: &str, query: &str) {
        self.session.select(mailbox).await.expect("select");
        let _: Vec<_> = self
            .session
            .uid_store(set, query)
            .await
            .expect("store")
            .try_collect()
            .await
            .expect("store");
    }

    pub async fn logout(mut self) {
        let _ = self.session.logout().await;
    }
}

/// A small registration-like message, `size` bytes of body or more. With
/// `message_id = false` it has no Message-ID header.
pub fn message(tag: &str, i: usize, size: usize, message_id: bool) -> Vec<u8> {
    let mut m = String::new();
    if message_id {
        m.push_str(&format!("Message-ID: <{tag}-{i}@units.test>\r\n"));
    }
    m.push_str(&format!(
        "Date: Wed, 16 May 2007 09:{:02}:00 +0800\r\n\
         From: unit{i} <unit{i}@yj.gov.cn>\r\n\
         To: xxdc2004@163.com\r\n\
         Subject: =?UTF-8?B?{}?=\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=UTF-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n",
        i % 60,
        b64(format!("登记表 {tag} {i}").as_bytes())
    ));
    m.push_str(&format!(
        "单位：测试单位{i}\r\n分管领导：张三\r\n信息员：李四\r\n"
    ));
    let line = "政务信息报送登记表填写说明，请按要求填写各栏目。\r\n";
    while m.len() < size {
        m.push_str(line);
    }
    m.into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the fault proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward nothing, keep every socket open (a silent network).
    Blackhole,
    /// Forward the first N bytes server→client of each connection, then
    /// reset it.
    CutAfter(usize),
    /// Reset every connection, open and new.
    Reset,
    /// Forward both ways, server→client at most this many bytes a second
    /// (a slow link).
    Throttle(usize),
    /// Forward both ways, and reset each connection after every this many
    /// bytes server→client (a link that keeps dropping).
    ResetEvery(usize),
}

/// A TCP proxy on loopback in front of `target`, whose behaviour can be
/// switched while connections are open.
#[derive(Debug)]
pub struct FaultProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, rx) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *rx.borrow() == Mode::Reset {
                    reset(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    reset(&client);
                    continue;
                };
                relays.spawn(relay(client, server, rx.clone()));
                while relays.try_join_next().is_some() {}
            }
        });
        Self { port, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which ends the relays.
        self.task.abort();
    }
}

fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn relay(mut client: TcpStream, mut server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let mut sent_down = 0usize;
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Reset => break,
            Mode::CutAfter(n) | Mode::ResetEvery(n) if sent_down >= n => break,
            _ => {}
        }
        tokio::select! {
            r = client.read(&mut up) => {
                let Ok(k) = r else { break };
                if k == 0 {
                    return;
                }
                if matches!(
                    *mode.borrow(),
                    Mode::Pass | Mode::CutAfter(_) | Mode::Throttle(_) | Mode::ResetEvery(_)
                ) && server.write_all(&up[..k]).await.is_err()
                {
                    break;
                }
            }
            r = server.read(&mut down) => {
                let Ok(k) = r else { break };
                if k == 0 {
                    return;
                }
                let current = *mode.borrow();
                let allowed = match current {
                    Mode::Pass | Mode::Throttle(_) => k,
                    Mode::Blackhole | Mode::Reset => 0,
                    Mode::CutAfter(n) | Mode::ResetEvery(n) => k.min(n.saturating_sub(sent_down)),
                };
                if let Mode::Throttle(rate) = current {
                    // In slices, so that the client sees a trickle.
                    for piece in down[..allowed].chunks((rate / 10).max(1)) {
                        if client.write_all(piece).await.is_err() {
                            reset(&client);
                            reset(&server);
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs_f64(piece.len() as f64 / rate as f64)).await;
                    }
                } else if allowed > 0 && client.write_all(&down[..allowed]).await.is_err() {
                    break;
                }
                sent_down += allowed;
                if let Mode::CutAfter(n) | Mode::ResetEvery(n) = current && sent_down >= n {
                    break;
                }
            }
            r = mode.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    reset(&client);
    reset(&server);
}

/// An `App` on SQLite in a temp folder, with a source context whose
/// shutdown and ready channels the test holds.
#[derive(Debug)]
pub struct TestApp {
    pub app: Arc<App>,
    pub ctx: SourceCtx,
    pub stop: watch::Sender<bool>,
    pub ready: mpsc::UnboundedReceiver<String>,
    /// Last: removed after the database is closed.
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// `sources` is the TOML of the `[[source]]` tables; `{dir}` in it is
    /// replaced by the app's folder (which holds `imap-password` with
    /// `secret`).
    pub async fn open(sources: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("xxdc-app-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("imap-password"), "secret\n").expect("password file");
        let text = format!(
            "[database]\nurl = \"sqlite://{d}/xxdc.db\"\n[archive]\ndir = \"{d}/messages\"\n{}",
            sources.replace("{dir}", &d)
        );
        let raw: RawConfig = toml::from_str(&text).expect("test config parses");
        let config = Config::check(raw, dir.path()).expect("test config is valid");
        let app = App::open(
            config,
            Isolation::workers(
                env!("CARGO_BIN_EXE_xxdc-intake").into(),
                Default::default(),
                Default::default(),
            ),
            Clock::System,
        )
        .await
        .expect("open app");
        let app = Arc::new(app);
        let (stop, shutdown) = watch::channel(false);
        let (ready_tx, ready) = mpsc::unbounded_channel();
        let ctx = SourceCtx {
            intake: Arc::clone(&app.intake),
            clock: app.clock.clone(),
            ready: ready_tx,
            standby: Default::default(),
            shutdown,
            stall_after: app.config.stall_after,
            started_at: app.started_at,
        };
        Self {
            app,
            ctx,
            stop,
            ready,
            dir,
        }
    }

    pub fn source(&self, name: &str) -> Source {
        self.app
            .config
            .sources
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .expect("source configured")
    }

    /// Runs a statement on the app's database, through a connection of
    /// the test's own (the store keeps its pool to itself).
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::any::install_default_drivers();
        let pool = sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(1)
            .connect(&self.app.config.database_url)
            .await
            .expect("inspection connection");
        let n = sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&pool)
            .await
            .expect("query");
        pool.close().await;
        n
    }

    /// Ledger entries in all.
    pub async fn entries(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM mailbox_entry").await
    }

    /// Distinct messages stored.
    pub async fn messages(&self) -> i64 {
        self.scalar("SELECT COUNT(*) FROM message").await
    }

    /// The last error a source recorded, if any.
    pub async fn last_error(&self, name: &str) -> Option<String> {
        self.app
            .intake
            .store()
            .source_states()
            .await
            .expect("source states")
            .into_iter()
            .find(|s| s.name == name)
            .and_then(|s| s.last_error)
    }
}

/// The `[[source]]` table of an IMAP source on loopback; `extra` adds keys.
pub fn imap_source(name: &str, port: u16, user: &str, extra: &str) -> String {
    format!(
        "[[source]]\nname = \"{name}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = \"none\"\nusername = \"{user}\"\npassword_file = \"{{dir}}/imap-password\"\n{extra}\n"
    )
}

/// Polls `check` every 50 ms until it holds or `bound` passes.
pub async fn eventually<F, Fut>(bound: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + bound;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
