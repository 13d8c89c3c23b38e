//! Sending outbox mail over SMTP (lettre over rustls: implicit TLS on 465,
//! as 163.com wants; STARTTLS; plain only on loopback) or into a folder of
//! `.eml` files (`transport = "file"`, for the demo).
//!
//! Owns building the RFC 5322 message (Chinese subject and names encoded so
//! Foxmail, Outlook and QQ mail show them; our Message-ID; In-Reply-To and
//! References for receipts; `Auto-Submitted` so two robots cannot loop;
//! `X-Xxdc-Outbox` so a bounce can be matched to the mail it reports on),
//! telling transient SMTP failures from permanent ones, and pacing: 163
//! rejects bursts of similar mail as spam (`554 DT:SPM`), so sends are
//! spread out under a per-minute rate and a daily cap.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls as SmtpTls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::campaign::templates::MailKind;
use crate::config::{Smtp, SmtpTransport, Tls};
use crate::store::outbox::Mail;

/// Why a send failed, as retry logic needs it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 4xx, a dropped connection, a timeout: try again later.
    #[error("暂时无法发送：{0}")]
    Transient(String),
    /// 5xx or a mail that cannot be built: do not retry.
    #[error("无法发送：{0}")]
    Permanent(String),
    /// The server judged our sending too fast or too alike (163's
    /// `554 DT:SPM`, its `RP:` rate codes): not a verdict on this mail.
    /// Sending pauses for a long while, then the mail is tried again;
    /// quick retries are exactly what makes 163 keep refusing.
    #[error("发送过于频繁，被对方服务器暂时拒收：{0}")]
    Throttled(String),
}

/// Words in an SMTP reply that mean "slow down" rather than "never":
/// 163 answers a burst of similar mail with `554 DT:SPM …` and its rate
/// and quota limits with `RP:…` codes (`451 RP:QRC`, `550 RP:TRC`).
const THROTTLE_MARKERS: &[&str] = &["DT:SPM", "RP:"];

/// Sorts a lettre error into what the outbox does next.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = e.to_string();
    if THROTTLE_MARKERS.iter().any(|m| text.contains(m)) {
        SendError::Throttled(text)
    } else if e.is_permanent() {
        SendError::Permanent(text)
    } else {
        // 4xx, and also what is neither: a dropped connection or a
        // timeout. A drop after DATA is ambiguous; resending with the
        // same Message-ID is the safe side.
        SendError::Transient(text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("发件设置有误：{0}")]
    Setup(String),
}

/// Pacing of sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    pub per_minute: u32,
    pub daily_cap: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        // A free 163 account tolerates a few dozen personal mails an hour.
        Self {
            per_minute: 10,
            daily_cap: 300,
        }
    }
}

#[derive(Clone)]
enum Transport {
    /// With the TLS mode it was set up with, for the advice a failed
    /// handshake gets.
    Smtp(Box<AsyncSmtpTransport<Tokio1Executor>>, Tls),
    File(PathBuf),
}

/// The configured way out.
#[derive(Clone)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// The domain of our Message-IDs.
    pub domain: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        let kind = match &self.transport {
            Transport::Smtp(..) => "smtp",
            Transport::File(_) => "file",
        };
        f.debug_struct("Mailer")
            .field("transport", &kind)
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// `Auto-Submitted: auto-replied` (RFC 3834) on receipts,
/// `auto-generated` on reminders and reports.
#[derive(Debug, Clone)]
struct AutoSubmitted(String);

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Our outbox id, so a bounce can be matched even when the remote server
/// drops the Message-ID.
#[derive(Debug, Clone)]
struct OutboxId(String);

impl Header for OutboxId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(crate::parse::message::OUTBOX_HEADER)
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

