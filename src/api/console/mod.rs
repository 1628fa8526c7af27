//! The console (`/ui`): server-rendered pages for tenant administrators and support staff, served
//! by mailguard itself whenever the API is on. No other server, no CDN, no script: the templates
//! ([`pages`]) and the stylesheet are compiled into the binary.
//!
//! Every page and action calls the same operation as its `/v1` endpoint (`handlers::*_view`,
//! `reports::*`, `request_support_unblock`, `put_exemption`, `delete_exemption`), so the role and
//! tenant checks are the API's own ([`super::handlers::permit`]), never a copy. The console adds
//! only what a browser needs:
//!
//! - signing in with a bearer token, which starts a server-side session ([`session`]); the cookie
//!   holds the session's random id, never the token;
//! - a CSRF token per session in every form, and same-origin checks on every POST;
//! - a strict Content-Security-Policy (no script at all, styles only from `/ui/assets`), no
//!   framing, no referrer to other sites (`same-origin`: with `no-referrer` browsers send `Origin: null`
//!   on form posts, which the same-origin check refuses), no caching of pages.

pub(crate) mod pages;
pub mod session;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::auth::Principal;
use super::handlers::{
    self, enc, error, now_ms, query_pairs, read_body, Fail, Sent, BODY_READ_TIMEOUT, MAX_BODY,
};
use super::{reports, Api};
use crate::config::ApiRole;
use pages::{Nav, Page};
use session::SignedIn;

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");
/// A shield, so that browsers do not ask for `/favicon.ico` (a 404 in every page's console).
const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><path d=\"M8 1 2 3v5c0 3.5 2.6 6.2 6 7 3.4-.8 6-3.5 6-7V3z\" fill=\"#10243e\"/></svg>";

const R_HOME: &str = "/ui";
const R_LOGIN: &str = "/ui/login";
const R_LOGOUT: &str = "/ui/logout";
const R_CSS: &str = "/ui/assets/console.css";
const R_FAVICON: &str = "/ui/assets/favicon.svg";
const R_OVERVIEW: &str = "/ui/t/{tenant}";
const R_EVENTS: &str = "/ui/t/{tenant}/events";
const R_EXPORT: &str = "/ui/t/{tenant}/events.csv";
const R_LOOKUP: &str = "/ui/t/{tenant}/mailboxes";
const R_MAILBOX: &str = "/ui/t/{tenant}/mailboxes/{mailbox}";
const R_UNBLOCK: &str = "/ui/t/{tenant}/mailboxes/{mailbox}/unblock";
const R_COMMAND: &str = "/ui/t/{tenant}/mailboxes/{mailbox}/commands/{command_id}";
const R_INCIDENT: &str = "/ui/t/{tenant}/incidents/{incident_id}";
const R_EXEMPTIONS: &str = "/ui/t/{tenant}/exemptions";
const R_EXEMPTION_REMOVE: &str = "/ui/t/{tenant}/exemptions/{pattern}/remove";
const R_SHADOW: &str = "/ui/t/{tenant}/shadow";

/// The `/ui` router.
pub fn router(api: Api) -> Router {
    Router::new()
        .route(R_HOME, get(home))
        .route("/ui/", get(home))
        .route(R_LOGIN, get(login_form).post(login))
        .route(R_LOGOUT, post(logout))
        .route(R_CSS, get(css))
        .route(R_FAVICON, get(favicon))
        .route(R_OVERVIEW, get(overview))
        .route(R_EVENTS, get(events))
        .route(R_EXPORT, get(export))
        .route(R_LOOKUP, get(lookup))
        .route(R_MAILBOX, get(mailbox))
        .route(R_UNBLOCK, post(unblock))
        .route(R_COMMAND, get(command))
        .route(R_INCIDENT, get(incident))
        .route(R_EXEMPTIONS, get(exemptions).post(exemption_add))
        .route(R_EXEMPTION_REMOVE, post(exemption_remove))
        .route(R_SHADOW, get(shadow))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(api)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Counts the request under its route template (never a mailbox or tenant).
fn done(api: &Api, route: &str, r: Response) -> Response {
    api.inner.metrics.http_request(route, r.status().as_u16());
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Whether the browser reached the console over TLS (a proxy in front says so), so the cookie is
/// `Secure`.
fn behind_tls(headers: &HeaderMap) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    h("x-forwarded-proto").eq_ignore_ascii_case("https")
        || h("forwarded").to_ascii_lowercase().contains("proto=https")
}

/// The live session of the request's cookie.
fn session(api: &Api, headers: &HeaderMap) -> Option<(String, SignedIn)> {
    let cookie = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = session::cookie_value(cookie)?;
    let s = api.inner.sessions.get(id, now_ms(api))?;
    Some((id.to_owned(), s))
}

/// The signed-in caller (one who is not is sent to the sign-in page: [`to_login`]).
fn signed_in(api: &Api, headers: &HeaderMap) -> Option<SignedIn> {
    session(api, headers).map(|(_, s)| s)
}

fn to_login() -> Response {
    see_other(R_LOGIN)
}

/// POSTs come from the console's own pages: a browser's `Origin` (when sent) names this host,
/// and `Sec-Fetch-Site` (when sent) is not cross-site. The CSRF token is checked as well.
fn same_origin(headers: &HeaderMap) -> Result<(), Fail> {
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let refused = || error(StatusCode::FORBIDDEN, "a form of another site was refused");
    if h(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(refused());
    }
    if let Some(origin) = h(header::ORIGIN) {
        let host = h(header::HOST).unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if origin_host != host {
            return Err(refused());
        }
    }
    Ok(())
}

/// A posted form (bounded and timed like an API body), parsed.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<Form, Fail> {
    same_origin(headers)?;
    let raw = read_body(headers, body, MAX_BODY, BODY_READ_TIMEOUT).await?;
    let text = std::str::from_utf8(&raw)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the form is not UTF-8"))?;
    Ok(Form(query_pairs(text)?))
}

