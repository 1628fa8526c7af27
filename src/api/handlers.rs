//! The `/v1` endpoints. Every one authenticates (401), checks the role (403), then the tenant
//! scope (403), then answers from the view; a mailbox, incident or command of another tenant is
//! "not found" in this one (404), so its existence is not revealed either.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures::StreamExt;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

use super::auth::{AuthError, Principal};
use super::view::{self, queries, store::ViewStore, ViewData};
use super::{reports, Api};
use crate::config::ApiRole;
use crate::policy::{
    check_pattern, ids, text, ActorRole, BlockState, Command, CommandKind, EventKind,
    EventLogEntry, Exemption, Millis, Policy, TenantMode,
};

/// The OpenAPI 3 document of this API (the committed file is the only copy).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

const R_OPENAPI: &str = "/v1/openapi.json";
const R_MAILBOX: &str = "/v1/tenants/{tenant}/mailboxes/{mailbox}";
const R_BLOCKED: &str = "/v1/tenants/{tenant}/blocked";
const R_INCIDENT: &str = "/v1/tenants/{tenant}/incidents/{incident_id}";
const R_UNBLOCK: &str = "/v1/tenants/{tenant}/mailboxes/{mailbox}/support-unblock";
const R_COMMAND: &str = "/v1/tenants/{tenant}/mailboxes/{mailbox}/commands/{command_id}";
const R_SETTINGS: &str = "/v1/tenants/{tenant}/settings";
const R_EXEMPTIONS: &str = "/v1/tenants/{tenant}/exemptions";
const R_EXEMPTION: &str = "/v1/tenants/{tenant}/exemptions/{pattern}";

/// Longest accepted ticket reference.
const MAX_TICKET: usize = 200;
/// Longest accepted exemption reason.
const MAX_REASON: usize = 500;
/// Largest request body (the support-unblock ticket, the only body, fits several times over even
/// with every character `\u`-escaped); 413 beyond it.
pub(crate) const MAX_BODY: usize = 4096;
/// A body must arrive within this once its headers have (408 otherwise).
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait for the broker's acknowledgement of a command: well below callers' read timeouts
/// (10 s and more), so a slow broker gets a 503 the caller can act on, not a client timeout.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the API's producer goes on trying to deliver a command (`message.timeout.ms`): a
/// command not acknowledged within [`SEND_TIMEOUT`] lands within this of the call, or not at all.
pub(crate) const COMMAND_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest page of the blocked list.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// The `/v1` router.
pub fn router(api: Api) -> Router {
    Router::new()
        .route(R_OPENAPI, get(openapi))
        .route(R_MAILBOX, get(mailbox))
        .route(R_BLOCKED, get(blocked))
        .route(R_INCIDENT, get(incident))
        .route(R_UNBLOCK, post(support_unblock))
        .route(R_COMMAND, get(command))
        .route(R_SETTINGS, get(settings))
        .route(R_EXEMPTIONS, get(exemptions))
        .route(R_EXEMPTION, put(exemption_put).delete(exemption_delete))
        .route(reports::R_EVENTS, get(reports::events))
        .route(reports::R_INCIDENTS, get(reports::incidents))
        .route(reports::R_ALERTS, get(reports::alerts))
        .route(reports::R_SHADOW, get(reports::shadow))
        .with_state(api)
}

/// A refusal: status and message, rendered as `{"error": …}` by [`finish`].
#[derive(Debug)]
pub(crate) struct Fail(StatusCode, String);

impl Fail {
    /// The status it is answered with.
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }

    /// What it says (no secret, no other tenant's data).
    pub(crate) fn message(&self) -> &str {
        &self.1
    }
}

pub(super) type Answer = Result<Response, Fail>;

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Fail {
    Fail(status, message.into())
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let Fail(status, message) = self;
        let mut r = json_response(status, &json!({ "error": message }));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// 503 with `Retry-After` (the API's answer to "not now", also for the HTTP server's shedding).
pub(crate) fn unavailable(message: &str) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

pub(super) fn not_found(what: &str) -> Fail {
    error(
        StatusCode::NOT_FOUND,
        format!("no such {what} in this tenant"),
    )
}

/// Count the request under its route template (never a mailbox) and answer.
pub(super) fn finish(api: &Api, route: &str, answer: Answer) -> Response {
    let r = answer.unwrap_or_else(IntoResponse::into_response);
    api.inner.metrics.http_request(route, r.status().as_u16());
    r
}

/// Now, by the API's clock (injected: tests drive it).
pub(super) fn now_ms(api: &Api) -> Millis {
    api.inner.clock.now_ms()
}

/// The caller of a `/v1` request (401 without a known bearer token). What the caller may do is
/// decided by the operation it calls ([`permit`]), for the API and the console alike.
pub(crate) fn authenticate(api: &Api, headers: &HeaderMap) -> Result<Principal, Fail> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    api.inner.auth.authenticate(authorization).map_err(|e| {
        error(
            StatusCode::UNAUTHORIZED,
            match e {
                AuthError::Missing => "a bearer token is required",
                AuthError::Unknown => "unknown token",
            },
        )
    })
}

/// 403 unless the principal has at least `role`.
pub(crate) fn permit_role(who: &Principal, role: ApiRole) -> Result<(), Fail> {
    if who.has_role(role) {
        return Ok(());
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!(
            "role {} may not do this (needs {})",
            who.role.as_str(),
            role.as_str()
        ),
    ))
}

