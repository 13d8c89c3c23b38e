//! The pages the office reads, and the files it takes away. Every value
//! from a mail reaches the page through an askama template, which escapes
//! it; only the server-drawn SVG charts are inserted as markup (they escape
//! their own text).

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::TimeZone;

use super::WebState;
use super::auth::Authed;
use super::chart;
use crate::campaign::reminders;
use crate::parse::registration::Field;
use crate::parse::sniff::{Format, sniff};
use crate::store::outbox::{self, OutboxKind, OutboxState};
use crate::store::progress::{UnitProgress, UnitState};
use crate::store::{AttachmentBrief, MessageRef, StoreError};
use crate::workspace::{book, export, problem_zh, status};

/// Renders a template; a template that fails is a logged server error.
pub fn render(t: &impl Template) -> Result<String, askama::Error> {
    t.render()
}

/// An HTML answer (or a server error page).
pub fn html(status: StatusCode, body: Result<String, askama::Error>) -> Response {
    match body {
        Ok(text) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            server_error()
        }
    }
}

fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "服务器内部错误，请稍后再试或联系管理员。",
    )
        .into_response()
}

fn store_failed(e: StoreError) -> Response {
    tracing::error!(error = %e, "workspace read failed");
    server_error()
}

/// The menu, the user and the message of the last action.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: String,
    pub role_zh: &'static str,
    pub csrf: String,
    pub can_edit: bool,
    pub active: &'static str,
    pub ok: Option<String>,
    pub err: Option<String>,
    pub campaign: String,
}

/// What an action left to say (`?ok=` / `?err=` after its redirect).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Flash {
    ok: Option<String>,
    err: Option<String>,
    state: Option<String>,
    q: Option<String>,
}

fn nav(state: &WebState, user: &Authed, active: &'static str, flash: &Flash) -> Nav {
    Nav {
        user: user.user.clone(),
        role_zh: user.role.zh(),
        csrf: user.csrf.clone(),
        can_edit: user.can_edit(),
        active,
        ok: flash.ok.clone(),
        err: flash.err.clone(),
        campaign: state.app.config.campaign_name().to_string(),
    }
}

fn time_text(state: &WebState, t: i64) -> String {
    state
        .app
        .config
        .timezone()
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn roster_units(state: &WebState) -> &[crate::parse::roster::Unit] {
    state
        .app
        .roster
        .as_ref()
        .map(|r| r.units.as_slice())
        .unwrap_or_default()
}

async fn progress(
    state: &WebState,
) -> Result<Vec<(&crate::parse::roster::Unit, UnitProgress)>, StoreError> {
    let config = &state.app.config;
    state
        .app
        .intake
        .store()
        .roster_progress(
            state.app.roster.as_ref(),
            config.campaign_name(),
            &config.required,
        )
        .await
}

fn state_class(s: UnitState) -> &'static str {
    match s {
        UnitState::Registered => "ok",
        UnitState::NeedsReview => "warn",
        UnitState::Missing => "bad",
    }
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "没有这个页面。").into_response()
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("static/app.css"),
    )
        .into_response()
}

// ---- dashboard ------------------------------------------------------------

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    nav: Nav,
    counts: status::Counts,
    deadline: Option<String>,
    remaining: Option<String>,
    progress_svg: String,
    category_svg: String,
    sources: Vec<status::SourceStatus>,
    review: usize,
    held: Option<status::Held>,
    failed_mail: usize,
    undeliverable: usize,
}