/// A form's fields.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// 403 unless the form carries the session's CSRF token.
    fn check_csrf(&self, s: &SignedIn) -> Result<(), Fail> {
        if session::csrf_ok(s, self.get("csrf").unwrap_or("")) {
            Ok(())
        } else {
            Err(error(
                StatusCode::FORBIDDEN,
                "the form is stale or not from this console (CSRF check); reload the page",
            ))
        }
    }
}

fn nav(s: &SignedIn, tenant: Option<&str>) -> Nav {
    Nav::new(&s.principal, &s.csrf, tenant)
}

/// An operation's refusal as a page of its status. Its links lead to the caller's own tenant,
/// not to the one refused.
fn refusal(s: Option<&SignedIn>, tenant: Option<&str>, f: &Fail) -> Response {
    let nav = s.map(|s| {
        let p = &s.principal;
        let own = tenant.filter(|t| p.may_access(t)).or(p.tenant.as_deref());
        nav(s, own)
    });
    let mut r = Page::error(nav, f.status().as_u16(), f.message()).render();
    *r.status_mut() = f.status();
    if f.status() == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A page of a signed-in caller: `build` gets the caller and returns the page, or the refusal of
/// the operation it called.
fn page(
    api: &Api,
    route: &str,
    headers: &HeaderMap,
    tenant: Option<&str>,
    build: impl FnOnce(&SignedIn, Nav) -> Result<Page, Fail>,
) -> Response {
    let r = match signed_in(api, headers) {
        None => to_login(),
        Some(s) => match build(&s, nav(&s, tenant)) {
            Ok(p) => p.render(),
            Err(f) => refusal(Some(&s), tenant, &f),
        },
    };
    done(api, route, r)
}

// ------------------------------------------------------------------------------------------------
// Signing in and out

async fn css(State(api): State<Api>) -> Response {
    let r = (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response();
    done(&api, R_CSS, r)
}

async fn favicon(State(api): State<Api>) -> Response {
    let r = (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response();
    done(&api, R_FAVICON, r)
}

async fn home(State(api): State<Api>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let r = match signed_in(&api, &headers) {
        None => to_login(),
        Some(s) => {
            let asked = query_pairs(q.as_deref().unwrap_or(""))
                .ok()
                .and_then(|p| p.into_iter().find(|(k, _)| k == "tenant").map(|(_, v)| v))
                .filter(|t| !t.trim().is_empty());
            match (&s.principal.tenant, asked) {
                (Some(t), _) => see_other(&format!("/ui/t/{}", enc(t))),
                (None, Some(t)) => see_other(&format!("/ui/t/{}", enc(t.trim()))),
                (None, None) => {
                    let tenants = known_tenants(&api);
                    Page::tenants(nav(&s, None), tenants).render()
                }
            }
        }
    };
    done(&api, R_HOME, r)
}

/// The tenants of the tenant table (for a caller of every tenant), at most 500.
fn known_tenants(api: &Api) -> Vec<String> {
    let v = api.inner.view.data.read().expect("view lock");
    let mut t: Vec<String> = v.tenants.keys().cloned().collect();
    t.sort();
    t.truncate(500);
    t
}

async fn login_form(State(api): State<Api>, headers: HeaderMap) -> Response {
    let r = if session(&api, &headers).is_some() {
        see_other(R_HOME)
    } else {
        Page::login(None).render()
    };
    done(&api, R_LOGIN, r)
}

async fn login(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let r = match read_form(&headers, body).await {
        Err(f) => refusal(None, None, &f),
        Ok(form) => {
            let token = form.get("token").unwrap_or("").trim().to_owned();
            match api
                .inner
                .auth
                .authenticate(Some(&format!("Bearer {token}")))
            {
                Ok(principal) => {
                    tracing::info!(principal = %principal.name, "console: signed in");
                    let (id, _) = api.inner.sessions.create(principal, now_ms(&api));
                    let mut r = see_other(R_HOME);
                    if let Ok(v) =
                        HeaderValue::from_str(&session::set_cookie(&id, behind_tls(&headers)))
                    {
                        r.headers_mut().insert(header::SET_COOKIE, v);
                    }
                    r
                }
                Err(_) => {
                    let mut r = Page::login(Some("That token is not known here.")).render();
                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                    r
                }
            }
        }
    };
    done(&api, R_LOGIN, r)
}

async fn logout(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let r = match session(&api, &headers) {
        None => see_other(R_LOGIN),
        Some((id, s)) => match read_form(&headers, body)
            .await
            .and_then(|f| f.check_csrf(&s))
        {
            Err(f) => refusal(Some(&s), None, &f),
            Ok(()) => {
                api.inner.sessions.remove(&id);
                let mut r = see_other(R_LOGIN);
                if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(behind_tls(&headers))) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
        },
    };
    done(&api, R_LOGOUT, r)
}

// ------------------------------------------------------------------------------------------------
// Pages

/// The query string's pairs (a malformed query is a 400 page).
fn pairs(q: &Option<String>) -> Result<Vec<(String, String)>, Fail> {
    query_pairs(q.as_deref().unwrap_or(""))
}

async fn overview(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    page(&api, R_OVERVIEW, &headers, Some(&tenant), |s, nav| {
        pages::overview(&api, &s.principal, &tenant, nav)
    })
}

async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    page(&api, R_EVENTS, &headers, Some(&tenant), |s, nav| {
        pages::events(&api, &s.principal, &tenant, &pairs(&q)?, nav)
    })
}

async fn export(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let r = match signed_in(&api, &headers) {
        None => to_login(),
        Some(s) => {
            let csv = (|| {
                let filter = pages::EventsFilter::from_pairs(&pairs(&q)?)?;
                let (lq, page) = reports::events_page(
                    &api,
                    &s.principal,
                    &tenant,
                    filter.api_pairs(None),
                    true,
                )?;
                let items = reports::parse_items(&page.items)?;
                let at = format!("/ui/t/{}/events.csv", enc(&tenant));
                Ok(reports::csv_response(&lq, &items, page.next, &at))
            })();
            csv.unwrap_or_else(|f: Fail| refusal(Some(&s), Some(&tenant), &f))
        }
    };
    done(&api, R_EXPORT, r)
}

/// The overview's mailbox look-up: to the mailbox's page.
async fn lookup(
    State(api): State<Api>,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let mailbox = pairs(&q)
        .ok()
        .and_then(|p| p.into_iter().find(|(k, _)| k == "mailbox").map(|(_, v)| v))
        .unwrap_or_default();
    let r = see_other(&format!(
        "/ui/t/{}/mailboxes/{}",
        enc(&tenant),
        enc(mailbox.trim())
    ));
    done(&api, R_LOOKUP, r)
}

async fn mailbox(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, mailbox)): Path<(String, String)>,
) -> Response {
    page(&api, R_MAILBOX, &headers, Some(&tenant), |s, nav| {
        let v = handlers::mailbox_view(&api, &s.principal, &tenant, &mailbox)?;
        Ok(Page::mailbox(nav, &v))
    })
}

