//! Whether the sender is who the `From:` says: the receiving server's
//! verdict, read from `Authentication-Results` (RFC 8601) and
//! `Received-SPF` (RFC 7208). `From:` alone proves nothing, and a message
//! whose sender failed the checks is never credited to a unit by itself:
//! it waits for a person (`sender_unverified`).
//!
//! Only the receiving server's own headers count: the `Authentication-
//! Results` whose authserv-id is configured as trusted (`[parse]
//! trusted_authserv`, e.g. 163's), or, without that setting, the topmost
//! one (the last added, by our own mailbox's server); and the topmost
//! `Received-SPF`. Only an explicit failure acts: a header an attacker
//! forged can at worst send his own mail to review, and a message with no
//! verdict at all (a server that stamps none) is read as before.
//!
//! Hand-written: the grammar needed is `authserv-id; method=result …`, a
//! few lines; no maintained crate reads it without a whole MTA stack.

/// The receiving server's verdict on the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No verdict, or nothing failed.
    NotFailed,
    /// The checks failed; the text says which, for the office.
    Failed(String),
}

/// Results of the authentication methods, as far as the verdict needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Results {
    spf: Option<String>,
    dkim: Vec<String>,
    dmarc: Option<String>,
}

/// The verdict from the message's `Authentication-Results` and
/// `Received-SPF` values (each list topmost first, as in the message).
pub fn verdict(auth_results: &[String], received_spf: &[String], trusted: &[String]) -> Verdict {
    let chosen = if trusted.is_empty() {
        auth_results.first().and_then(|v| parse(v))
    } else {
        auth_results
            .iter()
            .filter_map(|v| parse(v))
            .find(|(id, _)| trusted.iter().any(|t| t.eq_ignore_ascii_case(id)))
    };
    let mut results = chosen.map(|(_, r)| r).unwrap_or_default();
    if results.spf.is_none()
        && let Some(spf) = received_spf.first()
    {
        results.spf = spf
            .split_whitespace()
            .next()
            .map(|r| r.to_ascii_lowercase());
    }
    judge(&results)
}

/// DMARC failed; or SPF failed and no DKIM signature passed; or DKIM
/// failed and neither another signature nor SPF passed.
fn judge(r: &Results) -> Verdict {
    let dkim_pass = r.dkim.iter().any(|d| d == "pass");
    let spf_pass = r.spf.as_deref() == Some("pass");
    let failed = |result: Option<&str>| result == Some("fail");
    let mut failures = Vec::new();
    if failed(r.spf.as_deref()) {
        failures.push("SPF");
    }
    if r.dkim.iter().any(|d| d == "fail") {
        failures.push("DKIM");
    }
    if failed(r.dmarc.as_deref()) {
        failures.push("DMARC");
    }
    let unverified = failed(r.dmarc.as_deref())
        || (failed(r.spf.as_deref()) && !dkim_pass)
        || (r.dkim.iter().any(|d| d == "fail") && !dkim_pass && !spf_pass);
    if unverified {
        Verdict::Failed(format!(
            "收件服务器对发件人的验证未通过（{}），发件地址可能是伪造的",
            failures.join("、")
        ))
    } else {
        Verdict::NotFailed
    }
}

/// `authserv-id; method=result …; …` → (authserv-id, results); `None`
/// for a value that does not parse.
fn parse(value: &str) -> Option<(String, Results)> {
    let value = strip_comments(value);
    let mut parts = value.split(';');
    let id = parts.next()?.split_whitespace().next()?.to_string();
    let mut results = Results::default();
    for part in parts {
        let Some((method, rest)) = part.trim().split_once('=') else {
            continue;
        };
        let result = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match method.trim().to_ascii_lowercase().as_str() {
            "spf" => results.spf = Some(result),
            "dkim" => results.dkim.push(result),
            "dmarc" => results.dmarc = Some(result),
            _ => {}
        }
    }
    Some((id, results))
}