/// The one check of every operation, API and console: 403 without `role`, then 403 unless the
/// principal's scope covers `tenant`.
pub(crate) fn permit(who: &Principal, role: ApiRole, tenant: &str) -> Result<(), Fail> {
    permit_role(who, role)?;
    scope(who, tenant)
}

pub(super) fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Fail> {
    p.map(|Path(x)| x)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
}

/// 403 unless the principal's scope covers the path's tenant.
fn scope(p: &Principal, tenant: &str) -> Result<(), Fail> {
    if p.may_access(tenant) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "this principal may not access this tenant",
        ))
    }
}

/// The in-memory part of the view, once it is fresh enough to answer from (503 otherwise).
pub(super) fn read_view(api: &Api) -> Result<std::sync::RwLockReadGuard<'_, ViewData>, Fail> {
    let v = api.inner.view.data.read().expect("view lock");
    if v.store_failed {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the view's local store failed (api.view_dir); a restart rebuilds it",
        ));
    }
    if !v.caught_up {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the view is still loading mailguard's topics",
        ));
    }
    match v.staleness(std::time::Instant::now()) {
        Some(age) if age > view::MAX_STALENESS => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the view is {} s behind mailguard's topics (mailguard_api_view_staleness_seconds)",
                age.as_secs()
            ),
        )),
        _ => Ok(v),
    }
}

/// Whether the view is fresh enough to answer from (503 otherwise).
pub(super) fn ready(api: &Api) -> Result<(), Fail> {
    read_view(api).map(drop)
}

/// The view's store (ask [`ready`] first: it says whether the view may answer).
pub(super) fn store(api: &Api) -> &ViewStore {
    &api.inner.view.store
}

/// A failed read of the view's local store: 500, logged (it names no mailbox).
pub(super) fn db<T>(r: Result<T, crate::store::StoreError>) -> Result<T, Fail> {
    r.map_err(|e| {
        tracing::error!(error = %e, "api view: local store read failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the view's local store failed; see the instance's log",
        )
    })
}

fn tenant_policy(api: &Api, v: &ViewData, tenant: &str) -> Policy {
    let settings = v.tenants.get(tenant).unwrap_or(&api.inner.tenant_defaults);
    api.inner.policy.with_overrides(&settings.overrides)
}

// ------------------------------------------------------------------------------------------------

async fn openapi(State(api): State<Api>, headers: HeaderMap) -> Response {
    let answer = authenticate(&api, &headers)
        .and_then(|who| permit_role(&who, ApiRole::Viewer))
        .map(|()| ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response());
    finish(&api, R_OPENAPI, answer)
}

async fn mailbox(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let (tenant, mailbox) = path(p)?;
        ok(mailbox_view(&api, &who, &tenant, &mailbox))
    })();
    finish(&api, R_MAILBOX, answer)
}

/// 200 with the operation's answer.
fn ok(v: Result<Value, Fail>) -> Answer {
    v.map(|v| json_response(StatusCode::OK, &v))
}

/// A mailbox: state, strikes, window and next trip, incidents, exemption (VIEWER).
pub(crate) fn mailbox_view(
    api: &Api,
    who: &Principal,
    tenant: &str,
    mailbox: &str,
) -> Result<Value, Fail> {
    permit(who, ApiRole::Viewer, tenant)?;
    let mailbox = crate::policy::Mailbox::new(mailbox).into_string();
    let v = read_view(api)?;
    if db(queries::tenant_of(store(api), &mailbox))?.as_deref() != Some(tenant) {
        return Err(not_found("mailbox"));
    }
    let policy = tenant_policy(api, &v, tenant);
    let mode = v
        .tenants
        .get(tenant)
        .unwrap_or(&api.inner.tenant_defaults)
        .mode;
    let now = now_ms(api);
    let mut body = mailbox_json(store(api), &mailbox, tenant, (&policy, mode), now)?;
    // A trip now would meet this exemption (exact or domain) and block nothing.
    body["exemption"] = db(queries::exemption_for(store(api), tenant, &mailbox, now))?
        .as_ref()
        .map_or(Value::Null, exemption_json);
    Ok(body)
}

pub(super) fn incident_summary(id: &str, i: &view::Incident) -> Value {
    json!({
        "incident_id": id,
        "strike": i.strike,
        "permanent": i.permanent,
        "blocked_at": i.blocked_at,
        "blocked_until": i.blocked_until,
        "last_state": i.last_state,
        "evidence_message_ids": i.evidence,
    })
}

