//! Which reminders (催报提醒) are due: a pure function of the roster's
//! state, what was already sent, the schedule and `now`. No I/O, so the
//! whole campaign can be played through in unit tests with a fixed clock;
//! sending is `crate::store::outbox`'s job.
//!
//! A slot is a time relative to the deadline's calendar day (`-2d 10:00`:
//! two days before, at 10:00 local time). Slots up to the deadline remind
//! units that have not registered; slots after it are overdue notices. A
//! slot missed while the service was down is sent late only within the
//! grace window; later it is recorded as missed, never sent.

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

use crate::store::progress::UnitState;

/// One reminder slot of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `-2d 10:00` as written in the config; also the slot's key in the
    /// outbox, so a slot is sent at most once per unit.
    pub key: String,
    pub day_offset: i64,
    pub time: NaiveTime,
}

impl Slot {
    /// Parses `-2d 10:00`, `0d 09:30`, `+1d 9:00`.
    pub fn parse(text: &str) -> Option<Slot> {
        let (day, time) = text.trim().split_once(' ')?;
        let days = day.trim().strip_suffix('d')?;
        let day_offset: i64 = days.trim_start_matches('+').parse().ok()?;
        let time = NaiveTime::parse_from_str(time.trim(), "%H:%M").ok()?;
        Some(Slot {
            key: text.trim().to_string(),
            day_offset,
            time,
        })
    }

    /// When the slot falls for a deadline.
    pub fn at(&self, deadline: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let day = deadline
            .date_naive()
            .checked_add_signed(Duration::days(self.day_offset))?;
        deadline
            .timezone()
            .from_local_datetime(&day.and_time(self.time))
            .earliest()
    }
}

/// The reminder schedule (`[reminders]` in the config, checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub slots: Vec<Slot>,
    /// Least time between two reminders to one unit.
    pub min_gap: Duration,
    pub max_per_unit: usize,
    pub skip_weekends: bool,
    /// How late a missed slot may still be sent.
    pub grace: Duration,
    /// Remind units whose submission waits for review, telling them why.
    pub include_needs_review: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        let slots = ["-2d 10:00", "-1d 10:00", "0d 10:00", "+1d 09:00"]
            .iter()
            .filter_map(|s| Slot::parse(s))
            .collect();
        Self {
            slots,
            min_gap: Duration::hours(20),
            max_per_unit: 4,
            skip_weekends: false,
            grace: Duration::hours(6),
            include_needs_review: false,
        }
    }
}

/// A unit as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitView {
    pub unit_id: String,
    pub unit_name: String,
    /// Where reminders go; `None` when the roster has no address.
    pub address: Option<String>,
    pub state: UnitState,
    /// Why a unit that `NeedsReview` does (its problem codes), told in
    /// its reminder; empty otherwise.
    pub review_reason: String,
    /// The address bounced: left out, and listed for the office.
    pub undeliverable: bool,
}

/// A reminder already in the outbox (queued, sent or failed) or recorded
/// as missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub unit_id: String,
    pub slot: String,
    /// Unix seconds.
    pub at: i64,
    /// Recorded as missed (never sent).
    pub missed: bool,
}

/// What to do about one (unit, slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send now.
    Send {
        unit_id: String,
        slot: String,
        overdue: bool,
        scheduled_at: i64,
    },
    /// The slot passed more than `grace` ago while nothing was sent.
    Missed {
        unit_id: String,
        slot: String,
        scheduled_at: i64,
    },
}

/// Why a unit gets no reminder in a slot (for `remind plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Registered,
    NeedsReviewExcluded,
    NoAddress,
    Undeliverable,
    AlreadyHandled,
    MaxReached,
    TooSoon,
    Weekend,
}

impl Skip {
    pub fn zh(&self) -> &'static str {
        match self {
            Skip::Registered => "已登记",
            Skip::NeedsReviewExcluded => "待人工处理（未设置提醒）",
            Skip::NoAddress => "名单中没有邮箱地址",
            Skip::Undeliverable => "邮箱地址退信",
            Skip::AlreadyHandled => "该时段已处理",
            Skip::MaxReached => "已达提醒次数上限",
            Skip::TooSoon => "距上次提醒时间过短",
            Skip::Weekend => "周末不发送",
        }
    }
}

