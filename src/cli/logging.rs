//! The service's log: one event a line on stderr (journald reads it), no
//! colours when not on a terminal, and every field value with its control
//! characters escaped — a header or a roster cell with a CR, LF or NUL
//! must not split an entry or forge one.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;

/// Third-party libraries whose warnings are about their input, not about
/// the service: html5ever's parse errors on a mail body (`foster parenting
/// not implemented` …). They are kept to errors whatever `RUST_LOG` says.
const QUIET: &[&str] = &["html5ever=error", "selectors=error"];

/// Starts logging at `RUST_LOG` (default `info`).
pub(super) fn init() {
    let filter = QUIET.iter().fold(
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        |filter, directive| match directive.parse() {
            Ok(d) => filter.add_directive(d),
            Err(_) => filter,
        },
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(
            tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                let text = escape_controls(&format!("{value:?}"));
                if field.name() == "message" {
                    write!(writer, "{text}")
                } else {
                    write!(writer, "{field}={text}")
                }
            })
            .delimited(" "),
        )
        .try_init();
}

/// `text` with every control character written as an escape (`\n`, `\r`,
/// `\t`, `\u{0}` …).
pub(super) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("a\r\nINFO forged\u{0}b\u{1b}[31m"),
            "a\\r\\nINFO forged\\u{0}b\\u{1b}[31m"
        );
        assert_eq!(escape_controls("桥头镇 ok"), "桥头镇 ok");
    }
}