fn mailbox_json(
    store: &ViewStore,
    mailbox: &str,
    tenant: &str,
    (policy, mode): (&Policy, TenantMode),
    now: Millis,
) -> Result<Value, Fail> {
    let s = db(queries::state(store, mailbox))?.unwrap_or_default();
    let incidents = db(queries::recent_incidents(store, mailbox, tenant))?;
    let state = s.block_state_at(now);
    let entries = s.window().entries();
    // The next trip: `threshold` offending messages within `window_ms` (inclusive). Counting the
    // entries within `window_ms` of the newest gives how many more are needed, and the instant
    // (event time) by which they must be sent, with the oldest of those still in the span.
    let trip = match (state, entries.last()) {
        (BlockState::Unblocked, Some(newest)) => {
            let span: Vec<_> = entries
                .iter()
                .filter(|e| e.sent_at >= newest.sent_at - policy.window_ms)
                .collect();
            let needed = policy.threshold.saturating_sub(span.len() as u32);
            json!({
                "more_offending_messages": needed,
                "sent_by": span.first().map(|e| e.sent_at + policy.window_ms),
            })
        }
        _ => Value::Null,
    };
    let in_force = state != BlockState::Unblocked;
    Ok(json!({
        "mailbox": mailbox,
        "tenant_id": tenant,
        "state": state.as_str(),
        "blocked_at": if in_force { s.blocked_at() } else { None },
        "blocked_until": if in_force { s.blocked_until() } else { None },
        "incident_id": if in_force { s.incident_id() } else { None },
        "strikes": s.strikes(),
        "mode": mode.as_str(),
        // An early warning raised in the current window (the state forgets it with the window).
        "warning": s.warned_through().map(|t| json!({ "warned_through": t })),
        // ALERT_ONLY: what enforcement would have reached (never a block).
        "simulated": s.simulated().map(|sim| json!({
            "strikes": sim.strikes,
            "blocked_until": sim.until,
            "permanent": sim.until.is_none(),
        })),
        "window": {
            "threshold": policy.threshold,
            "window_ms": policy.window_ms,
            "offending_messages": entries.iter().map(|e| json!({
                "message_id": &*e.message_id,
                "sent_at": e.sent_at,
            })).collect::<Vec<_>>(),
            "next_trip": trip,
        },
        "recent_incidents": incidents
            .iter()
            .map(|(id, i)| incident_summary(id, i))
            .collect::<Vec<_>>(),
    }))
}

/// `a=b&c=d` with percent-decoding (`+` is a space, as in forms).
pub(super) fn query_pairs(q: &str) -> Result<Vec<(String, String)>, Fail> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| error(StatusCode::BAD_REQUEST, "query is not UTF-8"))
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

async fn blocked(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let tenant = path(p)?;
        let pairs = query_pairs(q.as_deref().unwrap_or(""))?;
        ok(blocked_view(&api, &who, &tenant, &pairs))
    })();
    finish(&api, R_BLOCKED, answer)
}

/// A page of the tenant's blocked mailboxes (VIEWER): `state`, `limit`, `cursor`.
pub(crate) fn blocked_view(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: &[(String, String)],
) -> Result<Value, Fail> {
    permit(who, ApiRole::Viewer, tenant)?;
    {
        let mut filter = None;
        let mut limit = DEFAULT_LIMIT;
        let mut cursor = None;
        for (k, value) in pairs {
            match k.as_str() {
                "state" => {
                    filter = Some(match value.as_str() {
                        "BLOCKED" => BlockState::Blocked,
                        "PERMANENTLY_BLOCKED" => BlockState::PermanentlyBlocked,
                        _ => {
                            return Err(error(
                                StatusCode::BAD_REQUEST,
                                "state must be BLOCKED or PERMANENTLY_BLOCKED",
                            ))
                        }
                    })
                }
                "limit" => {
                    limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            error(
                                StatusCode::BAD_REQUEST,
                                format!("limit must be an integer in 1..={MAX_LIMIT}"),
                            )
                        })?
                }
                "cursor" => cursor = Some(value.as_str()),
                _ => {}
            }
        }
        ready(api)?;
        let (items, next) = db(queries::blocked_page(
            store(api),
            tenant,
            filter,
            cursor,
            limit,
            now_ms(api),
        ))?;
        let items: Vec<Value> = items
            .into_iter()
            .map(|(mb, s, state)| {
                json!({
                    "mailbox": mb,
                    "state": state.as_str(),
                    "strikes": s.strikes(),
                    "blocked_at": s.blocked_at(),
                    "blocked_until": s.blocked_until(),
                    "incident_id": s.incident_id(),
                })
            })
            .collect();
        Ok(json!({ "tenant_id": tenant, "items": items, "next_cursor": next }))
    }
}

async fn incident(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let (tenant, id) = path(p)?;
        ok(incident_view(&api, &who, &tenant, &id))
    })();
    finish(&api, R_INCIDENT, answer)
}

/// An incident: summary, scans per device, timeline (ADMIN).
pub(crate) fn incident_view(
    api: &Api,
    who: &Principal,
    tenant: &str,
    id: &str,
) -> Result<Value, Fail> {
    permit(who, ApiRole::Admin, tenant)?;
    {
        ready(api)?;
        let found = db(queries::incident(store(api), id))?;
        let Some(i) = found.filter(|i| i.tenant_id == tenant) else {
            return Err(not_found("incident"));
        };
        let events = db(queries::incident_events(store(api), id))?;
        let mut body = incident_summary(id, &i);
        body["mailbox"] = json!(i.mailbox);
        body["tenant_id"] = json!(i.tenant_id);
        body["state"] = json!(i.state());
        body["scan"] = scan_json(id, &i, &events);
        body["timeline"] = events
            .iter()
            .map(|e| {
                json!({
                    "event_id": e.event_id,
                    "kind": e.kind.as_str(),
                    "at": e.at,
                    "detail": e.detail,
                })
            })
            .collect();
        Ok(body)
    }
}