/// Decides every (unit, slot) pair whose time has come at `now`.
pub fn due(
    schedule: &Schedule,
    deadline: &DateTime<Tz>,
    units: &[UnitView],
    sent: &[Sent],
    now: i64,
) -> Vec<Decision> {
    let mut out = Vec::new();
    // Reminders decided in this call count towards gap and maximum too.
    let mut planned: Vec<Sent> = Vec::new();
    for slot in &schedule.slots {
        let Some(at) = slot.at(deadline) else {
            continue;
        };
        let scheduled_at = at.timestamp();
        if scheduled_at > now {
            continue;
        }
        let overdue = at > *deadline;
        for unit in units {
            let history: Vec<&Sent> = sent
                .iter()
                .chain(&planned)
                .filter(|s| s.unit_id == unit.unit_id)
                .collect();
            if history.iter().any(|s| s.slot == slot.key) {
                continue;
            }
            if eligibility(schedule, unit, overdue).is_some() {
                continue;
            }
            if schedule.skip_weekends && matches!(at.weekday(), Weekday::Sat | Weekday::Sun) {
                continue;
            }
            let real: Vec<&&Sent> = history.iter().filter(|s| !s.missed).collect();
            if real.len() >= schedule.max_per_unit {
                continue;
            }
            if now - scheduled_at > schedule.grace.num_seconds() {
                out.push(Decision::Missed {
                    unit_id: unit.unit_id.clone(),
                    slot: slot.key.clone(),
                    scheduled_at,
                });
                planned.push(Sent {
                    unit_id: unit.unit_id.clone(),
                    slot: slot.key.clone(),
                    at: now,
                    missed: true,
                });
                continue;
            }
            if real
                .iter()
                .any(|s| now - s.at < schedule.min_gap.num_seconds())
            {
                continue;
            }
            out.push(Decision::Send {
                unit_id: unit.unit_id.clone(),
                slot: slot.key.clone(),
                overdue,
                scheduled_at,
            });
            planned.push(Sent {
                unit_id: unit.unit_id.clone(),
                slot: slot.key.clone(),
                at: now,
                missed: false,
            });
        }
    }
    out
}

/// Why `unit` gets no reminder at all in a slot, or `None` when it may.
pub fn eligibility(schedule: &Schedule, unit: &UnitView, _overdue: bool) -> Option<Skip> {
    match unit.state {
        UnitState::Registered => return Some(Skip::Registered),
        UnitState::NeedsReview if !schedule.include_needs_review => {
            return Some(Skip::NeedsReviewExcluded);
        }
        _ => {}
    }
    if unit.undeliverable {
        return Some(Skip::Undeliverable);
    }
    if unit.address.is_none() {
        return Some(Skip::NoAddress);
    }
    None
}

/// One line of `remind plan`: who would get what, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    pub unit_id: String,
    pub unit_name: String,
    pub slot: String,
    pub at: i64,
    pub outcome: PlanOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOutcome {
    /// Sent now if the service ran at `at`.
    DueNow {
        overdue: bool,
    },
    /// Comes later, if the unit is still missing then.
    Later {
        overdue: bool,
    },
    Missed,
    Skipped(Skip),
}

impl PlanOutcome {
    /// In Chinese, for the plan's table (`remind plan`, the web page).
    pub fn zh(&self) -> String {
        match self {
            PlanOutcome::DueNow { overdue: false } => "现在发送提醒".into(),
            PlanOutcome::DueNow { overdue: true } => "现在发送逾期提醒".into(),
            PlanOutcome::Later { overdue: false } => "届时仍未报送则提醒".into(),
            PlanOutcome::Later { overdue: true } => "届时仍未报送则发逾期提醒".into(),
            PlanOutcome::Missed => "已错过（服务停止期间），不再补发".into(),
            PlanOutcome::Skipped(skip) => format!("不发送：{}", skip.zh()),
        }
    }
}

