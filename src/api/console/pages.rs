//! The console's pages: askama templates (`templates/console/`, compiled in, HTML-escaped by
//! default) filled from the answers of the API's operations — the same JSON `/v1` serves, so a
//! page shows exactly what the API says.

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::super::auth::Principal;
use super::super::handlers::{self, enc, error, now_ms, Fail};
use super::super::{reports, Api};
use crate::config::ApiRole;
use crate::policy::{text, EventKind, Millis};

const DAY: Millis = 86_400_000;
/// Days the overview's plot covers.
const PLOT_DAYS: usize = 14;
/// Most pages of trip events the plot reads; beyond it the plot says it is incomplete.
const PLOT_PAGES: usize = 20;
/// Events per page of the events report.
const EVENTS_PER_PAGE: usize = 50;

/// The frame every page shares: who is signed in, the tenant, the links the role may follow.
pub struct Nav {
    pub who: String,
    pub csrf: String,
    pub tenant: Option<String>,
    /// The tenant, percent-encoded for links.
    pub t: String,
    pub admin: bool,
    pub support: bool,
    pub every_tenant: bool,
}

impl Nav {
    pub fn new(p: &Principal, csrf: &str, tenant: Option<&str>) -> Nav {
        Nav {
            who: super::describe(p),
            csrf: csrf.to_owned(),
            tenant: tenant.map(str::to_owned),
            t: tenant.map(enc).unwrap_or_default(),
            admin: p.has_role(ApiRole::Admin),
            support: p.has_role(ApiRole::Support),
            every_tenant: p.tenant.is_none(),
        }
    }
}

/// A rendered page.
pub struct Page(Result<String, askama::Error>);

impl Page {
    fn of(t: impl Template) -> Page {
        Page(t.render())
    }