/// The incident's scans as its events tell them: `state` (`OPEN`, `REMEDIATED`,
/// `NEEDS_ATTENTION`, or `NO_SCAN` with the skip reason when none was requested) and each
/// requested device's status (`PENDING`, `OVERDUE` or the reported one) and threat count.
fn scan_json(id: &str, i: &view::Incident, events: &[EventLogEntry]) -> Value {
    let of = |kind: EventKind| events.iter().find(|e| e.kind == kind);
    let overdue = of(EventKind::ScanOverdue).is_some();
    let devices: Vec<Value> = events
        .iter()
        .filter(|e| e.kind == EventKind::ScanRequested)
        .map(|e| {
            let device = &e.detail;
            let done = ids::event_id(&i.mailbox, id, EventKind::ScanCompleted, device).to_string();
            let reported = events
                .iter()
                .find(|x| x.event_id == done)
                .and_then(|x| text::scan_completed_parts(&x.detail, device));
            match reported {
                Some((status, threats)) => {
                    json!({"device_id": device, "status": status.as_str(), "threats": threats})
                }
                None => json!({
                    "device_id": device,
                    "status": if overdue { "OVERDUE" } else { "PENDING" },
                    "threats": null,
                }),
            }
        })
        .collect();
    json!({
        "state": i.state(),
        "skipped_reason": of(EventKind::ScanSkipped).map(|e| e.detail.clone()),
        "devices": devices,
    })
}

fn new_command_id() -> String {
    let mut bytes = [0u8; 16];
    // A failing CSPRNG is not something to carry on from.
    openssl::rand::rand_bytes(&mut bytes).expect("random bytes");
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

fn parse_ticket(body: &[u8]) -> Result<String, Fail> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m.to_string());
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(&format!("body: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| k.as_str() != "ticket") {
        return Err(bad(&format!("unknown field `{k}`")));
    }
    let ticket = obj
        .get("ticket")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`ticket` (string) is required"))?;
    Ok(ticket.to_string())
}

/// A support ticket reference: 1 to [`MAX_TICKET`] characters, not blank.
fn check_ticket(ticket: &str) -> Result<(), Fail> {
    if ticket.trim().is_empty() || ticket.chars().count() > MAX_TICKET {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`ticket` must be 1 to {MAX_TICKET} characters, not blank"),
        ));
    }
    Ok(())
}

/// The request body, read only now that the caller is authenticated and authorised: 413 at once
/// when `Content-Length` announces more than `limit`, or as soon as more than `limit` arrived;
/// 408 when it has not all arrived within `timeout`. Nothing beyond `limit` is buffered.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, Fail> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be at most {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut data = body.into_data_stream();
    let mut buf = Vec::new();
    let read = async {
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("body: {e}")))?;
            if buf.len() + chunk.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {} s", timeout.as_secs()),
        )
    })??;
    Ok(buf)
}

async fn support_unblock(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let answer = async {
        let who = authenticate(&api, &headers)?;
        let (tenant, mailbox) = path(p)?;
        let ticket =
            async { parse_ticket(&read_body(&headers, body, MAX_BODY, BODY_READ_TIMEOUT).await?) };
        sent(request_support_unblock(&api, &who, &tenant, &mailbox, ticket).await)
    }
    .await;
    finish(&api, R_UNBLOCK, answer)
}

/// A command on its way: the broker has it, or has not acknowledged it in time (it may still
/// land, exactly once; `status_url` tells).
pub(crate) enum Sent {
    Acknowledged {
        command_id: String,
        status_url: String,
    },
    Unacknowledged {
        command_id: String,
        status_url: String,
    },
}

/// 202 with the command id and status URL, or the 503 of [`unacknowledged`].
fn sent(r: Result<Sent, Fail>) -> Answer {
    Ok(match r? {
        Sent::Acknowledged {
            command_id,
            status_url,
        } => json_response(
            StatusCode::ACCEPTED,
            &json!({ "command_id": command_id, "status": "PENDING", "status_url": status_url }),
        ),
        Sent::Unacknowledged {
            command_id,
            status_url,
        } => unacknowledged(&command_id, &status_url),
    })
}

/// Asks the pipeline to lift a permanent block (SUPPORT). `ticket` is awaited only once the
/// caller is permitted: the API reads its request body then.
pub(crate) async fn request_support_unblock(
    api: &Api,
    who: &Principal,
    tenant: &str,
    mailbox: &str,
    ticket: impl std::future::Future<Output = Result<String, Fail>>,
) -> Result<Sent, Fail> {
    permit(who, ApiRole::Support, tenant)?;
    let mailbox = crate::policy::Mailbox::new(mailbox).into_string();
    let ticket = ticket.await?;
    check_ticket(&ticket)?;
    {
        ready(api)?;
        if db(queries::tenant_of(store(api), &mailbox))?.as_deref() != Some(tenant) {
            return Err(not_found("mailbox"));
        }
    }
    let cmd = Command {
        command_id: new_command_id(),
        mailbox,
        tenant_id: tenant.to_owned(),
        kind: CommandKind::SupportUnblock,
        actor: who.name.clone(),
        actor_role: ActorRole::Support,
        ticket,
        issued_at: now_ms(api),
        reason: None,
        expires_at: None,
    };
    send_command(api, who, cmd).await
}