/// The whole schedule seen from `now`: due, later, missed or skipped for
/// every unit and slot.
pub fn plan(
    schedule: &Schedule,
    deadline: &DateTime<Tz>,
    units: &[UnitView],
    sent: &[Sent],
    now: i64,
) -> Vec<PlanLine> {
    let decisions = due(schedule, deadline, units, sent, now);
    let mut lines = Vec::new();
    for slot in &schedule.slots {
        let Some(at) = slot.at(deadline) else {
            continue;
        };
        let overdue = at > *deadline;
        for unit in units {
            let decided = decisions.iter().find_map(|d| match d {
                Decision::Send {
                    unit_id,
                    slot: s,
                    overdue,
                    ..
                } if *unit_id == unit.unit_id && *s == slot.key => {
                    Some(PlanOutcome::DueNow { overdue: *overdue })
                }
                Decision::Missed {
                    unit_id, slot: s, ..
                } if *unit_id == unit.unit_id && *s == slot.key => Some(PlanOutcome::Missed),
                _ => None,
            });
            let outcome = if let Some(d) = decided {
                d
            } else if let Some(skip) = eligibility(schedule, unit, overdue) {
                PlanOutcome::Skipped(skip)
            } else if sent
                .iter()
                .any(|s| s.unit_id == unit.unit_id && s.slot == slot.key)
            {
                PlanOutcome::Skipped(Skip::AlreadyHandled)
            } else if schedule.skip_weekends && matches!(at.weekday(), Weekday::Sat | Weekday::Sun)
            {
                PlanOutcome::Skipped(Skip::Weekend)
            } else if at.timestamp() > now {
                PlanOutcome::Later { overdue }
            } else if sent
                .iter()
                .filter(|s| s.unit_id == unit.unit_id && !s.missed)
                .count()
                >= schedule.max_per_unit
            {
                PlanOutcome::Skipped(Skip::MaxReached)
            } else {
                PlanOutcome::Skipped(Skip::TooSoon)
            };
            lines.push(PlanLine {
                unit_id: unit.unit_id.clone(),
                unit_name: unit.unit_name.clone(),
                slot: slot.key.clone(),
                at: at.timestamp(),
                outcome,
            });
        }
    }
    lines
}

/// Time left until the deadline, as a person says it (`还剩2天5小时`).
pub fn remaining_zh(deadline: &DateTime<Tz>, now: i64) -> String {
    let left = deadline.timestamp() - now;
    if left <= 0 {
        let late = -left;
        return format!("已超过截止时间{}", span_zh(late));
    }
    format!("距截止还剩{}", span_zh(left))
}