impl Mailer {
    /// Builds the transport from `[smtp]`.
    pub fn new(smtp: &Smtp) -> Result<Self, MailerError> {
        let from: Mailbox = smtp
            .from
            .parse()
            .map_err(|e| MailerError::Setup(format!("发件人“{}”无效：{e}", smtp.from)))?;
        let domain = from.email.domain().to_string();
        let transport = match &smtp.transport {
            SmtpTransport::File { dir } => Transport::File(dir.clone()),
            SmtpTransport::Smtp {
                host,
                port,
                tls,
                ca_file,
                username,
                password,
            } => {
                let mut params = TlsParameters::builder(host.clone());
                if let Some(ca) = ca_file {
                    let pem = std::fs::read(ca).map_err(|e| {
                        MailerError::Setup(format!("无法读取证书 {}：{e}", ca.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        MailerError::Setup(format!("证书 {} 无效：{e}", ca.display()))
                    })?;
                    params = params.add_root_certificate(cert);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| MailerError::Setup(e.to_string()))?;
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                        .port(*port)
                        .timeout(Some(Duration::from_secs(60)))
                        .tls(match tls {
                            Tls::Implicit => SmtpTls::Wrapper(params),
                            Tls::StartTls => SmtpTls::Required(params),
                            Tls::None => SmtpTls::None,
                        });
                if let (Some(user), Some(secret)) = (username, password) {
                    let pass = secret
                        .read()
                        .map_err(|e| MailerError::Setup(e.to_string()))?;
                    builder = builder.credentials(Credentials::new(user.clone(), pass));
                }
                Transport::Smtp(Box::new(builder.build()), *tls)
            }
        };
        Ok(Self {
            transport,
            from,
            domain,
        })
    }

    /// Our own address, lower case (never acknowledged).
    pub fn from_address(&self) -> String {
        self.from.email.to_string().to_lowercase()
    }

    /// The RFC 5322 message for an outbox row.
    pub fn build(&self, mail: &Mail) -> Result<Message, SendError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| SendError::Permanent(format!("收件地址“{}”无效：{e}", mail.to)))?;
        let auto = match mail.kind {
            MailKind::Ack | MailKind::AckUnmatched => "auto-replied",
            MailKind::Reminder
            | MailKind::OverdueReminder
            | MailKind::OverdueReport
            | MailKind::RemindersHeld => "auto-generated",
            // Sent because a person clicked: not automatic.
            MailKind::CorrectionRequest => "no",
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(crate::campaign::templates::header_safe(&mail.subject))
            .message_id(Some(mail.message_id.clone()))
            .date(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(mail.created_at).unwrap_or(0)),
            )
            .header(AutoSubmitted(auto.into()))
            .header(OutboxId(mail.id.clone()));
        if let Some(parent) = &mail.in_reply_to {
            builder = builder
                .in_reply_to(parent.clone())
                .references(parent.clone());
        }
        let text = SinglePart::plain(mail.body.clone());
        let built = match &mail.attachment {
            None => builder.singlepart(text),
            Some((name, bytes)) => {
                // lettre writes the name only as RFC 2231 `filename*=` in
                // Content-Disposition; QQ mail shows such attachments as
                // `tcmime.*.bin`. The RFC 2047 `name=` most clients read
                // as well is added to Content-Type.
                let kind = ContentType::parse(&format!(
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet; name=\"{}\"",
                    encoded_word(name)
                ))
                .map_err(|e| SendError::Permanent(e.to_string()))?;
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(text)
                        .singlepart(Attachment::new(name.clone()).body(bytes.clone(), kind)),
                )
            }
        };
        built.map_err(|e| SendError::Permanent(format!("邮件无法生成：{e}")))
    }

    /// Sends one outbox row.
    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let message = self.build(mail)?;
        match &self.transport {
            Transport::File(dir) => write_file(dir, &mail.id, &message.formatted())
                .await
                .map_err(|e| {
                    SendError::Transient(format!("无法写入发件文件夹 {}：{e}", dir.display()))
                }),
            Transport::Smtp(t, tls) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| with_tls_advice(classify(&e), &e, *tls)),
        }
    }
}

/// A failed TLS handshake says at which stage, and what to try: the usual
/// cause is the mode not matching the port.
fn with_tls_advice(error: SendError, e: &lettre::transport::smtp::Error, tls: Tls) -> SendError {
    let text = format!("{e:?}").to_ascii_lowercase();
    if !(text.contains("tls") || text.contains("handshake") || text.contains("corrupt message")) {
        return error;
    }
    let advice = match tls {
        Tls::Implicit => {
            "（阶段：直接加密连接，tls = \"implicit\"，用于 465 端口；若服务器在 587 或 25 端口要求先明文再升级，请改用 tls = \"starttls\"）"
        }
        Tls::StartTls => {
            "（阶段：STARTTLS 升级，tls = \"starttls\"，用于 587 端口；若是 465 端口，请改用 tls = \"implicit\"）"
        }
        Tls::None => return error,
    };
    match error {
        SendError::Transient(m) => SendError::Transient(format!("{m}{advice}")),
        SendError::Permanent(m) => SendError::Permanent(format!("{m}{advice}")),
        SendError::Throttled(m) => SendError::Throttled(m),
    }
}

/// `name` as one RFC 2047 encoded word when it is not plain ASCII, for a
/// quoted header parameter.
fn encoded_word(name: &str) -> String {
    let clean: String = crate::campaign::templates::header_safe(name)
        .chars()
        .filter(|c| !matches!(c, '"' | '\\'))
        .collect();
    if clean.is_ascii() {
        return clean;
    }
    use base64::Engine;
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(clean.as_bytes())
    )
}

/// Writes `<dir>/<id>.eml` atomically; the same row always gives the same
/// file, so a resend after a crash replaces it rather than adding one.
async fn write_file(dir: &std::path::Path, id: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{id}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{id}.eml"))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_encoded_words() {
        assert_eq!(encoded_word("list.xlsx"), "list.xlsx");
        assert_eq!(
            encoded_word("未报送单位名单.xlsx"),
            "=?utf-8?b?5pyq5oql6YCB5Y2V5L2N5ZCN5Y2VLnhsc3g=?="
        );
        assert_eq!(encoded_word("a\"b\r\nc.xlsx"), "ab c.xlsx");
    }
}