/// The value without `(comments)` (which may hold anything).
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Holds back the registrations of `report` that would replace one a unit
/// sent from its own address, when this message did not come from that
/// address (`own_registered`: the units with such an earlier
/// registration): they are credited to nobody and wait for a person, with
/// the reason (`unverified_replacement`). The latest submission must not
/// win just because anyone can write to the mailbox.
///
/// Returns, for each registration held, its index and the unit it would
/// have been credited to.
pub fn hold_replacements(
    report: &mut crate::parse::report::ParseReport,
    own_registered: &std::collections::HashSet<String>,
) -> Vec<(usize, String)> {
    use crate::parse::problems::{Code, Problem};
    let sender = report.sender_unit.as_ref().map(|s| s.unit_id.clone());
    let mut held = Vec::new();
    for (i, reg) in report.registrations.iter_mut().enumerate() {
        let Some(m) = &reg.unit_match else { continue };
        if sender.as_deref() == Some(m.unit_id.as_str()) || !own_registered.contains(&m.unit_id) {
            continue;
        }
        report.problems.push(Problem::new(
            None,
            Code::UnverifiedReplacement,
            format!(
                "该登记表不是从{}的登记邮箱发出的，而该单位此前已从登记邮箱报送；需工作人员确认后才会替换原登记",
                m.unit_name
            ),
        ));
        held.push((i, m.unit_id.clone()));
        reg.unit_match = None;
        report.needs_review = true;
    }
    held
}

/// The units `report` credits from an address that is not theirs: those
/// [`hold_replacements`] must ask about.
pub fn credited_from_elsewhere(report: &crate::parse::report::ParseReport) -> Vec<String> {
    let sender = report.sender_unit.as_ref().map(|s| s.unit_id.as_str());
    report
        .registrations
        .iter()
        .filter_map(|r| r.unit_match.as_ref())
        .filter(|m| sender != Some(m.unit_id.as_str()))
        .map(|m| m.unit_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_explicit_failure_of_the_receiving_server_is_unverified() {
        let failed = v(&[
            "mx.163.com; spf=fail smtp.mailfrom=yj.gov.cn; dkim=fail (bad sig) header.d=yj.gov.cn; dmarc=fail header.from=yj.gov.cn",
        ]);
        assert!(
            matches!(verdict(&failed, &[], &[]), Verdict::Failed(t) if t.contains("SPF、DKIM、DMARC"))
        );
        assert!(matches!(
            verdict(&failed, &[], &v(&["mx.163.com"])),
            Verdict::Failed(_)
        ));
        let passed = v(&[
            "mx.163.com; spf=pass smtp.mailfrom=yj.gov.cn; dkim=pass header.d=yj.gov.cn; dmarc=pass",
        ]);
        assert_eq!(verdict(&passed, &[], &[]), Verdict::NotFailed);
        assert_eq!(
            verdict(&[], &[], &[]),
            Verdict::NotFailed,
            "no verdict at all"
        );
    }

    #[test]
    fn only_the_receiving_servers_header_counts() {
        // The topmost header is the receiving server's; one further down
        // was written by whoever sent the message.
        let forged_below = v(&[
            "mx.163.com; spf=pass smtp.mailfrom=yj.gov.cn; dmarc=pass",
            "mx.163.com; spf=fail; dmarc=fail",
        ]);
        assert_eq!(verdict(&forged_below, &[], &[]), Verdict::NotFailed);
        // With a pinned authserv-id, a header of another server is ignored.
        let other = v(&["evil.example; spf=fail; dmarc=fail"]);
        assert_eq!(
            verdict(&other, &[], &v(&["mx.163.com"])),
            Verdict::NotFailed
        );
        assert!(matches!(verdict(&other, &[], &[]), Verdict::Failed(_)));
    }

    #[test]
    fn a_single_failure_with_another_pass_is_not_unverified() {
        // A forwarder breaks SPF, the DKIM signature survives.
        let forwarded = v(&["mx.163.com; spf=fail; dkim=pass header.d=yj.gov.cn"]);
        assert_eq!(verdict(&forwarded, &[], &[]), Verdict::NotFailed);
        let softfail = v(&["mx.163.com; spf=softfail; dkim=none"]);
        assert_eq!(verdict(&softfail, &[], &[]), Verdict::NotFailed);
        let only_dmarc = v(&["mx.163.com; spf=pass; dkim=pass; dmarc=fail"]);
        assert!(matches!(verdict(&only_dmarc, &[], &[]), Verdict::Failed(_)));
    }

    #[test]
    fn received_spf_gives_the_spf_result_when_no_results_header_does() {
        let spf = v(&[
            "Fail (mx.163.com: domain of yj.gov.cn does not designate 203.0.113.9 as permitted sender)",
        ]);
        assert!(matches!(verdict(&[], &spf, &[]), Verdict::Failed(t) if t.contains("SPF")));
        assert_eq!(
            verdict(&[], &v(&["Pass (mx.163.com)"]), &[]),
            Verdict::NotFailed
        );
    }
}