pub async fn dashboard(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Query(flash): Query<Flash>,
) -> Response {
    let app = &state.app;
    let now = app.clock.now();
    let status =
        match status::build(app.intake.store(), &app.config, app.roster.as_ref(), now).await {
            Ok(s) => s,
            Err(e) => return store_failed(e),
        };
    let progress = match progress(&state).await {
        Ok(p) => p,
        Err(e) => return store_failed(e),
    };
    let tz = app.config.timezone();
    let day = |t: i64| tz.timestamp_opt(t, 0).single().map(|d| d.date_naive());
    let mut per_day: std::collections::BTreeMap<chrono::NaiveDate, usize> = Default::default();
    let mut first_arrival: Option<chrono::NaiveDate> = None;
    let mut categories: Vec<chart::CategoryCount> = Vec::new();
    for (unit, p) in &progress {
        if let Some(d) = p.latest.as_ref().and_then(|l| day(l.received_at)) {
            first_arrival = Some(first_arrival.map_or(d, |f| f.min(d)));
            if p.state == UnitState::Registered {
                *per_day.entry(d).or_default() += 1;
            }
        }
        let category = if unit.category.is_empty() {
            "未分类".to_string()
        } else {
            unit.category.clone()
        };
        let entry = match categories.iter_mut().find(|c| c.category == category) {
            Some(c) => c,
            None => {
                categories.push(chart::CategoryCount {
                    category,
                    registered: 0,
                    needs_review: 0,
                    missing: 0,
                });
                categories.last_mut().expect("just pushed")
            }
        };
        match p.state {
            UnitState::Registered => entry.registered += 1,
            UnitState::NeedsReview => entry.needs_review += 1,
            UnitState::Missing => entry.missing += 1,
        }
    }
    let campaign = app.config.campaign.as_ref();
    let today = day(now).unwrap_or_default();
    let deadline_day = campaign.map(|c| c.deadline.date_naive());
    let progress_svg = chart::progress_chart(&chart::Progress {
        total: progress.len(),
        per_day: per_day.into_iter().collect(),
        start: first_arrival.map(|f| deadline_day.map_or(f, |d| f.min(d - chrono::Days::new(14)))),
        deadline: deadline_day,
        today,
    });
    let page = Dashboard {
        nav: nav(&state, &user, "dashboard", &flash),
        deadline: campaign.map(|c| c.deadline.format("%Y年%-m月%-d日 %H:%M").to_string()),
        remaining: campaign.map(|c| reminders::remaining_zh(&c.deadline, now)),
        progress_svg,
        category_svg: chart::category_chart(&categories),
        review: status.review.len(),
        held: status.reminders_held.clone(),
        failed_mail: status.failed_mail.len(),
        undeliverable: status.undeliverable.len(),
        counts: status.counts,
        sources: status.sources,
    };
    html(StatusCode::OK, render(&page))
}

// ---- units ----------------------------------------------------------------

struct UnitRow {
    id: String,
    name: String,
    category: String,
    state_zh: &'static str,
    class: &'static str,
    leader: String,
    officer: String,
    mobile: String,
    received: String,
    submissions: i64,
    reminders: i64,
    note: String,
}

#[derive(Template)]
#[template(path = "units.html")]
struct Units {
    nav: Nav,
    rows: Vec<UnitRow>,
    filter: String,
    q: String,
    total: usize,
}

pub async fn units(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Query(flash): Query<Flash>,
) -> Response {
    let progress = match progress(&state).await {
        Ok(p) => p,
        Err(e) => return store_failed(e),
    };
    let filter = flash.state.clone().unwrap_or_default();
    let q = flash.q.clone().unwrap_or_default();
    let total = progress.len();
    let rows = progress
        .iter()
        .filter(|(_, p)| filter.is_empty() || p.state.as_str() == filter)
        .filter(|(u, _)| q.is_empty() || u.name.contains(q.trim()) || u.id.contains(q.trim()))
        .map(|(u, p)| {
            let field = |path: &str| {
                p.latest
                    .as_ref()
                    .and_then(|l| l.value(path).as_str().map(String::from))
                    .unwrap_or_default()
            };
            UnitRow {
                id: u.id.clone(),
                name: u.name.clone(),
                category: u.category.clone(),
                state_zh: p.state.zh(),
                class: state_class(p.state),
                leader: field("leader.name"),
                officer: field("officer.name"),
                mobile: field("officer.mobile"),
                received: p
                    .latest
                    .as_ref()
                    .map(|l| time_text(&state, l.received_at))
                    .unwrap_or_default(),
                submissions: p.submissions,
                reminders: p.reminders_sent,
                note: book::note(p),
            }
        })
        .collect();
    let page = Units {
        nav: nav(&state, &user, "units", &flash),
        rows,
        filter,
        q,
        total,
    };
    html(StatusCode::OK, render(&page))
}

struct FieldRow {
    path: &'static str,
    label: &'static str,
    value: String,
    corrected: bool,
    problem: bool,
}

struct PartLink {
    n: usize,
    name: String,
    size: String,
}

struct Submission {
    id: String,
    from: String,
    subject: String,
    received: String,
    current: bool,
    attachments: Vec<AttachmentBrief>,
    parts: Vec<PartLink>,
}

struct MailLine {
    at: String,
    kind: &'static str,
    to: String,
    subject: String,
    state: &'static str,
}