    /// 200 with the page (500 if a template failed, which a test would have caught).
    pub fn render(self) -> Response {
        match self.0 {
            Ok(html) => {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "console: a page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }

    pub fn login(error: Option<&str>) -> Page {
        Page::of(LoginTpl {
            nav: None,
            error: error.map(str::to_owned),
        })
    }

    pub fn error(nav: Option<Nav>, status: u16, message: &str) -> Page {
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_owned();
        Page::of(ErrorTpl {
            nav,
            status,
            title,
            message: message.to_owned(),
        })
    }

    pub fn tenants(nav: Nav, tenants: Vec<String>) -> Page {
        let tenants = tenants
            .into_iter()
            .map(|t| Link {
                href: format!("/ui/t/{}", enc(&t)),
                text: t,
            })
            .collect();
        Page::of(TenantsTpl {
            nav: Some(nav),
            tenants,
        })
    }

    pub fn mailbox(nav: Nav, v: &Value) -> Page {
        let t = nav.t.clone();
        let state = s(&v["state"]);
        let w = &v["window"];
        let offending = w["offending_messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| (s(&m["message_id"]), time(&m["sent_at"])))
                    .collect()
            })
            .unwrap_or_default();
        let next_trip = (!w["next_trip"].is_null()).then(|| {
            format!(
                "{} more offending message(s) sent by {} would trip it",
                s(&w["next_trip"]["more_offending_messages"]),
                time(&w["next_trip"]["sent_by"])
            )
        });
        let incidents = rows(&v["recent_incidents"])
            .map(|i| incident_row(&t, nav.admin, i))
            .collect();
        let ex = &v["exemption"];
        let exemption = (!ex.is_null()).then(|| {
            format!(
                "exempt by {} ({}), {}",
                s(&ex["pattern"]),
                s(&ex["reason"]),
                match ex["expires_at"].as_i64() {
                    Some(x) => format!("until {}", fmt_time(x)),
                    None => "without expiry".to_owned(),
                }
            )
        });
        let sim = &v["simulated"];
        let simulated = (!sim.is_null()).then(|| {
            format!(
                "alert-only: enforcement would be at strike {}, blocked {}",
                s(&sim["strikes"]),
                if sim["permanent"] == true {
                    "permanently".to_owned()
                } else {
                    format!("until {}", time(&sim["blocked_until"]))
                }
            )
        });
        let mailbox = s(&v["mailbox"]);
        Page::of(MailboxTpl {
            unblock_href: format!("/ui/t/{t}/mailboxes/{}/unblock", enc(&mailbox)),
            can_unblock: nav.support && state == "PERMANENTLY_BLOCKED",
            mailbox,
            blocked: state != "UNBLOCKED",
            state,
            blocked_at: time(&v["blocked_at"]),
            blocked_until: match (&v["blocked_until"], v["state"].as_str()) {
                (Value::Null, Some("PERMANENTLY_BLOCKED")) => "never (permanent)".to_owned(),
                (u, _) => time(u),
            },
            incident: v["incident_id"].as_str().map(|id| Link {
                href: format!("/ui/t/{t}/incidents/{}", enc(id)),
                text: id.to_owned(),
            }),
            strikes: s(&v["strikes"]),
            mode: s(&v["mode"]),
            warning: v["warning"]["warned_through"].as_i64().map(fmt_time),
            simulated,
            threshold: s(&w["threshold"]),
            window_minutes: w["window_ms"].as_i64().unwrap_or(0) / 60_000,
            offending,
            next_trip,
            exemption,
            incidents,
            nav: Some(nav),
        })
    }

    pub fn incident(nav: Nav, v: &Value) -> Page {
        let t = nav.t.clone();
        let mailbox = s(&v["mailbox"]);
        let scan = &v["scan"];
        Page::of(IncidentTpl {
            id: s(&v["incident_id"]),
            mailbox_href: format!("/ui/t/{t}/mailboxes/{}", enc(&mailbox)),
            mailbox,
            state: s(&v["state"]),
            strike: s(&v["strike"]),
            block: if v["permanent"] == true {
                "permanent".to_owned()
            } else {
                format!("until {}", time(&v["blocked_until"]))
            },
            blocked_at: time(&v["blocked_at"]),
            evidence: v["evidence_message_ids"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default(),
            scan_state: s(&scan["state"]),
            skipped: scan["skipped_reason"].as_str().map(str::to_owned),
            devices: rows(&scan["devices"])
                .map(|d| Device {
                    id: s(&d["device_id"]),
                    status: s(&d["status"]),
                    threats: s(&d["threats"]),
                })
                .collect(),
            timeline: rows(&v["timeline"])
                .map(|e| (time(&e["at"]), s(&e["kind"]), s(&e["detail"])))
                .collect(),
            nav: Some(nav),
        })
    }

    pub fn command(nav: Nav, v: &Value) -> Page {
        let mailbox = s(&v["mailbox"]);
        let status = s(&v["status"]);
        Page::of(CommandTpl {
            mailbox_href: format!("/ui/t/{}/mailboxes/{}", nav.t, enc(&mailbox)),
            mailbox,
            id: s(&v["command_id"]),
            kind: s(&v["kind"]),
            actor: format!("{} ({})", s(&v["actor"]), s(&v["actor_role"])),
            ticket: s(&v["ticket"]),
            issued_at: time(&v["issued_at"]),
            pending: status == "PENDING",
            status,
            reason: v["reason"].as_str().map(str::to_owned),
            detail: v["detail"].as_str().map(str::to_owned),
            decided_at: time(&v["decided_at"]),
            nav: Some(nav),
        })
    }

    pub fn exemptions(nav: Nav, v: &Value) -> Page {
        let t = nav.t.clone();
        let items = rows(&v["items"])
            .map(|e| {
                let pattern = s(&e["pattern"]);
                ExemptionRow {
                    remove_href: format!("/ui/t/{t}/exemptions/{}/remove", enc(&pattern)),
                    pattern,
                    reason: s(&e["reason"]),
                    actor: format!("{} ({})", s(&e["actor"]), s(&e["actor_role"])),
                    created_at: time(&e["created_at"]),
                    expires_at: time_or(&e["expires_at"], "never"),
                }
            })
            .collect();
        Page::of(ExemptionsTpl {
            action: format!("/ui/t/{t}/exemptions"),
            items,
            max: s(&v["max_exemptions"]),
            nav: Some(nav),
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Pages that call several operations

/// A tenant's overview: blocked now (VIEWER); for ADMIN and above also trips and warnings per day,
/// the incidents that need attention and the tenant's mode and policy.
pub fn overview(api: &Api, who: &Principal, tenant: &str, nav: Nav) -> Result<Page, Fail> {
    let t = nav.t.clone();
    let limit = [("limit".to_owned(), "25".to_owned())];
    let blocked = handlers::blocked_view(api, who, tenant, &limit)?;
    let blocked_rows = rows(&blocked["items"])
        .map(|b| {
            let mailbox = s(&b["mailbox"]);
            Blocked {
                href: format!("/ui/t/{t}/mailboxes/{}", enc(&mailbox)),
                mailbox,
                state: s(&b["state"]),
                strikes: s(&b["strikes"]),
                blocked_at: time(&b["blocked_at"]),
                until: time_or(&b["blocked_until"], "permanent"),
            }
        })
        .collect();
    let (plot, attention, settings) = if who.has_role(ApiRole::Admin) {
        let plot = trips_plot(api, who, tenant)?;
        let attention = reports::incidents_list(
            api,
            who,
            tenant,
            vec![
                ("state".into(), "NEEDS_ATTENTION".into()),
                ("limit".into(), "25".into()),
            ],
        )?;
        let attention: Vec<IncidentRow> = rows(&attention["items"])
            .map(|i| incident_row(&t, true, i))
            .collect();
        let st = handlers::settings_view(api, who, tenant)?;
        let p = &st["policy"];
        let settings = Settings {
            mode: s(&st["mode"]),
            source: s(&st["source"]),
            sync_security: st["sync_security_enabled"] == true,
            endpoint_licence: st["endpoint_licence"] == true,
            policy: format!(
                "{} offending messages within {} min trip it; blocks of {} min doubling per strike, \
                 permanent at strike {}; warning at {}",
                s(&p["threshold"]),
                p["window_ms"].as_i64().unwrap_or(0) / 60_000,
                p["base_block_ms"].as_i64().unwrap_or(0) / 60_000,
                s(&p["permanent_strike"]),
                match p["warn_threshold"].as_i64() {
                    Some(0) | None => "off".to_owned(),
                    Some(w) => format!("{w} messages"),
                }
            ),
        };
        (Some(plot), Some(attention), Some(settings))
    } else {
        (None, None, None)
    };
    Ok(Page::of(OverviewTpl {
        tenant: tenant.to_owned(),
        more_blocked: !blocked["next_cursor"].is_null(),
        blocked: blocked_rows,
        plot,
        attention,
        settings,
        lookup: format!("/ui/t/{t}/mailboxes"),
        nav: Some(nav),
    }))
}

/// Trips and warnings per UTC day over the last [`PLOT_DAYS`], from the events report.
fn trips_plot(api: &Api, who: &Principal, tenant: &str) -> Result<Plot, Fail> {
    let now = now_ms(api);
    let first_day = now.div_euclid(DAY) * DAY - (PLOT_DAYS as Millis - 1) * DAY;
    let mut trips = [0u64; PLOT_DAYS];
    let mut warnings = [0u64; PLOT_DAYS];
    // Trips as the shadow comparison counts them (enforced, simulated and exempt), and warnings.
    let kinds = reports::LIVE_TRIPS.join(",") + ",MAILBOX_WARNED";
    let mut cursor: Option<String> = None;
    let mut complete = false;
    for _ in 0..PLOT_PAGES {
        let mut pairs = vec![
            ("from".to_owned(), first_day.to_string()),
            ("kind".to_owned(), kinds.clone()),
            ("limit".to_owned(), "1000".to_owned()),
        ];
        if let Some(c) = cursor.take() {
            pairs.push(("cursor".to_owned(), c));
        }
        let (_, page) = reports::events_page(api, who, tenant, pairs, false)?;
        for item in reports::parse_items(&page.items)? {
            let day = ((item.at - first_day).div_euclid(DAY)) as usize;
            if day < PLOT_DAYS {
                if item.kind == "MAILBOX_WARNED" {
                    warnings[day] += 1;
                } else {
                    trips[day] += 1;
                }
            }
        }
        match page.next {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                complete = true;
                break;
            }
        }
    }
    Ok(Plot::new(first_day, &trips, &warnings, complete))
}

/// The console's own filter of the events report (what its form sends).
#[derive(Default)]
pub struct EventsFilter {
    pub from: String,
    pub to: String,
    pub kind: String,
    pub mailbox: String,
    from_ms: Option<Millis>,
    to_ms: Option<Millis>,
}

impl EventsFilter {
    /// From the page's query (400 for a time that does not parse or a kind that is not one).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<EventsFilter, Fail> {
        let mut f = EventsFilter::default();
        for (k, v) in pairs {
            let v = v.trim();
            match k.as_str() {
                "from" => f.from = v.to_owned(),
                "to" => f.to = v.to_owned(),
                "kind" => f.kind = v.to_owned(),
                "mailbox" => f.mailbox = v.to_owned(),
                _ => {}
            }
        }
        let when = |name: &str, v: &str| -> Result<Option<Millis>, Fail> {
            if v.is_empty() {
                return Ok(None);
            }
            parse_time(v).map(Some).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be a date and time (YYYY-MM-DDTHH:MM, UTC)"),
                )
            })
        };
        f.from_ms = when("from", &f.from)?;
        f.to_ms = when("to", &f.to)?;
        Ok(f)
    }

    /// The API query of this filter (the API checks it: kinds, order of from and to).
    pub fn api_pairs(&self, cursor: Option<&str>) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if let Some(f) = self.from_ms {
            p.push(("from".to_owned(), f.to_string()));
        }
        if let Some(t) = self.to_ms {
            p.push(("to".to_owned(), t.to_string()));
        }
        if !self.kind.is_empty() {
            p.push(("kind".to_owned(), self.kind.clone()));
        }
        if !self.mailbox.is_empty() {
            p.push(("mailbox".to_owned(), self.mailbox.clone()));
        }
        if let Some(c) = cursor {
            p.push(("cursor".to_owned(), c.to_owned()));
        }
        p
    }

    /// The page's own query for this filter (links keep it).
    fn query(&self) -> String {
        [
            ("from", &self.from),
            ("to", &self.to),
            ("kind", &self.kind),
            ("mailbox", &self.mailbox),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// The events report, a page at a time, filtered by time range, kind and mailbox (ADMIN).
pub fn events(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: &[(String, String)],
    nav: Nav,
) -> Result<Page, Fail> {
    let t = nav.t.clone();
    let filter = EventsFilter::from_pairs(pairs)?;
    let cursor = pairs
        .iter()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.as_str())
        .filter(|c| !c.is_empty());
    let mut api_pairs = filter.api_pairs(cursor);
    api_pairs.push(("limit".to_owned(), EVENTS_PER_PAGE.to_string()));
    let (_, page) = reports::events_page(api, who, tenant, api_pairs, false)?;
    let items = reports::parse_items(&page.items)?;
    let q = filter.query();
    let amp = if q.is_empty() { "" } else { "&" };
    let events = items
        .iter()
        .map(|e| EventRow {
            at: fmt_time(e.at),
            kind: e.kind.clone(),
            mailbox_href: format!("/ui/t/{t}/mailboxes/{}", enc(&e.mailbox)),
            mailbox: e.mailbox.clone(),
            incident: e.incident_id.as_ref().map(|id| Link {
                href: format!("/ui/t/{t}/incidents/{}", enc(id)),
                text: id.clone(),
            }),
            detail: e.detail.clone(),
        })
        .collect();
    Ok(Page::of(EventsTpl {
        action: format!("/ui/t/{t}/events"),
        csv: format!("/ui/t/{t}/events.csv?{q}"),
        first: cursor.map(|_| format!("/ui/t/{t}/events?{q}")),
        next: page
            .next
            .map(|c| format!("/ui/t/{t}/events?{q}{amp}cursor={}", enc(&c.to_string()))),
        kinds: EventKind::ALL
            .iter()
            .map(|k| (k.as_str(), k.as_str() == filter.kind))
            .collect(),
        events,
        filter,
        nav: Some(nav),
    }))
}

/// Live against shadow over a period (ADMIN).
pub fn shadow(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: &[(String, String)],
    nav: Nav,
) -> Result<Page, Fail> {
    let filter = EventsFilter::from_pairs(pairs)?;
    let v = reports::shadow_comparison(api, who, tenant, filter.api_pairs(None))?;
    let side = |x: &Value| {
        [
            s(&x["trips"]),
            s(&x["mailboxes_blocked"]),
            match x["median_time_to_block_ms"].as_i64() {
                Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
                None => "—".to_owned(),
            },
        ]
    };
    let names = |x: &Value| -> Vec<String> {
        x["mailboxes"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    };
    Ok(Page::of(ShadowTpl {
        action: format!("/ui/t/{}/shadow", nav.t),
        live: side(&v["live"]),
        shadow: side(&v["shadow"]),
        only_live: (s(&v["only_live"]["count"]), names(&v["only_live"])),
        only_shadow: (s(&v["only_shadow"]["count"]), names(&v["only_shadow"])),
        complete: v["complete"] == true,
        from: time(&v["from"]),
        to: time(&v["to"]),
        filter,
        nav: Some(nav),
    }))
}

// ------------------------------------------------------------------------------------------------
// Values as a page shows them

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A field as text: strings as they are, numbers and booleans printed, absent as a dash.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

/// `2026-12-02 12:30:05 UTC`.
pub fn fmt_time(ms: Millis) -> String {
    let iso = text::iso8601(ms);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

fn time(v: &Value) -> String {
    time_or(v, "—")
}

/// A time field, or `absent` when it is null.
fn time_or(v: &Value, absent: &str) -> String {
    v.as_i64().map_or_else(|| absent.to_owned(), fmt_time)
}

/// A time a person types: `YYYY-MM-DDTHH:MM` (what a `datetime-local` field sends, taken as
/// UTC), with optional `:SS`, a bare `YYYY-MM-DD`, or milliseconds since the Unix epoch.
pub fn parse_time(v: &str) -> Option<Millis> {
    let v = v.trim().trim_end_matches('Z');
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok();
    }
    let (date, clock) = v.split_once(['T', ' ']).unwrap_or((v, "00:00"));
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: i64 = c.next().map_or(Some(0), |x| x.parse().ok())?;
    if c.next().is_some() || h > 23 || min > 59 || sec > 59 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000)
}

fn incident_row(t: &str, admin: bool, i: &Value) -> IncidentRow {
    let id = s(&i["incident_id"]);
    let mailbox = s(&i["mailbox"]);
    IncidentRow {
        // The incident page is ADMIN's: a VIEWER sees the id without a link.
        href: admin.then(|| format!("/ui/t/{t}/incidents/{}", enc(&id))),
        id,
        mailbox_href: format!("/ui/t/{t}/mailboxes/{}", enc(&mailbox)),
        mailbox,
        // A list's incidents carry `state`; a mailbox's recent ones their block's `last_state`.
        state: s(if i["state"].is_null() {
            &i["last_state"]
        } else {
            &i["state"]
        }),
        strike: s(&i["strike"]),
        at: time(&i["blocked_at"]),
    }
}

// ------------------------------------------------------------------------------------------------
// Templates

pub struct Link {
    pub href: String,
    pub text: String,
}

pub struct Blocked {
    pub mailbox: String,
    pub href: String,
    pub state: String,
    pub strikes: String,
    pub blocked_at: String,
    pub until: String,
}

pub struct IncidentRow {
    pub id: String,
    pub href: Option<String>,
    pub mailbox: String,
    pub mailbox_href: String,
    pub state: String,
    pub strike: String,
    pub at: String,
}

pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub mailbox: String,
    pub mailbox_href: String,
    pub incident: Option<Link>,
    pub detail: String,
}

pub struct Device {
    pub id: String,
    pub status: String,
    pub threats: String,
}

pub struct ExemptionRow {
    pub pattern: String,
    pub remove_href: String,
    pub reason: String,
    pub actor: String,
    pub created_at: String,
    pub expires_at: String,
}

pub struct Settings {
    pub mode: String,
    pub source: String,
    pub sync_security: bool,
    pub endpoint_licence: bool,
    pub policy: String,
}

/// One day of the plot: its bars in SVG user units (the plot is 700 × 220).
pub struct Bar {
    pub label: String,
    pub title: String,
    pub x: usize,
    pub trips_y: u64,
    pub trips_h: u64,
    pub warn_x: usize,
    pub warn_y: u64,
    pub warn_h: u64,
}

pub struct Plot {
    pub bars: Vec<Bar>,
    pub max: u64,
    pub total_trips: u64,
    pub total_warnings: u64,
    pub complete: bool,
}

/// Height of the bars' area, and where it ends.
const PLOT_H: u64 = 170;
const PLOT_BASE: u64 = 190;

impl Plot {
    fn new(first_day: Millis, trips: &[u64], warnings: &[u64], complete: bool) -> Plot {
        let max = trips
            .iter()
            .chain(warnings)
            .copied()
            .max()
            .unwrap_or(0)
            .max(1);
        let h = |n: u64| n * PLOT_H / max;
        let bars = (0..trips.len())
            .map(|d| {
                let day = &text::iso8601(first_day + d as Millis * DAY)[..10];
                Bar {
                    label: day[5..].to_owned(),
                    title: format!("{day}: {} trips, {} warnings", trips[d], warnings[d]),
                    x: 40 + d * 47,
                    trips_y: PLOT_BASE - h(trips[d]),
                    trips_h: h(trips[d]),
                    warn_x: 40 + d * 47 + 19,
                    warn_y: PLOT_BASE - h(warnings[d]),
                    warn_h: h(warnings[d]),
                }
            })
            .collect();
        Plot {
            bars,
            max,
            total_trips: trips.iter().sum(),
            total_warnings: warnings.iter().sum(),
            complete,
        }
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginTpl {
    nav: Option<Nav>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorTpl {
    nav: Option<Nav>,
    status: u16,
    title: String,
    message: String,
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsTpl {
    nav: Option<Nav>,
    tenants: Vec<Link>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewTpl {
    nav: Option<Nav>,
    tenant: String,
    blocked: Vec<Blocked>,
    more_blocked: bool,
    plot: Option<Plot>,
    attention: Option<Vec<IncidentRow>>,
    settings: Option<Settings>,
    lookup: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsTpl {
    nav: Option<Nav>,
    action: String,
    csv: String,
    first: Option<String>,
    next: Option<String>,
    kinds: Vec<(&'static str, bool)>,
    events: Vec<EventRow>,
    filter: EventsFilter,
}

#[derive(Template)]
#[template(path = "console/mailbox.html")]
struct MailboxTpl {
    nav: Option<Nav>,
    mailbox: String,
    state: String,
    blocked: bool,
    blocked_at: String,
    blocked_until: String,
    incident: Option<Link>,
    strikes: String,
    mode: String,
    warning: Option<String>,
    simulated: Option<String>,
    threshold: String,
    window_minutes: i64,
    offending: Vec<(String, String)>,
    next_trip: Option<String>,
    exemption: Option<String>,
    incidents: Vec<IncidentRow>,
    can_unblock: bool,
    unblock_href: String,
}

#[derive(Template)]
#[template(path = "console/incident.html")]
struct IncidentTpl {
    nav: Option<Nav>,
    id: String,
    mailbox: String,
    mailbox_href: String,
    state: String,
    strike: String,
    block: String,
    blocked_at: String,
    evidence: Vec<String>,
    scan_state: String,
    skipped: Option<String>,
    devices: Vec<Device>,
    timeline: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "console/command.html")]
struct CommandTpl {
    nav: Option<Nav>,
    id: String,
    mailbox: String,
    mailbox_href: String,
    kind: String,
    actor: String,
    ticket: String,
    issued_at: String,
    status: String,
    pending: bool,
    reason: Option<String>,
    detail: Option<String>,
    decided_at: String,
}

#[derive(Template)]
#[template(path = "console/exemptions.html")]
struct ExemptionsTpl {
    nav: Option<Nav>,
    action: String,
    items: Vec<ExemptionRow>,
    max: String,
}

#[derive(Template)]
#[template(path = "console/shadow.html")]
struct ShadowTpl {
    nav: Option<Nav>,
    action: String,
    filter: EventsFilter,
    live: [String; 3],
    shadow: [String; 3],
    only_live: (String, Vec<String>),
    only_shadow: (String, Vec<String>),
    complete: bool,
    from: String,
    to: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_times_parse_as_utc_and_round_trip_the_display() {
        assert_eq!(parse_time("1970-01-01T00:00"), Some(0));
        assert_eq!(parse_time("2023-11-14T22:13:20"), Some(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14 22:13"), Some(1_699_999_980_000));
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000));
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-01-01T24:00",
            "2024-01-01T10",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        let t = 1_764_680_405_000;
        let shown = fmt_time(t);
        assert_eq!(shown, "2025-12-02 13:00:05 UTC");
        assert_eq!(parse_time(shown.trim_end_matches(" UTC")), Some(t));
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let html = Page::error(None, 403, "<script>alert(1)</script>")
            .0
            .unwrap();
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn the_plot_scales_bars_to_the_busiest_day() {
        let p = Plot::new(0, &[0, 4, 2], &[1, 0, 8], true);
        assert_eq!(p.max, 8);
        assert_eq!((p.total_trips, p.total_warnings), (6, 9));
        assert_eq!(p.bars[2].warn_h, PLOT_H);
        assert_eq!(p.bars[1].trips_h, PLOT_H / 2);
        assert_eq!(p.bars[0].trips_h, 0);
        assert_eq!(p.bars[1].label, "01-02");
        assert_eq!(p.bars[1].title, "1970-01-02: 4 trips, 0 warnings");
    }

    #[test]
    fn every_event_kind_is_offered_and_the_filter_keeps_its_query() {
        assert_eq!(EventKind::ALL.len(), 19);
        let pairs = vec![
            ("from".to_owned(), "2024-01-01T00:00".to_owned()),
            ("kind".to_owned(), "MAILBOX_BLOCKED".to_owned()),
            ("mailbox".to_owned(), "a b@x".to_owned()),
        ];
        let f = EventsFilter::from_pairs(&pairs).unwrap();
        assert_eq!(
            f.query(),
            "from=2024%2D01%2D01T00%3A00&kind=MAILBOX%5FBLOCKED&mailbox=a%20b%40x"
        );
        assert_eq!(
            f.api_pairs(Some("c")),
            vec![
                ("from".to_owned(), "1704067200000".to_owned()),
                ("kind".to_owned(), "MAILBOX_BLOCKED".to_owned()),
                ("mailbox".to_owned(), "a b@x".to_owned()),
                ("cursor".to_owned(), "c".to_owned()),
            ]
        );
        let bad = vec![("to".to_owned(), "soon".to_owned())];
        assert_eq!(
            EventsFilter::from_pairs(&bad).err().unwrap().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