/// Sends `cmd` (keyed by its target) and waits a bounded time for the broker; 503 when nothing
/// was sent.
async fn send_command(api: &Api, principal: &Principal, cmd: Command) -> Result<Sent, Fail> {
    // The pipeline's own limits: a command over them would be dead-lettered, never decided.
    api.inner
        .limits
        .command(&cmd)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut buf = Vec::new();
    api.inner
        .codec
        .encode_command(&cmd, &mut buf)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let record = FutureRecord::to(&api.inner.commands_topic)
        .key(cmd.mailbox.as_str())
        .payload(&buf);
    let status_url = format!(
        "/v1/tenants/{}/mailboxes/{}/commands/{}",
        enc(&cmd.tenant_id),
        enc(&cmd.mailbox),
        cmd.command_id
    );
    let kind = cmd.kind.as_str().to_owned();
    match deliver(&api.inner.producer, record, SEND_TIMEOUT).await {
        Delivery::Acknowledged => {}
        Delivery::NotSent(e) => {
            tracing::warn!(error = %e, command_id = %cmd.command_id, %kind, "command not sent");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the commands topic refused the command or is not reachable; nothing was sent",
            ));
        }
        // "Nothing was sent" would be false here; 503 with the id and where to look is true.
        Delivery::Unacknowledged => {
            tracing::warn!(command_id = %cmd.command_id, %kind, "command: no acknowledgement in time");
            return Ok(Sent::Unacknowledged {
                command_id: cmd.command_id,
                status_url,
            });
        }
    }
    tracing::info!(principal = %principal.name, tenant = %cmd.tenant_id, command_id = %cmd.command_id, %kind, "command sent");
    let command_id = cmd.command_id.clone();
    api.inner
        .view
        .data
        .write()
        .expect("view lock")
        .commands
        .insert(cmd.command_id.clone(), cmd);
    Ok(Sent::Acknowledged {
        command_id,
        status_url,
    })
}

/// What became of a record sent to the commands topic.
#[derive(Debug)]
enum Delivery {
    /// The broker has it.
    Acknowledged,
    /// The producer did not take it, or the broker refused it: it will not land.
    NotSent(rdkafka::error::KafkaError),
    /// Queued, but not acknowledged within the wait: the idempotent producer goes on trying (up
    /// to `message.timeout.ms` after the call), so it may still land, exactly once.
    Unacknowledged,
}

/// Send `record` and wait at most `wait` for the broker's acknowledgement. (`FutureProducer::send`
/// bounds only the wait for room in the queue; the acknowledgement itself would be awaited for
/// up to `message.timeout.ms`.)
async fn deliver(
    producer: &rdkafka::producer::FutureProducer,
    record: FutureRecord<'_, str, Vec<u8>>,
    wait: Duration,
) -> Delivery {
    let acknowledged = match producer.send_result(record) {
        Ok(f) => f,
        Err((e, _)) => return Delivery::NotSent(e),
    };
    match tokio::time::timeout(wait, acknowledged).await {
        Ok(Ok(Ok(_))) => Delivery::Acknowledged,
        Ok(Ok(Err((e, _)))) => Delivery::NotSent(e),
        Ok(Err(_canceled)) => Delivery::NotSent(rdkafka::error::KafkaError::Canceled),
        Err(_elapsed) => Delivery::Unacknowledged,
    }
}

/// The 503 of a command the broker has not acknowledged within [`SEND_TIMEOUT`]: with its id and
/// status URL, since it may still land, and `Retry-After` when that is settled.
fn unacknowledged(command_id: &str, status_url: &str) -> Response {
    let settled = COMMAND_DELIVERY_TIMEOUT.as_secs();
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({
            "error": format!(
                "the commands topic did not acknowledge the command within {} s; it may still \
                 land within {settled} s of the call, and status_url shows it if it does",
                SEND_TIMEOUT.as_secs()
            ),
            "command_id": command_id,
            "status_url": status_url,
        }),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(settled));
    r
}

pub(super) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn command(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String, String)>, PathRejection>,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let (tenant, mailbox, id) = path(p)?;
        ok(command_view(&api, &who, &tenant, &mailbox, &id))
    })();
    finish(&api, R_COMMAND, answer)
}

/// A command sent through this instance and what became of it (ADMIN).
pub(crate) fn command_view(
    api: &Api,
    who: &Principal,
    tenant: &str,
    mailbox: &str,
    id: &str,
) -> Result<Value, Fail> {
    permit(who, ApiRole::Admin, tenant)?;
    {
        let mailbox = crate::policy::Mailbox::new(mailbox).into_string();
        let v = read_view(api)?;
        let Some(c) = v
            .commands
            .get(id)
            .filter(|c| c.tenant_id == tenant && c.mailbox == mailbox)
        else {
            return Err(not_found("command"));
        };
        let decided = [
            EventKind::SupportUnblock,
            EventKind::ExemptionAdded,
            EventKind::ExemptionRemoved,
            EventKind::CommandRejected,
        ]
        .into_iter()
        .find_map(|k| {
            v.command_events
                .get(&ids::event_id(&mailbox, id, k, "").to_string())
        });
        // The outcome is data: the event's kind and reason code, never parsed from its text.
        let (status, reason, detail, at) = match decided {
            None => ("PENDING", None, None, None),
            Some(e) if e.kind != EventKind::CommandRejected => {
                ("ACCEPTED", None, Some(&e.detail), Some(e.at))
            }
            Some(e) => (
                "REJECTED",
                e.reason.map(|r| r.as_str()),
                Some(&e.detail),
                Some(e.at),
            ),
        };
        Ok(json!({
                "command_id": c.command_id,
                "tenant_id": c.tenant_id,
                "mailbox": c.mailbox,
                "kind": c.kind.as_str(),
                "actor": c.actor,
                "actor_role": c.actor_role.as_str(),
                "ticket": c.ticket,
                "issued_at": c.issued_at,
                "status": status,
                "reason": reason,
                "detail": detail,
                "decided_at": at,
        }))
    }
}