async fn command(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, mailbox, id)): Path<(String, String, String)>,
) -> Response {
    page(&api, R_COMMAND, &headers, Some(&tenant), |s, nav| {
        let v = handlers::command_view(&api, &s.principal, &tenant, &mailbox, &id)?;
        Ok(Page::command(nav, &v))
    })
}

async fn incident(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Response {
    page(&api, R_INCIDENT, &headers, Some(&tenant), |s, nav| {
        let v = handlers::incident_view(&api, &s.principal, &tenant, &id)?;
        Ok(Page::incident(nav, &v))
    })
}

async fn exemptions(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    page(&api, R_EXEMPTIONS, &headers, Some(&tenant), |s, nav| {
        let v = handlers::exemptions_view(&api, &s.principal, &tenant)?;
        Ok(Page::exemptions(nav, &v))
    })
}

async fn shadow(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    page(&api, R_SHADOW, &headers, Some(&tenant), |s, nav| {
        pages::shadow(&api, &s.principal, &tenant, &pairs(&q)?, nav)
    })
}

// ------------------------------------------------------------------------------------------------
// Actions: each POST is signed in (before its form is read), same-origin and CSRF-checked, then
// the API's own operation decides; it answers with a redirect to what shows the outcome.

/// Where a sent command's outcome shows (the command's page, which reloads until decided).
fn after_sent(tenant: &str, mailbox: &str, sent: Sent) -> Response {
    let (Sent::Acknowledged { command_id, .. } | Sent::Unacknowledged { command_id, .. }) = sent;
    see_other(&format!(
        "/ui/t/{}/mailboxes/{}/commands/{}",
        enc(tenant),
        enc(mailbox),
        enc(&command_id)
    ))
}

async fn unblock(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, mailbox)): Path<(String, String)>,
    body: Body,
) -> Response {
    let r = match signed_in(&api, &headers) {
        None => to_login(),
        Some(s) => {
            // The form is read only once the API's check has passed (in the operation).
            let ticket = async {
                let form = read_form(&headers, body).await?;
                form.check_csrf(&s)?;
                if form.get("confirm") != Some("yes") {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "confirm that the permanent block is to be lifted",
                    ));
                }
                Ok::<_, Fail>(form.get("ticket").unwrap_or("").trim().to_owned())
            };
            match handlers::request_support_unblock(&api, &s.principal, &tenant, &mailbox, ticket)
                .await
            {
                Ok(sent) => after_sent(&tenant, &mailbox.to_lowercase(), sent),
                Err(f) => refusal(Some(&s), Some(&tenant), &f),
            }
        }
    };
    done(&api, R_UNBLOCK, r)
}

