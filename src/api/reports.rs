//! The tenant's reports: the events report (JSON, or CSV for an export), the incidents and the
//! alerts, each a time-ordered list, newest first, with a cursor ([`view::queries`] says how a
//! page is cut). ADMIN and above: they name devices, actors and tickets.
//!
//! `from` (inclusive) and `to` (exclusive) are milliseconds since the Unix epoch; the view keeps
//! `api.view_retention_ms` of history, so `from` never reaches further back than that.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Principal;
use super::handlers::{
    authenticate, db, enc, error, finish, incident_summary, json_response, now_ms, path, permit,
    query_pairs, ready, store, Answer, Fail,
};
use super::view::queries::{self, Cursor, EventFilter, TimeRange};
use super::view::{ReportItem, INCIDENT_STATES};
use super::Api;
use crate::config::ApiRole;
use crate::policy::{text, Alert, EventKind, Mailbox, Millis};

pub(super) const R_EVENTS: &str = "/v1/tenants/{tenant}/events";
pub(super) const R_INCIDENTS: &str = "/v1/tenants/{tenant}/incidents";
pub(super) const R_ALERTS: &str = "/v1/tenants/{tenant}/alerts";
pub(super) const R_SHADOW: &str = "/v1/tenants/{tenant}/shadow";

/// Largest JSON page, and the default.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;
/// Largest CSV page (the export), and its default: a month of a busy tenant in a few pages.
const MAX_CSV_LIMIT: usize = 10_000;

/// The query of a list, parsed once.
#[derive(Default)]
pub(crate) struct ListQuery {
    pub(crate) range: TimeRange,
    pub(crate) csv: bool,
    pub(crate) kinds: Vec<String>,
    pub(crate) mailbox: Option<String>,
    pub(crate) state: Option<String>,
    /// The pairs as given (for the CSV export's `Link` to its next page).
    pub(crate) pairs: Vec<(String, String)>,
}

fn bad(message: impl Into<String>) -> Fail {
    error(StatusCode::BAD_REQUEST, message)
}

fn millis(name: &str, v: &str) -> Result<Millis, Fail> {
    v.parse()
        .map_err(|_| bad(format!("{name} must be milliseconds since the Unix epoch")))
}

/// Whether the request asks for CSV (`Accept: text/csv`).
fn accepts_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"))
}

/// Parses the query of `route` (`kind`, `mailbox` only for events, `state` only for incidents;
/// other names are ignored) and whether CSV was asked for.
fn list_query(
    api: &Api,
    pairs: Vec<(String, String)>,
    accept_csv: bool,
    route: &str,
) -> Result<ListQuery, Fail> {
    let mut lq = ListQuery {
        pairs,
        ..ListQuery::default()
    };
    lq.csv = route == R_EVENTS && accept_csv;
    let mut limit = None;
    for (k, v) in lq.pairs.clone() {
        match (k.as_str(), route) {
            ("from", _) => lq.range.from = Some(millis("from", &v)?),
            ("to", _) => lq.range.to = Some(millis("to", &v)?),
            ("limit", _) => limit = Some(v),
            ("cursor", _) => {
                lq.range.cursor = Some(
                    Cursor::parse(&v)
                        .ok_or_else(|| bad("cursor is not one this API returned (next_cursor)"))?,
                )
            }
            ("format", R_EVENTS) if v == "csv" => lq.csv = true,
            ("format", R_EVENTS) if v == "json" => lq.csv = false,
            ("format", R_EVENTS) => return Err(bad("format must be json or csv")),
            ("kind", R_EVENTS) => {
                for k in v.split(',').filter(|k| !k.is_empty()) {
                    if EventKind::parse(k).is_none() {
                        return Err(bad(format!("kind `{k}` is not an event kind")));
                    }
                    lq.kinds.push(k.to_owned());
                }
            }
            ("mailbox", R_EVENTS) => lq.mailbox = Some(Mailbox::new(&v).into_string()),
            ("state", R_INCIDENTS) => {
                if !INCIDENT_STATES.contains(&v.as_str()) {
                    return Err(bad(format!(
                        "state must be one of {}",
                        INCIDENT_STATES.join(", ")
                    )));
                }
                lq.state = Some(v);
            }
            _ => {}
        }
    }
    let max = if lq.csv { MAX_CSV_LIMIT } else { MAX_LIMIT };
    lq.range.limit = match limit {
        None if lq.csv => MAX_CSV_LIMIT,
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| bad(format!("limit must be an integer in 1..={max}")))?,
    };
    if let (Some(f), Some(t)) = (lq.range.from, lq.range.to) {
        if f >= t {
            return Err(bad("from must be before to"));
        }
    }
    // Nothing older than the retention is kept; asking for it is not an error.
    let horizon = now_ms(api).saturating_sub(api.inner.view.retention_ms);
    lq.range.from = Some(lq.range.from.map_or(horizon, |f| f.max(horizon)));
    Ok(lq)
}