async fn settings(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let tenant = path(p)?;
        ok(settings_view(&api, &who, &tenant))
    })();
    finish(&api, R_SETTINGS, answer)
}

/// The tenant's settings and effective policy (ADMIN).
pub(crate) fn settings_view(api: &Api, who: &Principal, tenant: &str) -> Result<Value, Fail> {
    permit(who, ApiRole::Admin, tenant)?;
    {
        let v = read_view(api)?;
        let known = v.tenants.get(tenant);
        let s = known.unwrap_or(&api.inner.tenant_defaults);
        let p = api.inner.policy.with_overrides(&s.overrides);
        let o = &s.overrides;
        Ok(json!({
                "tenant_id": tenant,
                "source": if known.is_some() { "TENANT_TABLE" } else { "DEFAULTS" },
                "sync_security_enabled": s.sync_security_enabled,
                "endpoint_licence": s.endpoint_licence,
                "mode": s.mode.as_str(),
                "overrides": {
                    "threshold": o.threshold,
                    "window_ms": o.window_ms,
                    "base_block_ms": o.base_block_ms,
                    "permanent_strike": o.permanent_strike,
                    "warn_threshold": o.warn_threshold,
                },
                "policy": {
                    "threshold": p.threshold,
                    "window_ms": p.window_ms,
                    "allowed_lateness_ms": p.allowed_lateness_ms,
                    "base_block_ms": p.base_block_ms,
                    "permanent_strike": p.permanent_strike,
                    "max_future_skew_ms": p.max_future_skew_ms,
                    "strike_decay_ms": p.strike_decay_ms,
                    "state_idle_ttl_ms": p.state_idle_ttl_ms,
                    "warn_threshold": p.warn_at().unwrap_or(0),
                },
        }))
    }
}

// ------------------------------------------------------------------------------------------------
// Exemptions (SPEC §1.11 and §4): read from the view; changed through the commands topic, like a support
// unblock, by the partition owning the pattern.

fn exemption_json(e: &Exemption) -> Value {
    json!({
        "pattern": e.pattern,
        "reason": e.reason,
        "actor": e.actor,
        "actor_role": e.actor_role.as_str(),
        "created_at": e.created_at,
        "expires_at": e.expires_at,
    })
}

async fn exemptions(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> Response {
    let answer = (|| {
        let who = authenticate(&api, &headers)?;
        let tenant = path(p)?;
        ok(exemptions_view(&api, &who, &tenant))
    })();
    finish(&api, R_EXEMPTIONS, answer)
}

/// The tenant's exemptions in force (VIEWER).
pub(crate) fn exemptions_view(api: &Api, who: &Principal, tenant: &str) -> Result<Value, Fail> {
    permit(who, ApiRole::Viewer, tenant)?;
    ready(api)?;
    let items: Vec<Value> = db(queries::exemptions_of(store(api), tenant, now_ms(api)))?
        .iter()
        .map(exemption_json)
        .collect();
    Ok(json!({
        "tenant_id": tenant,
        "items": items,
        "max_exemptions": api.inner.limits.max_exemptions_per_tenant,
    }))
}

/// The PUT body: `{"reason": "…", "expires_at": ms or null}` (its shape; [`check_exemption`]
/// its values).
fn parse_exemption(body: &[u8]) -> Result<(String, Option<Millis>), Fail> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body must be a JSON object".into()))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "reason" | "expires_at"))
    {
        return Err(bad(format!("unknown field `{k}`")));
    }
    let reason = obj
        .get("reason")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`reason` (string) is required".into()))?;
    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(x) => Some(x.as_i64().ok_or_else(|| {
            bad("`expires_at` must be milliseconds since the Unix epoch, or null".into())
        })?),
    };
    Ok((reason.to_owned(), expires_at))
}

/// An exemption's reason (1 to [`MAX_REASON`] characters, not blank) and expiry (in the future).
fn check_exemption(reason: &str, expires_at: Option<Millis>, now: Millis) -> Result<(), Fail> {
    if reason.trim().is_empty() || reason.chars().count() > MAX_REASON {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`reason` must be 1 to {MAX_REASON} characters, not blank"),
        ));
    }
    if let Some(x) = expires_at.filter(|&x| x <= now) {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`expires_at` {x} is not in the future"),
        ));
    }
    Ok(())
}

/// Authorises an exemption change (role ADMIN or above, the tenant in scope; the pattern
/// lower-cased and checked) and builds its command.
fn exemption_command(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pattern: &str,
    kind: CommandKind,
) -> Result<Command, Fail> {
    permit(who, ApiRole::Admin, tenant)?;
    let pattern = crate::policy::Mailbox::new(pattern).into_string();
    check_pattern(&pattern)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("`{pattern}`: {e}")))?;
    let actor_role = match who.role {
        ApiRole::Support => ActorRole::Support,
        _ => ActorRole::Admin,
    };
    Ok(Command {
        command_id: new_command_id(),
        mailbox: pattern,
        tenant_id: tenant.to_owned(),
        kind,
        actor: who.name.clone(),
        actor_role,
        ticket: String::new(),
        issued_at: now_ms(api),
        reason: None,
        expires_at: None,
    })
}