async fn exemption_add(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Body,
) -> Response {
    let r = match signed_in(&api, &headers) {
        None => to_login(),
        Some(s) => {
            let added = async {
                // The API's check before the form is read (the operation checks again: the pattern
                // is a field of the form).
                handlers::permit(&s.principal, ApiRole::Admin, &tenant)?;
                let form = read_form(&headers, body).await?;
                form.check_csrf(&s)?;
                let pattern = form.get("pattern").unwrap_or("").trim().to_owned();
                let reason = form.get("reason").unwrap_or("").trim().to_owned();
                let expires = match form.get("expires").map(str::trim).filter(|e| !e.is_empty()) {
                    None => None,
                    Some(e) => Some(pages::parse_time(e).ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "expiry must be a date and time (YYYY-MM-DDTHH:MM, UTC)",
                        )
                    })?),
                };
                let input = async { Ok::<_, Fail>((reason, expires)) };
                handlers::put_exemption(&api, &s.principal, &tenant, &pattern, input).await
            };
            match added.await {
                Ok(_) => see_other(&format!("/ui/t/{}/exemptions", enc(&tenant))),
                Err(f) => refusal(Some(&s), Some(&tenant), &f),
            }
        }
    };
    done(&api, R_EXEMPTIONS, r)
}

async fn exemption_remove(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((tenant, pattern)): Path<(String, String)>,
    body: Body,
) -> Response {
    let r = match signed_in(&api, &headers) {
        None => to_login(),
        Some(s) => {
            let removed = async {
                handlers::permit(&s.principal, ApiRole::Admin, &tenant)?;
                let form = read_form(&headers, body).await?;
                form.check_csrf(&s)?;
                handlers::delete_exemption(&api, &s.principal, &tenant, &pattern).await
            };
            match removed.await {
                Ok(_) => see_other(&format!("/ui/t/{}/exemptions", enc(&tenant))),
                Err(f) => refusal(Some(&s), Some(&tenant), &f),
            }
        }
    };
    done(&api, R_EXEMPTION_REMOVE, r)
}

/// The principal's name, role and scope as the pages show them.
pub(crate) fn describe(p: &Principal) -> String {
    match &p.tenant {
        Some(t) => format!("{} ({}, {t})", p.name, p.role.as_str()),
        None => format!("{} ({}, every tenant)", p.name, p.role.as_str()),
    }
}