fn span_zh(seconds: i64) -> String {
    let days = seconds / 86_400;
    let hours = (seconds % 86_400) / 3_600;
    let minutes = (seconds % 3_600) / 60;
    match (days, hours) {
        (0, 0) => format!("{}分钟", minutes.max(1)),
        (0, h) => format!("{h}小时"),
        (d, 0) => format!("{d}天"),
        (d, h) => format!("{d}天{h}小时"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline() -> DateTime<Tz> {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2007, 5, 20, 23, 59, 0)
            .single()
            .expect("valid")
    }

    fn local(d: u32, h: u32, m: u32) -> i64 {
        chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2007, 5, d, h, m, 0)
            .single()
            .expect("valid")
            .timestamp()
    }

    fn unit(id: &str, state: UnitState) -> UnitView {
        UnitView {
            unit_id: id.into(),
            unit_name: format!("{id}单位"),
            address: Some(format!("{id}@yj.gov.cn")),
            state,
            review_reason: String::new(),
            undeliverable: false,
        }
    }

    fn waiting(id: &str, reason: &str) -> UnitView {
        UnitView {
            review_reason: reason.into(),
            ..unit(id, UnitState::NeedsReview)
        }
    }

    /// Plays the campaign hour by hour, sending whatever is due, and
    /// returns what was sent.
    fn play(schedule: &Schedule, units: &[UnitView], from: i64, to: i64) -> Vec<Sent> {
        let mut sent = Vec::new();
        let mut now = from;
        while now <= to {
            for d in due(schedule, &deadline(), units, &sent, now) {
                match d {
                    Decision::Send { unit_id, slot, .. } => sent.push(Sent {
                        unit_id,
                        slot,
                        at: now,
                        missed: false,
                    }),
                    Decision::Missed { unit_id, slot, .. } => sent.push(Sent {
                        unit_id,
                        slot,
                        at: now,
                        missed: true,
                    }),
                }
            }
            now += 600;
        }
        sent
    }

    #[test]
    fn slots_parse_and_fall_on_local_days() {
        let s = Slot::parse("-2d 10:00").expect("slot");
        assert_eq!(
            s.at(&deadline()).map(|t| t.timestamp()),
            Some(local(18, 10, 0))
        );
        assert!(Slot::parse("tomorrow").is_none());
    }

    #[test]
    fn whole_campaign_reminds_missing_units_once_per_slot() {
        let schedule = Schedule::default();
        let units = [
            unit("a", UnitState::Missing),
            unit("b", UnitState::Registered),
            waiting("c", "missing_field"),
        ];
        let sent = play(&schedule, &units, local(15, 0, 0), local(23, 0, 0));
        let for_a: Vec<&str> = sent
            .iter()
            .filter(|s| s.unit_id == "a")
            .map(|s| s.slot.as_str())
            .collect();
        assert_eq!(
            for_a,
            vec!["-2d 10:00", "-1d 10:00", "0d 10:00", "+1d 09:00"]
        );
        assert!(sent.iter().all(|s| s.unit_id == "a" && !s.missed));
        // At the first slot's minute, exactly at 10:00 local time.
        assert_eq!(sent[0].at, local(18, 10, 0));
    }

    #[test]
    fn needs_review_is_reminded_when_configured() {
        let schedule = Schedule {
            include_needs_review: true,
            ..Schedule::default()
        };
        let units = [waiting("c", "scanned_document")];
        let sent = play(&schedule, &units, local(18, 0, 0), local(18, 12, 0));
        assert_eq!(sent.len(), 1);
    }

    #[test]
    fn a_slot_missed_while_down_is_sent_late_within_grace_only() {
        let schedule = Schedule::default();
        let units = [unit("a", UnitState::Missing)];
        // Down from 09:00 to 14:00 on the 18th: within 6 h of 10:00 → sent late.
        let d = due(&schedule, &deadline(), &units, &[], local(18, 14, 0));
        assert!(matches!(&d[..], [Decision::Send { slot, .. }] if slot == "-2d 10:00"));
        // Down until 17:00: more than 6 h late → missed, not sent.
        let d = due(&schedule, &deadline(), &units, &[], local(18, 17, 0));
        assert!(matches!(&d[..], [Decision::Missed { slot, .. }] if slot == "-2d 10:00"));
    }

    #[test]
    fn gap_maximum_bounces_and_weekends() {
        let units = [unit("a", UnitState::Missing)];
        let tight = Schedule {
            slots: vec![
                Slot::parse("0d 09:00").expect("s"),
                Slot::parse("0d 10:00").expect("s"),
            ],
            min_gap: Duration::hours(4),
            ..Schedule::default()
        };
        let sent = play(&tight, &units, local(20, 8, 0), local(20, 12, 0));
        assert_eq!(sent.len(), 1, "second slot within the gap is not sent");

        let one = Schedule {
            max_per_unit: 1,
            ..Schedule::default()
        };
        assert_eq!(
            play(&one, &units, local(15, 0, 0), local(23, 0, 0)).len(),
            1
        );

        let mut bounced = units[0].clone();
        bounced.undeliverable = true;
        assert!(
            play(
                &Schedule::default(),
                &[bounced],
                local(15, 0, 0),
                local(23, 0, 0)
            )
            .is_empty()
        );

        // 2007-05-19 and 20 are Saturday and Sunday.
        let weekdays = Schedule {
            skip_weekends: true,
            ..Schedule::default()
        };
        let slots: Vec<String> = play(&weekdays, &units, local(15, 0, 0), local(23, 0, 0))
            .into_iter()
            .map(|s| s.slot)
            .collect();
        assert_eq!(slots, vec!["-2d 10:00", "+1d 09:00"]);
    }

    #[test]
    fn plan_explains_every_unit_and_slot() {
        let units = [
            unit("a", UnitState::Missing),
            unit("b", UnitState::Registered),
        ];
        let lines = plan(
            &Schedule::default(),
            &deadline(),
            &units,
            &[],
            local(19, 10, 30),
        );
        let a: Vec<&PlanOutcome> = lines
            .iter()
            .filter(|l| l.unit_id == "a")
            .map(|l| &l.outcome)
            .collect();
        assert_eq!(a[0], &PlanOutcome::Missed);
        assert_eq!(a[1], &PlanOutcome::DueNow { overdue: false });
        assert_eq!(a[3], &PlanOutcome::Later { overdue: true });
        assert!(
            lines
                .iter()
                .filter(|l| l.unit_id == "b")
                .all(|l| l.outcome == PlanOutcome::Skipped(Skip::Registered))
        );
    }

    #[test]
    fn remaining_time_is_said_in_chinese() {
        assert_eq!(
            remaining_zh(&deadline(), local(18, 10, 0)),
            "距截止还剩2天13小时"
        );
        assert_eq!(
            remaining_zh(&deadline(), local(21, 9, 0) + 60),
            "已超过截止时间9小时"
        );
    }
}