/// A list request of the API: the caller, the path's tenant and the query's pairs.
type ListRequest = (Principal, String, Vec<(String, String)>);

fn request(
    api: &Api,
    headers: &HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Option<&str>,
) -> Result<ListRequest, Fail> {
    let who = authenticate(api, headers)?;
    let tenant = path(p)?;
    Ok((who, tenant, query_pairs(q.unwrap_or(""))?))
}

/// Every list's checks: ADMIN with the tenant in scope, the query parsed, the view fresh.
fn begin(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: Vec<(String, String)>,
    accept_csv: bool,
    route: &str,
) -> Result<ListQuery, Fail> {
    permit(who, ApiRole::Admin, tenant)?;
    let lq = list_query(api, pairs, accept_csv, route)?;
    ready(api)?;
    Ok(lq)
}

fn list(tenant: &str, items: Vec<Value>, next: Option<Cursor>) -> Value {
    json!({
        "tenant_id": tenant,
        "items": items,
        "next_cursor": next.map(|c| c.to_string()),
    })
}

fn list_response(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

/// A page of raw JSON items, as `list` would render it, without parsing them again.
fn raw_list(tenant: &str, items: &[Vec<u8>], next: Option<Cursor>) -> Response {
    let mut body = Vec::with_capacity(64 + items.iter().map(|i| i.len() + 1).sum::<usize>());
    body.extend_from_slice(b"{\"tenant_id\":");
    body.extend_from_slice(Value::from(tenant).to_string().as_bytes());
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    let next = next.map_or(Value::Null, |c| Value::from(c.to_string()));
    body.extend_from_slice(next.to_string().as_bytes());
    body.push(b'}');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Stored report items read back (the CSV export and the shadow comparison need their fields).
pub(crate) fn parse_items(raw: &[Vec<u8>]) -> Result<Vec<ReportItem>, Fail> {
    let items = raw
        .iter()
        .map(|i| serde_json::from_slice::<ReportItem>(i))
        .collect::<Result<Vec<_>, _>>();
    db(items.map_err(|e| crate::store::StoreError::Corrupt {
        what: "report item",
        reason: e.to_string(),
    }))
}

pub(super) async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let answer = (|| -> Answer {
        let (who, tenant, pairs) = request(&api, &headers, p, q.as_deref())?;
        let (lq, page) = events_page(&api, &who, &tenant, pairs, accepts_csv(&headers))?;
        if lq.csv {
            let items = parse_items(&page.items)?;
            let export = format!("/v1/tenants/{}/events", enc(&tenant));
            return Ok(csv_response(&lq, &items, page.next, &export));
        }
        Ok(raw_list(&tenant, &page.items, page.next))
    })();
    finish(&api, R_EVENTS, answer)
}

/// A page of the events report (ADMIN): its parsed query and raw items.
pub(crate) fn events_page(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: Vec<(String, String)>,
    accept_csv: bool,
) -> Result<(ListQuery, queries::Page<Vec<u8>>), Fail> {
    let lq = begin(api, who, tenant, pairs, accept_csv, R_EVENTS)?;
    let filter = EventFilter {
        kinds: lq.kinds.clone(),
        mailbox: lq.mailbox.clone(),
    };
    let page = db(queries::events(store(api), tenant, &filter, &lq.range))?;
    Ok((lq, page))
}

pub(super) async fn incidents(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let answer = (|| -> Answer {
        let (who, tenant, pairs) = request(&api, &headers, p, q.as_deref())?;
        Ok(list_response(incidents_list(&api, &who, &tenant, pairs)?))
    })();
    finish(&api, R_INCIDENTS, answer)
}

/// The tenant's incidents, newest first (ADMIN): `state`, `from`, `to`, `limit`, `cursor`.
pub(crate) fn incidents_list(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: Vec<(String, String)>,
) -> Result<Value, Fail> {
    {
        let lq = begin(api, who, tenant, pairs, false, R_INCIDENTS)?;
        let page = db(queries::incidents(
            store(api),
            tenant,
            lq.state.as_deref(),
            &lq.range,
        ))?;
        let items = page
            .items
            .iter()
            .map(|(id, i)| {
                let mut v = incident_summary(id, i);
                v["mailbox"] = json!(i.mailbox);
                v["state"] = json!(i.state());
                v["at"] = json!(i.when());
                v
            })
            .collect();
        Ok(list(tenant, items, page.next))
    }
}

fn alert_json(at: Millis, a: &Alert) -> Value {
    json!({
        "alert_id": a.alert_id,
        "kind": a.kind.as_str(),
        "published_at": at,
        "incident_id": a.incident_id,
        "mailbox": a.mailbox,
        "owner_id": a.owner_id,
        "strike": a.strike,
        "state": a.state.as_str(),
        "blocked_until": a.blocked_until,
        "devices_scanned": a.devices_scanned,
        "scan_skipped_reason": a.scan_skipped_reason.map(|r| r.as_str()),
        "summary": a.summary,
    })
}

pub(super) async fn alerts(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let answer = (|| -> Answer {
        let (who, tenant, pairs) = request(&api, &headers, p, q.as_deref())?;
        Ok(list_response(alerts_list(&api, &who, &tenant, pairs)?))
    })();
    finish(&api, R_ALERTS, answer)
}

/// The tenant's alerts, newest first (ADMIN).
pub(crate) fn alerts_list(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: Vec<(String, String)>,
) -> Result<Value, Fail> {
    let lq = begin(api, who, tenant, pairs, false, R_ALERTS)?;
    let page = db(queries::alerts(store(api), tenant, &lq.range))?;
    let items = page
        .items
        .iter()
        .map(|(at, a)| alert_json(*at, a))
        .collect();
    Ok(list(tenant, items, page.next))
}

// ------------------------------------------------------------------------------------------------
// Live against shadow (SPEC §1.13): both from the trip events of the events report.

/// Most pages of trip events one comparison reads (each examining at most
/// `queries::SCAN_BUDGET` events); beyond it the answer says it is incomplete.
const SHADOW_PAGES: usize = 50;
/// Most mailboxes named per side of the difference.
const SHADOW_NAMES: usize = 100;

/// Live trip kinds, then the shadow's.
pub(crate) const LIVE_TRIPS: [&str; 4] = [
    "MAILBOX_BLOCKED",
    "MAILBOX_PERMANENTLY_BLOCKED",
    "TRIP_SIMULATED",
    "TRIP_EXEMPTED",
];

/// What one policy did over the period.
#[derive(Default)]
pub struct Side {
    /// Trips (exempt ones included).
    pub trips: usize,
    /// Mailboxes it blocked (or would have: alert-only), exempt trips not counted.
    pub blocked: std::collections::BTreeSet<String>,
    /// `blocked_at − first_sent_at` of each trip.
    pub times: Vec<Millis>,
}

impl Side {
    fn add(&mut self, item: &ReportItem) {
        self.trips += 1;
        if let Some(t) = &item.trip {
            self.times.push(t.blocked_at - t.first_sent_at);
            if !t.exempt && item.kind != "TRIP_EXEMPTED" {
                self.blocked.insert(item.mailbox.clone());
            }
        }
    }

    fn json(&self) -> Value {
        let mut t = self.times.clone();
        t.sort_unstable();
        json!({
            "trips": self.trips,
            "mailboxes_blocked": self.blocked.len(),
            "median_time_to_block_ms": (!t.is_empty()).then(|| t[t.len() / 2]),
        })
    }
}

/// The comparison of trip events already read: live and shadow, and who only one blocked.
pub fn compare(items: &[ReportItem]) -> (Side, Side) {
    let (mut live, mut shadow) = (Side::default(), Side::default());
    for i in items {
        if i.kind == "SHADOW_TRIP" {
            shadow.add(i);
        } else if LIVE_TRIPS.contains(&i.kind.as_str()) {
            live.add(i);
        }
    }
    (live, shadow)
}

fn only(a: &Side, b: &Side) -> Value {
    let names: Vec<&String> = a.blocked.difference(&b.blocked).collect();
    json!({
        "count": names.len(),
        "mailboxes": names.iter().take(SHADOW_NAMES).collect::<Vec<_>>(),
    })
}

pub(super) async fn shadow(
    State(api): State<Api>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Response {
    let answer = (|| -> Answer {
        let (who, tenant, pairs) = request(&api, &headers, p, q.as_deref())?;
        Ok(list_response(shadow_comparison(
            &api, &who, &tenant, pairs,
        )?))
    })();
    finish(&api, R_SHADOW, answer)
}

/// Live against shadow over `from`..`to` (ADMIN).
pub(crate) fn shadow_comparison(
    api: &Api,
    who: &Principal,
    tenant: &str,
    pairs: Vec<(String, String)>,
) -> Result<Value, Fail> {
    {
        let mut lq = begin(api, who, tenant, pairs, false, R_SHADOW)?;
        let filter = EventFilter {
            kinds: LIVE_TRIPS
                .iter()
                .chain(["SHADOW_TRIP"].iter())
                .map(|k| (*k).to_owned())
                .collect(),
            mailbox: None,
        };
        lq.range.limit = MAX_LIMIT;
        lq.range.cursor = None;
        let mut items = Vec::new();
        let mut complete = false;
        for _ in 0..SHADOW_PAGES {
            let page = db(queries::events(store(api), tenant, &filter, &lq.range))?;
            items.extend(parse_items(&page.items)?);
            match page.next {
                Some(c) => lq.range.cursor = Some(c),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let (live, shadow) = compare(&items);
        Ok(json!({
                "tenant_id": tenant,
                "from": lq.range.from,
                "to": lq.range.to,
                "live": live.json(),
                "shadow": shadow.json(),
                "only_live": only(&live, &shadow),
                "only_shadow": only(&shadow, &live),
                "complete": complete,
        }))
    }
}

// ------------------------------------------------------------------------------------------------
// CSV (RFC 4180), the export administrators open in a spreadsheet.

/// The export's columns.
pub const CSV_HEADER: &str = "at,at_ms,kind,mailbox,incident_id,event_id,reason,detail";

/// One field: quoted when it holds a comma, quote or line break; and a field a spreadsheet would
/// run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`.
pub fn csv_field(s: &str, out: &mut String) {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || s.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

/// The CSV of events, one line each, after [`CSV_HEADER`]; lines end with CRLF.
pub fn events_csv(events: &[ReportItem]) -> String {
    let mut out = String::with_capacity(64 + events.len() * 160);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for e in events {
        let fields = [
            text::iso8601(e.at),
            e.at.to_string(),
            e.kind.clone(),
            e.mailbox.clone(),
            e.incident_id.clone().unwrap_or_default(),
            e.event_id.clone(),
            e.reason.clone().unwrap_or_default(),
            e.detail.clone(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            csv_field(f, &mut out);
        }
        out.push_str("\r\n");
    }
    out
}

/// The CSV answer; its next page, if any, in `Link` (`rel="next"`: `export` with the query and the
/// next cursor; the API's or the console's path) and `X-Next-Cursor`.
pub(crate) fn csv_response(
    lq: &ListQuery,
    events: &[ReportItem],
    next: Option<Cursor>,
    export: &str,
) -> Response {
    let mut r = (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                "text/csv; charset=utf-8; header=present",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mailguard-events.csv\"",
            ),
        ],
        events_csv(events),
    )
        .into_response();
    if let Some(c) = next {
        let mut q: Vec<String> = lq
            .pairs
            .iter()
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        q.push(format!("cursor={}", enc(&c.to_string())));
        let link = format!("<{export}?{}>; rel=\"next\"", q.join("&"));
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
        if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
            h.insert("x-next-cursor", v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(kind: &str, mailbox: &str, first: Millis, at: Millis, exempt: bool) -> ReportItem {
        ReportItem {
            event_id: format!("{kind}-{mailbox}"),
            kind: kind.into(),
            at,
            mailbox: mailbox.into(),
            incident_id: None,
            detail: String::new(),
            reason: None,
            trip: Some(crate::api::view::ReportTrip {
                strike: 1,
                first_sent_at: first,
                blocked_at: at,
                exempt,
            }),
        }
    }

    #[test]
    fn live_and_shadow_compare_by_trips_mailboxes_and_time_to_block() {
        let items = [
            trip("MAILBOX_BLOCKED", "a@t", 0, 100, false),
            trip("SHADOW_TRIP", "a@t", 0, 40, false),
            trip("SHADOW_TRIP", "b@t", 10, 30, false),
            trip("TRIP_SIMULATED", "c@t", 0, 300, false),
            trip("TRIP_EXEMPTED", "d@t", 0, 50, true),
            trip("SHADOW_TRIP", "d@t", 0, 20, true),
            trip("MAILBOX_WARNED", "e@t", 0, 1, false),
        ];
        let (live, shadow) = compare(&items);
        assert_eq!((live.trips, shadow.trips), (3, 3));
        assert_eq!(live.json()["median_time_to_block_ms"], 100);
        assert_eq!(shadow.json()["median_time_to_block_ms"], 20);
        assert_eq!(
            only(&live, &shadow),
            json!({"count": 1, "mailboxes": ["c@t"]})
        );
        assert_eq!(
            only(&shadow, &live),
            json!({"count": 1, "mailboxes": ["b@t"]})
        );
        assert_eq!(
            live.json()["mailboxes_blocked"],
            2,
            "an exempt trip blocks nothing"
        );
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        let f = |s: &str| {
            let mut o = String::new();
            csv_field(s, &mut o);
            o
        };
        assert_eq!(f("plain"), "plain");
        assert_eq!(f("a,b"), "\"a,b\"");
        assert_eq!(f("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(f("two\nlines"), "\"two\nlines\"");
        assert_eq!(f("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(f("-1"), "\"'-1\"");
        assert_eq!(f(""), "");
    }
}