async fn exemption_put(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Response {
    let answer = async {
        let who = authenticate(&api, &headers)?;
        let (tenant, pattern) = path(p)?;
        let input = async {
            parse_exemption(&read_body(&headers, body, MAX_BODY, BODY_READ_TIMEOUT).await?)
        };
        sent(put_exemption(&api, &who, &tenant, &pattern, input).await)
    }
    .await;
    finish(&api, R_EXEMPTION, answer)
}

/// Adds or replaces an exemption (ADMIN). `input` (reason, expiry) is awaited only once the
/// caller is permitted.
pub(crate) async fn put_exemption(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pattern: &str,
    input: impl std::future::Future<Output = Result<(String, Option<Millis>), Fail>>,
) -> Result<Sent, Fail> {
    let mut cmd = exemption_command(api, who, tenant, pattern, CommandKind::ExemptionPut)?;
    let (reason, expires_at) = input.await?;
    check_exemption(&reason, expires_at, cmd.issued_at)?;
    (cmd.reason, cmd.expires_at) = (Some(reason), expires_at);
    {
        ready(api)?;
        let held = db(queries::exemptions_of(store(api), tenant, cmd.issued_at))?;
        let max = api.inner.limits.max_exemptions_per_tenant;
        if held.len() >= max && !held.iter().any(|e| e.pattern == cmd.mailbox) {
            return Err(error(
                StatusCode::CONFLICT,
                format!("the tenant holds {max} exemptions (limits.max_exemptions_per_tenant)"),
            ));
        }
    }
    send_command(api, who, cmd).await
}

async fn exemption_delete(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let answer = async {
        let who = authenticate(&api, &headers)?;
        let (tenant, pattern) = path(p)?;
        sent(delete_exemption(&api, &who, &tenant, &pattern).await)
    }
    .await;
    finish(&api, R_EXEMPTION, answer)
}

/// Removes an exemption (ADMIN); 404 when the tenant holds none for the pattern.
pub(crate) async fn delete_exemption(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pattern: &str,
) -> Result<Sent, Fail> {
    let cmd = exemption_command(api, who, tenant, pattern, CommandKind::ExemptionDelete)?;
    {
        ready(api)?;
        let state = db(queries::state(store(api), &cmd.mailbox))?;
        if state
            .and_then(|s| s.exemption_of(tenant).cloned())
            .is_none()
        {
            return Err(not_found("exemption"));
        }
    }
    send_command(api, who, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MailboxState;

    /// The incident answer's `scan`: a reported device's status and threats, a pending one, and
    /// after `SCAN_OVERDUE` the silent one overdue; a skipped scan says why.
    #[test]
    fn the_incident_answer_shows_each_devices_scan_status() {
        let (mb, id) = ("a@x.com", "inc-1");
        let event = |kind: EventKind, disc: &str, detail: String| crate::policy::EventLogEntry {
            event_id: ids::event_id(mb, id, kind, disc).to_string(),
            incident_id: Some(id.into()),
            tenant_id: "t".into(),
            mailbox: mb.into(),
            kind,
            at: 1,
            detail,
            reason: None,
            trip: None,
        };
        let mut i = view::Incident {
            mailbox: mb.into(),
            tenant_id: "t".into(),
            strike: Some(1),
            blocked_at: Some(1),
            blocked_until: Some(2),
            scan_requested: true,
            ..view::Incident::default()
        };
        let mut events = vec![
            event(EventKind::ScanRequested, "d1", "d1".into()),
            event(EventKind::ScanRequested, "d2", "d2".into()),
            event(
                EventKind::ScanCompleted,
                "d1",
                text::scan_completed_detail("d1", crate::policy::ScanStatus::ThreatsRemaining, 2),
            ),
        ];
        let devices = |v: &Value| v["devices"].clone();
        let v = scan_json(id, &i, &events);
        assert_eq!(v["state"], "OPEN");
        assert_eq!(
            devices(&v),
            json!([
                {"device_id": "d1", "status": "THREATS_REMAINING", "threats": 2},
                {"device_id": "d2", "status": "PENDING", "threats": null},
            ])
        );
        events.push(event(EventKind::ScanOverdue, "", String::new()));
        i.outcome = Some("NEEDS_ATTENTION".into());
        let v = scan_json(id, &i, &events);
        assert_eq!(v["state"], "NEEDS_ATTENTION");
        assert_eq!(v["devices"][1]["status"], "OVERDUE");
        let events = vec![event(EventKind::ScanSkipped, "", "NO_DEVICES".into())];
        let i = view::Incident {
            scan_requested: false,
            outcome: None,
            ..i
        };
        let v = scan_json(id, &i, &events);
        assert_eq!(
            (&v["state"], &v["skipped_reason"]),
            (&json!("NO_SCAN"), &json!("NO_DEVICES"))
        );
    }

    #[test]
    fn the_document_is_json_and_names_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for r in [
            R_OPENAPI,
            R_MAILBOX,
            R_BLOCKED,
            R_INCIDENT,
            R_UNBLOCK,
            R_COMMAND,
            R_SETTINGS,
            R_EXEMPTIONS,
            R_EXEMPTION,
            reports::R_EVENTS,
            reports::R_INCIDENTS,
            reports::R_ALERTS,
            reports::R_SHADOW,
        ] {
            assert!(paths.contains_key(r), "{r} missing from docs/openapi.json");
        }
    }

    fn status_of(r: Result<Vec<u8>, Fail>) -> Result<Vec<u8>, StatusCode> {
        r.map_err(|Fail(status, _)| status)
    }

    /// A body that sends `first` and then stalls for good.
    fn stalling_after(first: Vec<u8>) -> Body {
        let first =
            futures::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from(first))]);
        Body::from_stream(first.chain(futures::stream::pending()))
    }

    #[tokio::test]
    async fn a_body_announced_larger_than_the_limit_is_refused_before_any_of_it_is_read() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(2 * 1024 * 1024));
        // Were it read, the stalled body would end in the (long) timeout, not in a 413.
        let r = read_body(
            &h,
            stalling_after(Vec::new()),
            MAX_BODY,
            Duration::from_secs(600),
        );
        assert_eq!(status_of(r.await), Err(StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[tokio::test]
    async fn an_unannounced_body_is_refused_as_soon_as_it_exceeds_the_limit() {
        let h = HeaderMap::new();
        let r = read_body(
            &h,
            stalling_after(vec![b' '; MAX_BODY + 1]),
            MAX_BODY,
            Duration::from_secs(600),
        );
        assert_eq!(status_of(r.await), Err(StatusCode::PAYLOAD_TOO_LARGE));
    }

    #[tokio::test]
    async fn a_body_that_stalls_is_given_up_on_after_the_timeout() {
        let h = HeaderMap::new();
        let r = read_body(
            &h,
            stalling_after(b"{\"ticket\"".to_vec()),
            MAX_BODY,
            Duration::from_millis(50),
        );
        assert_eq!(status_of(r.await), Err(StatusCode::REQUEST_TIMEOUT));
    }

    #[tokio::test]
    async fn the_largest_valid_ticket_fits_the_body_limit() {
        // Every character an astral one, written as an escaped surrogate pair, and spaces.
        let ticket = "\\ud83d\\ude00".repeat(MAX_TICKET);
        let body = format!("{{ \"ticket\" : \"{ticket}\" }}\n");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let read = read_body(
            &h,
            Body::from(body.clone()),
            MAX_BODY,
            Duration::from_secs(600),
        );
        let read = status_of(read.await).expect("within the limit");
        assert_eq!(read, body.as_bytes());
        let parsed = parse_ticket(&read).expect("a ticket");
        assert!(check_ticket(&parsed).is_ok());
        assert_eq!(parsed.chars().count(), MAX_TICKET);
    }

    #[tokio::test]
    async fn a_command_the_broker_does_not_acknowledge_is_given_up_on_in_time() {
        // A "broker" that takes connections and never answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", hole.local_addr().unwrap().to_string())
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "600000")
            .create()
            .unwrap();
        let payload = b"command".to_vec();
        let record = FutureRecord::to("commands")
            .key("m@x.test")
            .payload(&payload);
        let d = deliver(&producer, record, Duration::from_millis(200)).await;
        assert!(matches!(d, Delivery::Unacknowledged), "{d:?}");
    }

    #[test]
    fn an_unacknowledged_command_is_a_503_that_says_where_to_look() {
        let r = unacknowledged("c-1", "/v1/tenants/t/mailboxes/m/commands/c-1");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()[header::RETRY_AFTER],
            COMMAND_DELIVERY_TIMEOUT.as_secs().to_string()
        );
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), MAX_BODY));
        let v: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(v["command_id"], "c-1");
        assert_eq!(v["status_url"], "/v1/tenants/t/mailboxes/m/commands/c-1");
        assert!(
            v["error"].as_str().unwrap().contains("may still land"),
            "{v}"
        );
    }

    #[test]
    fn the_mailbox_answer_shows_mode_warning_and_would_be_ladder() {
        let dir = tempfile::tempdir().unwrap();
        let v = view::View::new(ViewStore::open_empty(dir.path()).unwrap(), 1);
        let s = MailboxState {
            warned_through: Some(1_000),
            sim: Some(crate::policy::Simulated {
                strikes: 3,
                until: Some(5_000),
            }),
            ..MailboxState::default()
        };
        v.apply(vec![view::Update::State("a@b.c".into(), Some(s))])
            .unwrap();
        let p = Policy::default();
        let json = |mb: &str, mode| {
            mailbox_json(&v.store, mb, "t", (&p, mode), 2_000)
                .ok()
                .unwrap()
        };
        let j = json("a@b.c", TenantMode::AlertOnly);
        assert_eq!(j["mode"], "ALERT_ONLY");
        assert_eq!(j["warning"], json!({"warned_through": 1_000}));
        assert_eq!(
            j["simulated"],
            json!({"strikes": 3, "blocked_until": 5_000, "permanent": false})
        );
        assert_eq!(j["state"], "UNBLOCKED");
        let j = json("x@b.c", TenantMode::Enforce);
        assert_eq!(
            (j["mode"].as_str(), j["warning"].is_null()),
            (Some("ENFORCE"), true)
        );
        assert!(j["simulated"].is_null());
    }

    #[test]
    fn query_is_percent_decoded() {
        let q = query_pairs("cursor=a%40b.test&limit=5&x").ok().unwrap();
        assert_eq!(
            q,
            vec![
                ("cursor".into(), "a@b.test".into()),
                ("limit".into(), "5".into()),
                ("x".into(), String::new())
            ]
        );
    }
}