#[derive(Template)]
#[template(path = "unit.html")]
struct UnitPage {
    nav: Nav,
    id: String,
    name: String,
    category: String,
    emails: String,
    state_zh: &'static str,
    class: &'static str,
    has_registration: bool,
    source: String,
    received: String,
    note: String,
    fields: Vec<FieldRow>,
    ask_items: Vec<String>,
    submissions: Vec<Submission>,
    mails: Vec<MailLine>,
    trail: Vec<String>,
}

/// The lines a correction request lists: each required field missing and
/// each field with a problem, in Chinese.
pub fn ask_items(p: &UnitProgress, required: &[Field]) -> Vec<String> {
    let Some(l) = &p.latest else {
        return Vec::new();
    };
    let mut items = Vec::new();
    for f in required {
        if l.value(f.path()).is_null() {
            items.push(format!("{}：未填写", f.label_zh()));
        }
    }
    for code in &l.problems {
        if code != "missing_field" && code.starts_with("invalid_") {
            items.push(problem_zh(code));
        }
    }
    items
}

fn size_text(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / 1048576.0)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}

/// The file parts of a stored message, as links.
fn parts_of(state: &WebState, m: &MessageRef) -> Vec<PartLink> {
    let Ok(raw) = state.app.intake.archive().read(&m.archive_path) else {
        return Vec::new();
    };
    crate::parse::message::parse(&raw, &state.app.config.limits.message)
        .parts
        .iter()
        .enumerate()
        .map(|(n, p)| PartLink {
            n,
            name: p
                .filename
                .clone()
                .unwrap_or_else(|| format!("附件{}", n + 1)),
            size: size_text(p.bytes.len()),
        })
        .collect()
}

fn kind_zh(kind: OutboxKind) -> &'static str {
    use crate::store::outbox::MailKind;
    match kind {
        OutboxKind::Mail(MailKind::Ack) => "回执",
        OutboxKind::Mail(MailKind::AckUnmatched) => "回执（待核对）",
        OutboxKind::Mail(MailKind::Reminder) => "催报提醒",
        OutboxKind::Mail(MailKind::OverdueReminder) => "逾期提醒",
        OutboxKind::Mail(MailKind::OverdueReport) => "通报",
        OutboxKind::Mail(MailKind::RemindersHeld) => "提醒暂停通知",
        OutboxKind::Mail(MailKind::CorrectionRequest) => "请单位更正",
        OutboxKind::Missed => "错过的提醒",
    }
}

fn mail_state_zh(s: OutboxState) -> &'static str {
    match s {
        OutboxState::Sent => "已发送",
        OutboxState::Queued => "待发送",
        OutboxState::Sending => "发送中",
        OutboxState::Failed => "发送失败",
        OutboxState::Cancelled => "已取消",
        OutboxState::Missed => "已错过",
    }
}

