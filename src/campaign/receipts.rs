//! Receipts (回执) and bounces: what a processed message leaves for the
//! campaign, decided from its parse report alone and written by the store
//! in the same transaction as the message's results
//! ([`crate::store::FollowUp`]). Whatever stops the process, a processed
//! submission has its receipt row and a processed bounce its mark.

use std::collections::BTreeMap;

use super::Letters;
use crate::parse::message::{Automation, MessageKind};
use crate::parse::report::ParseReport;
use crate::store::outbox::{MailKind, NewMail};
use crate::store::{Claimed, FollowUp, Receipt};

/// Whether a message may get a receipt: a submission from a person —
/// never a bounce, an auto-reply, a list, bulk mail, a robot or ourselves
/// (RFC 3834).
pub fn receipt_allowed(
    kind: MessageKind,
    automation: &Automation,
    from: Option<&str>,
    our_address: &str,
) -> bool {
    kind == MessageKind::Submission
        && !automation.never_answered()
        && from.is_some_and(|from| from != our_address.to_lowercase())
}

impl Letters {
    /// What a processed message leaves for the campaign: a bounce's
    /// references to our mail, or the receipt a submission gets.
    pub fn follow_up(&self, report: &ParseReport, claimed: &Claimed, now: i64) -> FollowUp {
        match report.kind {
            MessageKind::Bounce => FollowUp {
                receipt: None,
                bounced: report.automation.returned.clone(),
            },
            MessageKind::Submission | MessageKind::AutoReply => FollowUp {
                receipt: self.receipt(report, claimed, now),
                bounced: Vec::new(),
            },
        }
    }

    fn receipt(&self, report: &ParseReport, claimed: &Claimed, now: i64) -> Option<Receipt> {
        let envelope = report.message.as_ref()?;
        let from = envelope.from.clone()?;
        if !self.config.mailing.acks_enabled
            || !receipt_allowed(
                report.kind,
                &report.automation,
                Some(&from),
                &self.our_address,
            )
        {
            return None;
        }
        let mut values = self.base_values(now);
        values.insert("subject", envelope.subject.clone().unwrap_or_default());
        values.insert("received_at", self.fmt_time(claimed.received_at));
        values.insert("problems", problems_text(report));
        let credited = report
            .registrations
            .iter()
            .find_map(|r| r.unit_match.as_ref().map(|m| (r, m.unit_id.clone())));
        let (kind, unit_key) = match credited {
            Some((reg, unit_id)) => {
                self.registration_values(&reg.to_json(), &unit_id, &mut values);
                (MailKind::Ack, unit_id)
            }
            None => (MailKind::AckUnmatched, String::new()),
        };
        let (subject, body) = self.templates.render(kind, &values);
        Some(Receipt {
            mail: NewMail {
                campaign: self.campaign_name(),
                unit_key,
                slot: format!("ack:{}", claimed.id),
                kind,
                to: from,
                subject,
                body,
                in_reply_to: claimed.message_id.clone(),
                attachment: None,
            },
            domain: self.domain.clone(),
            // A reply to one of our own mails that brings no form is an
            // auto-responder that does not say so (or a person writing
            // back): answering it could go on forever.
            unless_replying_to: if report.registrations.is_empty() {
                report.automation.replies_to.clone()
            } else {
                Vec::new()
            },
        })
    }

    /// What a receipt says of the credited registration.
    fn registration_values(
        &self,
        fields: &serde_json::Value,
        unit_id: &str,
        values: &mut BTreeMap<&'static str, String>,
    ) {
        let get = |s: &str, k: &str| fields[s][k].as_str().unwrap_or("（未填）").to_string();
        let unit_name = self
            .roster
            .as_ref()
            .and_then(|r| r.get(unit_id))
            .map_or_else(|| get("unit", "name"), |u| u.name.clone());
        values.insert("unit_name", unit_name);
        for (key, section, field) in [
            ("leader_name", "leader", "name"),
            ("leader_title", "leader", "title"),
            ("leader_mobile", "leader", "mobile"),
            ("officer_name", "officer", "name"),
            ("officer_title", "officer", "title"),
            ("officer_mobile", "officer", "mobile"),
            ("officer_email", "officer", "email"),
        ] {
            values.insert(key, get(section, field));
        }
    }
}

/// The message's problems, as a receipt lists them.
fn problems_text(report: &ParseReport) -> String {
    if report.problems.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("  · {}", p.message))
        .collect();
    format!("请注意以下问题：\n{}\n", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_lists_bounces_and_ourselves_get_no_receipt() {
        let ours = "XXDC2004@163.com";
        let person = Automation::default();
        let allowed = |kind, automation: &Automation, from: &str| {
            receipt_allowed(kind, automation, Some(from), ours)
        };
        assert!(allowed(MessageKind::Submission, &person, "obj@yj.gov.cn"));
        assert!(!allowed(
            MessageKind::Submission,
            &person,
            "xxdc2004@163.com"
        ));
        assert!(!allowed(MessageKind::AutoReply, &person, "obj@yj.gov.cn"));
        assert!(!allowed(MessageKind::Bounce, &person, "obj@yj.gov.cn"));
        let set: [fn(&mut Automation); 5] = [
            |a| a.list = true,
            |a| a.bulk = true,
            |a| a.auto_submitted = true,
            |a| a.robot_sender = true,
            |a| a.ours = true,
        ];
        for flag in set {
            let mut automation = Automation::default();
            flag(&mut automation);
            assert!(
                !allowed(MessageKind::Submission, &automation, "a@yj.gov.cn"),
                "{automation:?}"
            );
        }
        assert!(!receipt_allowed(
            MessageKind::Submission,
            &person,
            None,
            ours
        ));
    }
}
