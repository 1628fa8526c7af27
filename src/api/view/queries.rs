//! What the handlers ask of the view: reads of its store, each bounded in the work it does.
//!
//! Lists ordered by time (events, incidents, alerts) are newest first with a cursor that names
//! the last entry returned (its time and id): the next page starts strictly after it, so every
//! entry is returned once across pages, whatever arrives meanwhile (a newer entry sorts before
//! the cursor and is not returned; it is there for the next look from the top). A page stops
//! after examining [`SCAN_BUDGET`] entries, so a filter that matches little costs a bounded
//! amount per request: such a page can hold fewer than `limit` entries while `next` is set.

use std::fmt;

use super::store::{desc, undesc, Key, Kind, ViewStore};
use super::Incident;
use crate::policy::{
    domain_pattern, Alert, BlockState, EventLogEntry, Exemption, MailboxState, Millis,
};
use crate::store::StoreError;

/// Most entries one page request examines.
pub const SCAN_BUDGET: usize = 20_000;

/// The position after which a page starts: the time and id of the last entry returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Time of the entry.
    pub at: Millis,
    /// Id of the entry.
    pub id: String,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.at, self.id)
    }
}

impl Cursor {
    /// From its text, `<at>:<id>`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once(':')?;
        Some(Cursor {
            at: at.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

/// A time range `[from, to)` (either end open) and where in it a page starts.
#[derive(Debug, Clone, Default)]
pub struct TimeRange {
    /// Earliest time included.
    pub from: Option<Millis>,
    /// Earliest time no longer included.
    pub to: Option<Millis>,
    /// Start after this entry.
    pub cursor: Option<Cursor>,
    /// Most entries returned.
    pub limit: usize,
}

/// One page of a list: its entries and where the next page starts (`None`: nothing more).
#[derive(Debug)]
pub struct Page<T> {
    /// The entries, newest first.
    pub items: Vec<T>,
    /// The cursor of the next page.
    pub next: Option<Cursor>,
}

/// A page of entries under `prefix` whose keys go on with `desc(at)` and the entry's id.
/// `accept` decodes an entry from its time, id and value, or skips it (`None`).
fn time_page<T>(
    store: &ViewStore,
    prefix: Vec<u8>,
    range: &TimeRange,
    mut accept: impl FnMut(Millis, &str, &[u8]) -> Result<Option<T>, StoreError>,
) -> Result<Page<T>, StoreError> {
    let mut start = prefix.clone();
    match (&range.cursor, range.to) {
        (Some(c), to) if to.is_none_or(|to| c.at < to) => {
            start.extend_from_slice(&desc(c.at));
            start.extend_from_slice(c.id.as_bytes());
        }
        (_, Some(to)) => start.extend_from_slice(&desc(to.saturating_sub(1))),
        (_, None) => {}
    }
    let mut items = Vec::new();
    let mut last: Option<Cursor> = None;
    let mut next = None;
    let mut examined = 0;
    let mut err = None;
    store.scan(&prefix, Some(&start), |k, v| {
        let (Some(at), Some(Ok(id))) = (undesc(k), k.get(8..).map(std::str::from_utf8)) else {
            return true;
        };
        if range
            .cursor
            .as_ref()
            .is_some_and(|c| c.at == at && c.id == id)
        {
            return true;
        }
        if range.from.is_some_and(|from| at < from) {
            return false;
        }
        if items.len() == range.limit || examined == SCAN_BUDGET {
            // There is more: the next page starts after the last entry looked at.
            next = last.take();
            return false;
        }
        examined += 1;
        last = Some(Cursor {
            at,
            id: id.to_owned(),
        });
        match accept(at, id, v) {
            Ok(Some(t)) => items.push(t),
            Ok(None) => {}
            Err(e) => {
                err = Some(e);
                return false;
            }
        }
        true
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(Page { items, next }),
    }
}

/// Which events of the report.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these kinds (names); empty: every kind.
    pub kinds: Vec<String>,
    /// Only this (lower-cased) mailbox.
    pub mailbox: Option<String>,
}

/// A page of a tenant's events report: each item the JSON the report serves
/// ([`super::report_item`]).
pub fn events(
    store: &ViewStore,
    tenant: &str,
    filter: &EventFilter,
    range: &TimeRange,
) -> Result<Page<Vec<u8>>, StoreError> {
    let prefix = match &filter.mailbox {
        Some(mb) => Key::new(Kind::MailboxEvent).s(tenant).s(mb),
        None => Key::new(Kind::Event).s(tenant),
    };
    time_page(store, prefix.into_bytes(), range, |_, _, v| {
        let kind = ViewStore::event_kind(v).unwrap_or_default();
        if !filter.kinds.is_empty() && !filter.kinds.iter().any(|k| k == kind) {
            return Ok(None);
        }
        ViewStore::item_body(v)
            .map(|b| Some(b.to_vec()))
            .ok_or_else(|| StoreError::Corrupt {
                what: "report item",
                reason: "no kind".into(),
            })
    })
}

/// A page of a tenant's alerts, with the time each was published.
pub fn alerts(
    store: &ViewStore,
    tenant: &str,
    range: &TimeRange,
) -> Result<Page<(Millis, Alert)>, StoreError> {
    let prefix = Key::new(Kind::Alert).s(tenant).into_bytes();
    time_page(store, prefix, range, |at, _, v| {
        store.decode_alert(v).map(|a| Some((at, a)))
    })
}

/// A page of a tenant's incidents (by [`Incident::when`]), optionally only those in `state`.
pub fn incidents(
    store: &ViewStore,
    tenant: &str,
    state: Option<&str>,
    range: &TimeRange,
) -> Result<Page<(String, Incident)>, StoreError> {
    let prefix = Key::new(Kind::TenantIncident).s(tenant).into_bytes();
    time_page(store, prefix, range, |_, id, v| {
        if state.is_some_and(|s| s.as_bytes() != v) {
            return Ok(None);
        }
        Ok(incident(store, id)?.map(|i| (id.to_owned(), i)))
    })
}

/// The decoded state of a stored value (`None`: no value, or one that does not decode — the
/// loader only stores what decoded).
pub fn decode_state(v: Option<&[u8]>) -> Option<MailboxState> {
    v.and_then(|b| MailboxState::decode(b).ok())
}

/// The state of a mailbox.
pub fn state(store: &ViewStore, mailbox: &str) -> Result<Option<MailboxState>, StoreError> {
    Ok(decode_state(
        store.get(&Key::new(Kind::State).s(mailbox))?.as_deref(),
    ))
}

/// An incident by id.
pub fn incident(store: &ViewStore, id: &str) -> Result<Option<Incident>, StoreError> {
    let Some(v) = store.get(&Key::new(Kind::Incident).s(id))? else {
        return Ok(None);
    };
    serde_json::from_slice(&v)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            what: "incident",
            reason: e.to_string(),
        })
}

/// An incident's events, in the order they happened.
pub fn incident_events(store: &ViewStore, id: &str) -> Result<Vec<EventLogEntry>, StoreError> {
    let prefix = Key::new(Kind::IncidentEvent).s(id).into_bytes();
    let mut out = Vec::new();
    let mut err = None;
    store.scan(&prefix, None, |_, v| match store.decode_event(v) {
        Ok(e) => {
            out.push(e);
            true
        }
        Err(e) => {
            err = Some(e);
            false
        }
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.event_id.cmp(&b.event_id)));
    Ok(out)
}

/// Incidents of a mailbox in `tenant`, newest first. A mailbox can change tenants (a directory
/// move): another tenant's incidents are never shown.
pub fn recent_incidents(
    store: &ViewStore,
    mailbox: &str,
    tenant: &str,
) -> Result<Vec<(String, Incident)>, StoreError> {
    let mut out = Vec::new();
    for (id, i) in mailbox_incidents(store, mailbox)? {
        if i.tenant_id == tenant {
            out.push((id, i));
        }
    }
    out.sort_by(|a, b| b.1.when().cmp(&a.1.when()).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

fn mailbox_incidents(
    store: &ViewStore,
    mailbox: &str,
) -> Result<Vec<(String, Incident)>, StoreError> {
    let prefix = Key::new(Kind::Recent).s(mailbox).into_bytes();
    let mut ids = Vec::new();
    store.scan(&prefix, None, |k, _| {
        ids.push(String::from_utf8_lossy(k).into_owned());
        true
    })?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(i) = incident(store, &id)? {
            out.push((id, i));
        }
    }
    Ok(out)
}

/// The tenant a mailbox belongs to, as far as the view knows: its state's, or its newest
/// incident's.
pub fn tenant_of(store: &ViewStore, mailbox: &str) -> Result<Option<String>, StoreError> {
    if let Some(t) = state(store, mailbox)?.and_then(|s| s.tenant_id().map(str::to_owned)) {
        return Ok(Some(t));
    }
    Ok(mailbox_incidents(store, mailbox)?
        .into_iter()
        .max_by_key(|(_, i)| i.when())
        .map(|(_, i)| i.tenant_id))
}

/// A page of the blocked list: mailbox, state, block state at the time asked; the next cursor.
pub type BlockedPage = (Vec<(String, MailboxState, BlockState)>, Option<String>);

/// A page of a tenant's blocked mailboxes after `cursor`, with their state at `now`.
pub fn blocked_page(
    store: &ViewStore,
    tenant: &str,
    filter: Option<BlockState>,
    cursor: Option<&str>,
    limit: usize,
    now: Millis,
) -> Result<BlockedPage, StoreError> {
    let prefix = Key::new(Kind::Blocked).s(tenant).into_bytes();
    let start = cursor.map(|c| {
        Key::new(Kind::Blocked)
            .s(tenant)
            .raw(c.as_bytes())
            .into_bytes()
    });
    let mut names = Vec::new();
    let mut next = None;
    let mut examined = 0;
    let mut err = None;
    store.scan(&prefix, start.as_deref(), |k, _| {
        let Ok(mb) = std::str::from_utf8(k) else {
            return true;
        };
        if Some(mb) == cursor {
            return true;
        }
        let st = match state(store, mb) {
            Ok(Some(s)) => s,
            Ok(None) => return true,
            Err(e) => {
                err = Some(e);
                return false;
            }
        };
        let bs = st.block_state_at(now);
        examined += 1;
        if bs == BlockState::Unblocked || filter.is_some_and(|f| f != bs) {
            if examined >= SCAN_BUDGET {
                next = Some(mb.to_owned());
                return false;
            }
            return true;
        }
        if names.len() == limit {
            next = names
                .last()
                .map(|(m, _, _): &(String, MailboxState, BlockState)| m.clone());
            return false;
        }
        names.push((mb.to_owned(), st, bs));
        true
    })?;
    if let Some(e) = err {
        return Err(e);
    }
    Ok((names, next))
}

/// The tenant's exemptions in force at `now`, by pattern.
pub fn exemptions_of(
    store: &ViewStore,
    tenant: &str,
    now: Millis,
) -> Result<Vec<Exemption>, StoreError> {
    let prefix = Key::new(Kind::Exempt).s(tenant).into_bytes();
    let mut keys = Vec::new();
    store.scan(&prefix, None, |k, _| {
        keys.push(String::from_utf8_lossy(k).into_owned());
        true
    })?;
    let mut out = Vec::new();
    for k in keys {
        if let Some(e) = state(store, &k)?.and_then(|s| s.exemption_of(tenant).cloned()) {
            if e.in_force(tenant, now) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// The exemption in force at `now` that a trip of `mailbox` in `tenant` would meet: its own, else
/// its domain's (as the pipeline matches, SPEC §1.11 and §4).
pub fn exemption_for(
    store: &ViewStore,
    tenant: &str,
    mailbox: &str,
    now: Millis,
) -> Result<Option<Exemption>, StoreError> {
    let of = |key: &str| -> Result<Option<Exemption>, StoreError> {
        Ok(state(store, key)?
            .and_then(|s| s.exemption_of(tenant).cloned())
            .filter(|e| e.in_force(tenant, now)))
    };
    if let Some(e) = of(mailbox)? {
        return Ok(Some(e));
    }
    match domain_pattern(mailbox) {
        Some(d) => of(&d),
        None => Ok(None),
    }
}