pub async fn unit(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Path(unit_id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let app = &state.app;
    let Some(u) = app.roster.as_ref().and_then(|r| r.get(&unit_id)).cloned() else {
        return not_found().await;
    };
    let store = app.intake.store();
    let config = &app.config;
    let read = async {
        let p = store
            .unit_progress(&[u.id.as_str()], config.campaign_name(), &config.required)
            .await?
            .pop();
        let messages = store.messages_about(&u.id).await?;
        let mut submissions = Vec::new();
        for m in messages.iter().rev() {
            submissions.push((m.clone(), store.attachments_of(&m.id).await?));
        }
        let mails = outbox::of_unit(store, config.campaign_name(), &u.id).await?;
        let decisions = store.decisions_about(&u.id).await?;
        Ok::<_, StoreError>((p, submissions, mails, decisions))
    };
    let (p, submissions, mails, decisions) = match read.await {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    let Some(p) = p else {
        return server_error();
    };
    let latest = p.latest.as_ref();
    let fields = Field::ALL
        .into_iter()
        .map(|f| FieldRow {
            path: f.path(),
            label: f.label_zh(),
            value: latest
                .map(|l| match l.value(f.path()) {
                    serde_json::Value::Null => String::new(),
                    v => crate::workspace::book::value_text(v),
                })
                .unwrap_or_default(),
            corrected: latest.is_some_and(|l| l.corrected.iter().any(|c| c == f.path())),
            problem: latest
                .is_some_and(|l| l.value(f.path()).is_null() && config.required.contains(&f)),
        })
        .collect();
    let time = |t: i64| time_text(&state, t);
    let page = UnitPage {
        nav: nav(&state, &user, "units", &flash),
        id: u.id.clone(),
        name: u.name.clone(),
        category: u.category.clone(),
        emails: u.emails.join("、"),
        state_zh: p.state.zh(),
        class: state_class(p.state),
        has_registration: latest.is_some(),
        source: latest
            .and_then(|l| l.fields["source"].as_str().map(String::from))
            .unwrap_or_default(),
        received: latest.map(|l| time(l.received_at)).unwrap_or_default(),
        note: book::note(&p),
        fields,
        ask_items: ask_items(&p, &config.required),
        submissions: submissions
            .into_iter()
            .map(|(m, attachments)| Submission {
                parts: parts_of(&state, &m),
                current: latest.is_some_and(|l| l.message == m.id),
                from: m.from_addr.clone().unwrap_or_default(),
                subject: m.subject.clone().unwrap_or_default(),
                received: time(m.received_at),
                id: m.id,
                attachments,
            })
            .collect(),
        mails: mails
            .into_iter()
            .map(|m| MailLine {
                at: time(m.sent_at.unwrap_or(m.created_at)),
                kind: kind_zh(m.kind),
                to: m.to,
                subject: m.subject,
                state: mail_state_zh(m.state),
            })
            .collect(),
        trail: decisions
            .iter()
            .map(|d| crate::workspace::decide::decision_line(d, &time))
            .collect(),
    };
    html(StatusCode::OK, render(&page))
}

// ---- review ---------------------------------------------------------------

struct ReviewLine {
    id: String,
    message_id: String,
    from: String,
    subject: String,
    received: String,
    reason: String,
    unit_id: String,
    unit_name: String,
    unit_has_registration: bool,
    attachments: Vec<AttachmentBrief>,
}

struct OpenUnit {
    id: String,
    name: String,
    note: String,
}

struct Choice {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "review.html")]
struct Review {
    nav: Nav,
    items: Vec<ReviewLine>,
    open_units: Vec<OpenUnit>,
    units: Vec<Choice>,
    fields: Vec<Choice>,
}

pub async fn review(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Query(flash): Query<Flash>,
) -> Response {
    let app = &state.app;
    let progress = match progress(&state).await {
        Ok(p) => p,
        Err(e) => return store_failed(e),
    };
    let items =
        match status::review_items(app.intake.store(), app.config.timezone(), &progress).await {
            Ok(i) => i,
            Err(e) => return store_failed(e),
        };
    let by_id: HashMap<&str, &(&crate::parse::roster::Unit, UnitProgress)> =
        progress.iter().map(|p| (p.0.id.as_str(), p)).collect();
    let lines = items
        .into_iter()
        .map(|r| {
            let unit = r.unit_id.as_deref().and_then(|u| by_id.get(u));
            ReviewLine {
                received: time_text(&state, r.received_ts),
                reason: problem_zh(&r.reason),
                unit_name: unit.map(|u| u.0.name.clone()).unwrap_or_default(),
                unit_has_registration: unit.is_some_and(|u| u.1.latest.is_some()),
                unit_id: r.unit_id.unwrap_or_default(),
                from: r.from.unwrap_or_default(),
                subject: r.subject.unwrap_or_default(),
                message_id: r.message_id,
                id: r.id,
                attachments: r.attachments,
            }
        })
        .collect();
    let open_units = progress
        .iter()
        .filter(|(_, p)| p.state == UnitState::NeedsReview && p.latest.is_some())
        .map(|(u, p)| OpenUnit {
            id: u.id.clone(),
            name: u.name.clone(),
            note: book::note(p),
        })
        .collect();
    let page = Review {
        nav: nav(&state, &user, "review", &flash),
        items: lines,
        open_units,
        units: roster_units(&state)
            .iter()
            .map(|u| Choice {
                value: u.id.clone(),
                label: u.name.clone(),
            })
            .collect(),
        fields: Field::ALL
            .into_iter()
            .map(|f| Choice {
                value: f.path().into(),
                label: f.label_zh().into(),
            })
            .collect(),
    };
    html(StatusCode::OK, render(&page))
}

// ---- reminders --------------------------------------------------------------

struct PlanLine {
    unit: String,
    slot: String,
    at: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "remind.html")]
struct Remind {
    nav: Nav,
    configured: bool,
    enabled: bool,
    header: String,
    lines: Vec<PlanLine>,
}

