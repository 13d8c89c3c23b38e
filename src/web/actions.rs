//! What a person changes from the pages: each `POST` checks the session's
//! CSRF token and the editor role ([`refusal`]), does what the
//! command line does through [`crate::workspace::decide`], and answers 303
//! back to the page with what happened (`?ok=` or `?err=`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::WebState;
use super::auth::{Authed, refusal};
use super::pages::ask_items;
use crate::workspace::decide::{self, Actor, Refused};

#[derive(Debug, serde::Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    unit_id: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct DismissForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    note: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
    /// The page to go back to (`review` or the unit's page).
    #[serde(default)]
    back: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct SetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    back: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct SendNowForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    unit_id: String,
}

fn actor(state: &WebState, user: &Authed, note: &str) -> Actor {
    Actor {
        by: user.user.clone(),
        note: Some(note.trim().to_string()).filter(|n| !n.is_empty()),
        now: state.app.clock.now(),
    }
}

/// 303 to `path` with a message for the page.
fn back(path: &str, outcome: Result<String, String>) -> Response {
    let (key, text) = match outcome {
        Ok(t) => ("ok", t),
        Err(t) => ("err", t),
    };
    let query = serde_urlencoded::to_string([(key, text)]).unwrap_or_default();
    Redirect::to(&format!("{path}?{query}")).into_response()
}

/// Only our own pages are gone back to.
fn back_path(requested: &str, unit: &str) -> String {
    match requested {
        "review" => "/review".into(),
        _ => format!("/units/{unit}"),
    }
}

fn refused(e: Refused) -> String {
    if let Refused::Store(inner) = &e {
        tracing::error!(error = %inner, "workspace action failed");
        return "数据库暂时无法访问，请稍后再试。".into();
    }
    e.to_string()
}

fn roster(state: &WebState) -> Result<&crate::parse::roster::Roster, String> {
    state
        .app
        .roster
        .as_ref()
        .ok_or_else(|| "未配置单位名单。".to_string())
}

/// `POST /review/assign`: credits a message to a unit.
pub async fn assign(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Form(form): Form<AssignForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let unit_id = form.unit_id.trim();
    let outcome = async {
        let roster = roster(&state)?;
        let unit = decide::unit(roster, unit_id).map_err(refused)?;
        decide::assign(
            state.app.intake.store(),
            roster,
            &form.message,
            &unit.id,
            &actor(&state, &user, &form.note),
        )
        .await
        .map_err(refused)?;
        Ok(format!(
            "已归属到{}，请在该单位页面核对或补录各项内容。",
            unit.name
        ))
    }
    .await;
    match &outcome {
        Ok(_) => back(&format!("/units/{unit_id}"), outcome),
        Err(_) => back("/review", outcome),
    }
}

/// `POST /review/dismiss`: the message is not a submission.
pub async fn dismiss(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Form(form): Form<DismissForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let outcome = decide::dismiss(
        state.app.intake.store(),
        &form.message,
        &actor(&state, &user, &form.note),
    )
    .await
    .map(|m| {
        format!(
            "已标记为非报送：{}",
            m.subject.unwrap_or_else(|| "（无主题）".into())
        )
    })
    .map_err(refused);
    back("/review", outcome)
}