pub async fn remind(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Query(flash): Query<Flash>,
) -> Response {
    let app = &state.app;
    let now = app.clock.now();
    let mut page = Remind {
        nav: nav(&state, &user, "remind", &flash),
        configured: false,
        enabled: app.config.mailing.reminders_enabled,
        header: String::new(),
        lines: Vec::new(),
    };
    if let Some(campaign) = &app.config.campaign {
        let (units, sent) = match crate::campaign::planner_input(&app.mailing()).await {
            Ok(input) => input,
            Err(e) => {
                tracing::error!(error = %e, "reminder plan failed");
                return server_error();
            }
        };
        page.configured = true;
        page.header = format!(
            "截止 {}（{}）",
            campaign.deadline.format("%Y-%m-%d %H:%M"),
            reminders::remaining_zh(&campaign.deadline, now)
        );
        page.lines = reminders::plan(
            &app.config.mailing.schedule,
            &campaign.deadline,
            &units,
            &sent,
            now,
        )
        .into_iter()
        .map(|l| PlanLine {
            unit: l.unit_name.clone(),
            slot: l.slot.clone(),
            at: time_text(&state, l.at),
            outcome: l.outcome.zh(),
        })
        .collect();
    }
    html(StatusCode::OK, render(&page))
}

// ---- the printable 名册 ---------------------------------------------------

#[derive(Template)]
#[template(path = "roster.html")]
struct RosterPage {
    nav: Nav,
    title: String,
    printed: String,
    rows: Vec<PrintRow>,
    columns: Vec<&'static str>,
}

struct PrintRow {
    name: String,
    state_zh: String,
    cells: Vec<String>,
}

/// The columns of the printed 名册 (the whole form does not fit a page).
const PRINTED: [Field; 9] = [
    Field::LeaderName,
    Field::LeaderTitle,
    Field::LeaderMobile,
    Field::LeaderOfficePhone,
    Field::OfficerName,
    Field::OfficerTitle,
    Field::OfficerMobile,
    Field::OfficerOfficePhone,
    Field::OfficerEmail,
];

pub async fn roster(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Query(flash): Query<Flash>,
) -> Response {
    let Some(r) = state.app.roster.as_ref() else {
        return html(StatusCode::OK, Ok("未配置单位名单。".into()));
    };
    let book = match book::build(state.app.intake.store(), &state.app.config, r).await {
        Ok(b) => b,
        Err(e) => return store_failed(e),
    };
    let page = RosterPage {
        nav: nav(&state, &user, "roster", &flash),
        title: book.title.clone(),
        printed: time_text(&state, state.app.clock.now()),
        rows: book
            .rows
            .into_iter()
            .map(|r| PrintRow {
                cells: PRINTED
                    .iter()
                    .map(|f| r.fields.get(f).cloned().unwrap_or_default())
                    .collect(),
                name: r.unit_name,
                state_zh: r.state_zh,
            })
            .collect(),
        columns: PRINTED.iter().map(|f| short_label(*f)).collect(),
    };
    html(StatusCode::OK, render(&page))
}

fn short_label(f: Field) -> &'static str {
    match f {
        Field::LeaderName | Field::OfficerName => "姓名",
        Field::LeaderTitle | Field::OfficerTitle => "职务",
        Field::LeaderMobile | Field::OfficerMobile => "手机",
        Field::LeaderOfficePhone | Field::OfficerOfficePhone => "办公电话",
        Field::OfficerEmail => "电子邮箱",
        other => other.label_zh(),
    }
}

// ---- files ------------------------------------------------------------------

/// `attachment; filename="…"; filename*=UTF-8''…`: a download, never shown
/// in our origin.
fn attachment_disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn download(bytes: Vec<u8>, content_type: &str, name: &str) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_DISPOSITION, attachment_disposition(name));
    response
}

async fn the_book(state: &WebState) -> Result<export::Book, Response> {
    let Some(r) = state.app.roster.as_ref() else {
        return Err((StatusCode::NOT_FOUND, "未配置单位名单。").into_response());
    };
    book::build(state.app.intake.store(), &state.app.config, r)
        .await
        .map_err(store_failed)
}

fn book_name(state: &WebState, ext: &str) -> String {
    format!("{}名册.{ext}", state.app.config.campaign_name())
}

pub async fn export_xlsx(State(state): State<WebState>) -> Response {
    let book = match the_book(&state).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match export::write_xlsx(&book) {
        Ok(bytes) => download(
            bytes,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            &book_name(&state, "xlsx"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "xlsx export failed");
            server_error()
        }
    }
}

pub async fn export_csv(State(state): State<WebState>) -> Response {
    match the_book(&state).await {
        Ok(book) => download(
            export::write_csv(&book),
            "text/csv; charset=utf-8",
            &book_name(&state, "csv"),
        ),
        Err(r) => r,
    }
}

pub async fn export_vcf(State(state): State<WebState>) -> Response {
    match the_book(&state).await {
        Ok(book) => download(
            export::write_vcf(&book).into_bytes(),
            "text/vcard; charset=utf-8",
            &book_name(&state, "vcf"),
        ),
        Err(r) => r,
    }
}

pub async fn api_status(State(state): State<WebState>) -> Response {
    let app = &state.app;
    match status::build(
        app.intake.store(),
        &app.config,
        app.roster.as_ref(),
        app.clock.now(),
    )
    .await
    {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => store_failed(e),
    }
}

async fn stored_message(state: &WebState, id: &str) -> Result<(MessageRef, Vec<u8>), Response> {
    let m = match state.app.intake.store().message_ref(id).await {
        Ok(Some(m)) => m,
        Ok(None) => return Err(not_found().await),
        Err(e) => return Err(store_failed(e)),
    };
    match state.app.intake.archive().read(&m.archive_path) {
        Ok(raw) => Ok((m, raw)),
        Err(e) => {
            tracing::error!(error = %e, "cannot read an archived message");
            Err((StatusCode::NOT_FOUND, "存档中找不到这封邮件的原件。").into_response())
        }
    }
}

/// The original message as received (`.eml`).
pub async fn raw_message(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match stored_message(&state, &id).await {
        Ok((m, raw)) => download(
            raw,
            "message/rfc822",
            &format!("{}.eml", &m.id[..m.id.len().min(16)]),
        ),
        Err(r) => r,
    }
}

/// The MIME type of a file by its content (never `text/html`: an attached
/// page must not run in the workspace's origin).
fn content_type_of(bytes: &[u8], name: Option<&str>) -> &'static str {
    match sniff(bytes, name) {
        Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Format::Xlsb => "application/vnd.ms-excel.sheet.binary.macroEnabled.12",
        Format::Xls => "application/vnd.ms-excel",
        Format::Ods => "application/vnd.oasis.opendocument.spreadsheet",
        Format::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Format::Doc | Format::EncryptedOoxml => "application/msword",
        Format::Rtf => "application/rtf",
        Format::Pdf => "application/pdf",
        Format::Image if bytes.starts_with(&[0xFF, 0xD8]) => "image/jpeg",
        Format::Image if bytes.starts_with(b"\x89PNG") => "image/png",
        Format::Image if bytes.starts_with(b"GIF8") => "image/gif",
        Format::Image if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") => "image/tiff",
        Format::Zip => "application/zip",
        Format::Message => "message/rfc822",
        Format::Text | Format::BodyText => "text/plain; charset=utf-8",
        Format::BodyHtml | Format::BodyHtmlForward => "text/html; charset=utf-8",
        Format::Image | Format::Other => "application/octet-stream",
    }
}

/// One file part of a stored message, as a download with its sniffed type.
pub async fn message_part(
    State(state): State<WebState>,
    Path((id, n)): Path<(String, usize)>,
) -> Response {
    let (_, raw) = match stored_message(&state, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut parsed = crate::parse::message::parse(&raw, &state.app.config.limits.message);
    if n >= parsed.parts.len() {
        return not_found().await;
    }
    let part = parsed.parts.swap_remove(n);
    let name = part
        .filename
        .clone()
        .unwrap_or_else(|| format!("附件{}", n + 1));
    let content_type = content_type_of(&part.bytes, part.filename.as_deref());
    let bytes = if content_type.starts_with("text/plain") {
        crate::parse::sniff::decode_text(&part.bytes).into_bytes()
    } else {
        part.bytes
    };
    download(bytes, content_type, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attached_page_is_never_html() {
        let page = b"<html><script>alert(1)</script></html>";
        assert_eq!(
            content_type_of(page, Some("a.html")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type_of(b"%PDF-1.4 ...", None), "application/pdf");
        assert_eq!(
            content_type_of(&[0, 1, 2, 3, 0xFF], None),
            "application/octet-stream"
        );
    }

    #[test]
    fn downloads_name_their_file_in_both_forms() {
        let v = attachment_disposition("登记表 (1).xls");
        let text = v.to_str().unwrap();
        assert!(text.starts_with("attachment; filename=\""));
        assert!(text.contains("filename*=UTF-8''%E7%99%BB"));
        assert!(!text.contains(' ') || text.contains("attachment; filename"));
    }
}