/// `POST /units/{id}/accept`: the unit's registration as it is.
pub async fn accept(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Path(unit_id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let outcome = async {
        let roster = roster(&state)?;
        decide::accept(
            state.app.intake.store(),
            &state.app.config,
            roster,
            &unit_id,
            &actor(&state, &user, &form.note),
        )
        .await
        .map_err(refused)?;
        Ok("已确认该单位的登记。".to_string())
    }
    .await;
    back(&back_path(&form.back, &unit_id), outcome)
}

/// `POST /units/{id}/set`: corrects one field.
pub async fn set_field(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Path(unit_id): Path<String>,
    Form(form): Form<SetForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let outcome = async {
        let roster = roster(&state)?;
        let done = decide::set_field(
            state.app.intake.store(),
            &state.app.config,
            roster,
            &unit_id,
            &form.field,
            &form.value,
            &actor(&state, &user, &form.note),
        )
        .await
        .map_err(refused)?;
        Ok(format!(
            "已更正{}：{}",
            done.field.label_zh(),
            crate::workspace::book::value_text(&done.after)
        ))
    }
    .await;
    back(&back_path(&form.back, &unit_id), outcome)
}

/// `POST /units/{id}/ask`: a polite mail to the unit listing what to
/// correct, through the outbox (one per click).
pub async fn ask(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Path(unit_id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let outcome = ask_unit(&state, &user, &unit_id, &form.note).await;
    back(&back_path(&form.back, &unit_id), outcome)
}

async fn ask_unit(
    state: &WebState,
    user: &Authed,
    unit_id: &str,
    note: &str,
) -> Result<String, String> {
    let app = &state.app;
    let roster = roster(state)?;
    let unit = decide::unit(roster, unit_id).map_err(refused)?;
    let store = app.intake.store();
    let progress = store
        .unit_progress(
            &[unit.id.as_str()],
            app.config.campaign_name(),
            &app.config.required,
        )
        .await
        .map_err(|e| refused(e.into()))?
        .pop()
        .ok_or("无法读取该单位的登记")?;
    let items = ask_items(&progress, &app.config.required);
    if items.is_empty() && note.trim().is_empty() {
        return Err(
            "该单位的登记没有缺少或有误的内容；如需说明其他问题，请填写说明后再发送。".into(),
        );
    }
    let latest = match &progress.latest {
        Some(l) => store
            .message_ref(&l.message)
            .await
            .map_err(|e| refused(e.into()))?,
        None => None,
    };
    let reply_to = latest.as_ref().and_then(|m| {
        m.from_addr
            .as_deref()
            .map(|from| (from, m.message_id.as_deref()))
    });
    let now = app.clock.now();
    let queued = crate::campaign::queue_correction_request(
        &app.mailing(),
        unit,
        reply_to,
        &items,
        Some(note),
        now,
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "cannot queue a correction request");
        "无法写入发件队列，请稍后再试。".to_string()
    })?
    .ok_or_else(|| format!("{}没有可用的电子邮箱，无法发送。", unit.name))?;
    let a = actor(state, user, note);
    store
        .record_decision(&crate::store::NewDecision {
            kind: crate::store::DecisionKind::Ask,
            message: progress.latest.as_ref().map(|l| l.message.clone()),
            unit_id: Some(unit.id.clone()),
            field: None,
            before: None,
            after: Some(
                serde_json::json!({ "to": queued.to, "outbox": queued.outbox_id, "items": items }),
            ),
            note: a.note,
            by: a.by,
            at: now,
        })
        .await
        .map_err(|e| refused(e.into()))?;
    Ok(format!(
        "已排入发件队列：发往 {}，将按发信节奏发出。",
        queued.to
    ))
}

/// `POST /remind/send-now`: reminders now to every unit still missing (or
/// one), as `remind send-now` does.
pub async fn send_now(
    State(state): State<WebState>,
    Extension(user): Extension<Authed>,
    Form(form): Form<SendNowForm>,
) -> Response {
    if let Some(r) = refusal(&user, &form.csrf) {
        return r;
    }
    let app = &state.app;
    if app.config.campaign.is_none() {
        return back("/remind", Err("未配置 [campaign]，无法发送提醒。".into()));
    }
    let only = Some(form.unit_id.trim()).filter(|u| !u.is_empty());
    let outcome = crate::campaign::queue_manual(&app.mailing(), app.clock.now(), only, false)
        .await
        .map(|queued| {
            tracing::info!(queued = queued.len(), "reminders queued from the workspace");
            if queued.is_empty() {
                "没有需要提醒的单位。".to_string()
            } else {
                format!("已为 {} 个单位排入提醒，将按发信节奏发出。", queued.len())
            }
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot queue reminders");
            "无法写入发件队列，请稍后再试。".to_string()
        });
    back("/remind", outcome)
}
