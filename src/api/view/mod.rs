//! The queryable view: every instance reads the whole of mailguard's own topics — the state
//! changelog (current state of every mailbox), the blocks topic (evidence of each incident), the
//! events topic (the incident timelines, command outcomes and the events report), the alerts
//! topic, the commands topic and the tenant settings — so any instance answers for any mailbox,
//! whichever instance owns its partition (docs/DESIGN.md §8 says why this and not routing to the
//! owner).
//!
//! - this module — the data model and how each record changes it;
//! - [`store`] — the local RocksDB the model lives in, laid out for the queries;
//! - [`loader`] — the reader thread that feeds it (`read_committed`, never committing);
//! - [`freshness`] — how far behind its topics the view is (503 beyond a bound);
//! - [`queries`] — what the handlers ask of it.
//!
//! What grows with the history is on disk ([`store`]), with memory bounded by RocksDB's cache
//! whatever the history: mailbox states (bounded by the changelog, which forgets idle
//! mailboxes), incidents ([`INCIDENTS_PER_MAILBOX`] per mailbox with state), the events report
//! and the alerts (both kept for `api.view_retention_ms`). In memory are only the tenant
//! settings and the commands and their outcomes ([`MAX_COMMANDS`]).

pub mod freshness;
pub mod loader;
pub mod queries;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::policy::{
    Alert, BlockRecord, BlockState, Command, Effect, EventKind, EventLogEntry, MailboxState,
    Millis, TenantSettings,
};
use crate::store::StoreError;
use store::{asc, desc, Key, Kind, ViewStore};

pub use loader::{spawn, ViewReader};
pub use queries::{Cursor, Page, TimeRange};

/// How many incidents the view keeps per mailbox; beyond it the oldest by `blocked_at` goes
/// (never the block in force). The events topic still has them.
pub const INCIDENTS_PER_MAILBOX: usize = 20;

/// How many commands (and command outcomes) the view remembers; the oldest go first. A command's
/// status is asked for within minutes of sending it.
pub const MAX_COMMANDS: usize = 100_000;

/// Beyond this the view answers 503 instead of serving stale data: well above one statistics
/// interval (1 s) plus a loaded broker's stall, well below what a person waits for.
pub const MAX_STALENESS: Duration = Duration::from_secs(30);

/// What the view knows of one incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Mailbox.
    pub mailbox: String,
    /// Tenant.
    pub tenant_id: String,
    /// Strike of the block (from the blocks topic; `None` if only events were seen).
    pub strike: Option<u32>,
    /// Largest `sent_at` of the evidence.
    pub blocked_at: Option<Millis>,
    /// End of a timed block.
    pub blocked_until: Option<Millis>,
    /// Whether the block was permanent.
    pub permanent: bool,
    /// Latest block state published for it (`BLOCKED`, `PERMANENTLY_BLOCKED`, `UNBLOCKED`).
    pub last_state: Option<String>,
    /// The messages that tripped it.
    pub evidence: Vec<String>,
    /// Earliest of its events.
    pub first_event_at: Option<Millis>,
    /// A scan was requested for at least one device.
    pub scan_requested: bool,
    /// How its scans ended, the latest word: `REMEDIATED` or `NEEDS_ATTENTION`.
    pub outcome: Option<String>,
    /// A trip: a block record or a trip event was seen (an early warning's id names no trip,
    /// and is not listed among the tenant's incidents).
    #[serde(default)]
    pub tripped: bool,
}

impl Incident {
    /// When it happened, for ordering: `blocked_at`, or before its block record is read (the
    /// topics are read independently) its earliest event.
    pub fn when(&self) -> Millis {
        self.blocked_at
            .or(self.first_event_at)
            .unwrap_or(Millis::MAX)
    }

    /// `OPEN`, `REMEDIATED`, `NEEDS_ATTENTION`, or `NO_SCAN` when no scan was requested.
    pub fn state(&self) -> &str {
        match &self.outcome {
            Some(o) => o,
            None if self.scan_requested => "OPEN",
            None => "NO_SCAN",
        }
    }

    fn tenant_key(&self, id: &str) -> Key {
        Key::new(Kind::TenantIncident)
            .s(&self.tenant_id)
            .raw(&desc(self.when()))
            .raw(id.as_bytes())
    }
}

/// An event as the events report serves it (`Event` of docs/openapi.json).
pub fn report_item(e: &EventLogEntry) -> serde_json::Value {
    serde_json::json!({
        "event_id": e.event_id,
        "kind": e.kind.as_str(),
        "at": e.at,
        "mailbox": e.mailbox,
        "incident_id": e.incident_id,
        "detail": e.detail,
        "reason": e.reason.map(|r| r.as_str()),
        // A trip's facts (live trips and SHADOW_TRIP), so live and shadow compare from the
        // events alone.
        "trip": e.trip.as_ref().map(|t| serde_json::json!({
            "strike": t.strike,
            "first_sent_at": t.first_sent_at,
            "blocked_at": t.blocked_at,
            "block_ms": t.block_ms,
            "blocked_until": t.blocked_until,
            "exempt": t.exempt,
        })),
    })
}

/// A trip's facts as the events report serves them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportTrip {
    /// Strike applied (or that would have been).
    pub strike: u32,
    /// The first offending message of the tripping run.
    pub first_sent_at: Millis,
    /// The trip's `blocked_at`.
    pub blocked_at: Millis,
    /// An exemption was in force: nothing would have been blocked.
    pub exempt: bool,
}

/// An item of the events report read back (for the CSV export).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportItem {
    /// Deterministic id.
    pub event_id: String,
    /// Kind name.
    pub kind: String,
    /// When (processor time).
    pub at: Millis,
    /// Mailbox.
    pub mailbox: String,
    /// Incident, if any.
    pub incident_id: Option<String>,
    /// Detail.
    pub detail: String,
    /// `COMMAND_REJECTED`'s reason code.
    pub reason: Option<String>,
    /// A trip's facts.
    #[serde(default)]
    pub trip: Option<ReportTrip>,
}

/// The incident states a list can be filtered by.
pub const INCIDENT_STATES: [&str; 4] = ["OPEN", "REMEDIATED", "NEEDS_ATTENTION", "NO_SCAN"];

/// A map that keeps its newest `cap` entries (by first insertion).
#[derive(Debug)]
pub struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    /// Empty, holding at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Insert or replace; the oldest entry goes when full.
    pub fn insert(&mut self, key: String, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }

    /// The entry of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What the view keeps in memory (behind one lock; small and bounded).
pub struct ViewData {
    /// Commands by id (from the commands topic, and those this instance just sent).
    pub commands: Bounded<Command>,
    /// Command events (`SUPPORT_UNBLOCK`, `COMMAND_REJECTED`, exemption changes) by event id.
    pub command_events: Bounded<EventLogEntry>,
    /// Tenant settings from the tenant table, checked as the pipeline checks them.
    pub tenants: HashMap<String, TenantSettings>,
    /// Every partition of every topic has been read to its end once.
    pub caught_up: bool,
    /// The view holds everything committed before this instant (see [`freshness`]).
    pub fresh_at: Option<Instant>,
    /// A write to the store failed: the view misses what it read, so it answers no more (until
    /// a restart rebuilds it).
    pub store_failed: bool,
}

impl Default for ViewData {
    fn default() -> Self {
        ViewData {
            commands: Bounded::new(MAX_COMMANDS),
            command_events: Bounded::new(MAX_COMMANDS),
            tenants: HashMap::new(),
            caught_up: false,
            fresh_at: None,
            store_failed: false,
        }
    }
}

impl ViewData {
    /// How far behind its topics the view is at `now` (`None` before it was ever fresh).
    pub fn staleness(&self, now: Instant) -> Option<Duration> {
        self.fresh_at.map(|f| now.saturating_duration_since(f))
    }
}

/// The view: the small part in memory, the rest in its store.
pub struct View {
    /// In memory.
    pub data: RwLock<ViewData>,
    /// On disk.
    pub store: ViewStore,
    /// Events and alerts older than this (processor time) leave the view.
    pub retention_ms: Millis,
}

/// Shared handle of the view.
pub type SharedView = Arc<View>;

/// One change the loader read.
pub enum Update {
    /// A mailbox's state (`None`: the changelog forgot it).
    State(String, Option<MailboxState>),
    /// A block, event or alert record, with its record's timestamp (an alert's time).
    Effect(Effect, Millis),
    /// A command.
    Command(Command),
    /// A tenant's settings (`None`: tombstone), already checked.
    Tenant(String, Option<TenantSettings>),
}

fn is_command_event(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::SupportUnblock
            | EventKind::CommandRejected
            | EventKind::ExemptionAdded
            | EventKind::ExemptionRemoved
    )
}

impl View {
    /// A view in `store`, keeping events and alerts for `retention_ms`.
    pub fn new(store: ViewStore, retention_ms: Millis) -> View {
        View {
            data: RwLock::new(ViewData::default()),
            store,
            retention_ms,
        }
    }

    /// Applies updates in order: what lives on disk first, then what lives in memory under
    /// one short write lock.
    pub fn apply(&self, updates: Vec<Update>) -> Result<(), StoreError> {
        let mut memory = Vec::new();
        for u in updates {
            match u {
                Update::State(mb, s) => self.set_state(&mb, s)?,
                Update::Effect(e, at) => {
                    if let Effect::Event(ev) = &e {
                        if is_command_event(ev.kind) {
                            memory.push(Update::Effect(e.clone(), at));
                        }
                    }
                    self.apply_effect(e, at)?;
                }
                other => memory.push(other),
            }
        }
        if memory.is_empty() {
            return Ok(());
        }
        let mut v = self.data.write().expect("view lock");
        for u in memory {
            match u {
                Update::Command(c) => v.commands.insert(c.command_id.clone(), c),
                Update::Tenant(id, Some(t)) => {
                    v.tenants.insert(id, t);
                }
                Update::Tenant(id, None) => {
                    v.tenants.remove(&id);
                }
                Update::Effect(Effect::Event(e), _) => {
                    v.command_events.insert(e.event_id.clone(), e);
                }
                Update::State(..) | Update::Effect(..) => {}
            }
        }
        Ok(())
    }

    /// A state replaces the one before; only a tombstone (rare: the changelog forgot an idle
    /// mailbox) scans anything.
    fn set_state(&self, mailbox: &str, state: Option<MailboxState>) -> Result<(), StoreError> {
        let s = &self.store;
        let key = Key::new(Kind::State).s(mailbox);
        let old = queries::decode_state(s.get(&key)?.as_deref());
        let mut b = WriteBatch::default();
        if let Some(old) = &old {
            if let (Some(t), Some(_)) = (old.tenant_id(), old.block()) {
                b.delete(Key::new(Kind::Blocked).s(t).raw(mailbox.as_bytes()).bytes());
            }
            for e in old.exemptions() {
                b.delete(
                    Key::new(Kind::Exempt)
                        .s(&e.tenant_id)
                        .raw(mailbox.as_bytes())
                        .bytes(),
                );
            }
        }
        match &state {
            None => {
                // Forgotten by the changelog (idle past its TTL): so are its incidents here.
                b.delete(key.bytes());
                for id in self.incidents_of(mailbox)? {
                    self.delete_incident(&mut b, mailbox, &id)?;
                }
            }
            Some(st) => {
                b.put(key.bytes(), st.to_bytes());
                if let (Some(t), Some(_)) = (st.tenant_id(), st.block()) {
                    b.put(
                        Key::new(Kind::Blocked).s(t).raw(mailbox.as_bytes()).bytes(),
                        [],
                    );
                }
                for e in st.exemptions() {
                    b.put(
                        Key::new(Kind::Exempt)
                            .s(&e.tenant_id)
                            .raw(mailbox.as_bytes())
                            .bytes(),
                        [],
                    );
                }
            }
        }
        s.write(b)
    }

    /// The incident ids of a mailbox (unordered).
    fn incidents_of(&self, mailbox: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let prefix = Key::new(Kind::Recent).s(mailbox).into_bytes();
        self.store.scan(&prefix, None, |k, _| {
            ids.push(String::from_utf8_lossy(k).into_owned());
            true
        })?;
        Ok(ids)
    }

    fn delete_incident(
        &self,
        b: &mut WriteBatch,
        mailbox: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        if let Some(i) = queries::incident(&self.store, id)? {
            b.delete(i.tenant_key(id).bytes());
        }
        b.delete(Key::new(Kind::Incident).s(id).bytes());
        b.delete(Key::new(Kind::Recent).s(mailbox).raw(id.as_bytes()).bytes());
        let events = Key::new(Kind::IncidentEvent).s(id).into_bytes();
        if let Some(end) = store::prefix_end(&events) {
            b.delete_range(&events, &end);
        }
        Ok(())
    }

    /// Keeps at most [`INCIDENTS_PER_MAILBOX`] incidents of `mailbox`: the oldest by
    /// [`Incident::when`] go, never the one whose block is in force.
    fn evict(&self, mailbox: &str) -> Result<(), StoreError> {
        let ids = self.incidents_of(mailbox)?;
        if ids.len() <= INCIDENTS_PER_MAILBOX {
            return Ok(());
        }
        let in_force = queries::state(&self.store, mailbox)?.and_then(|s| s.incident_id());
        let mut by_age = Vec::with_capacity(ids.len());
        let mut kept = 0;
        for id in ids {
            if in_force.as_deref() == Some(id.as_str()) {
                kept = 1;
                continue;
            }
            let when = queries::incident(&self.store, &id)?.map_or(Millis::MIN, |i| i.when());
            by_age.push((when, id));
        }
        by_age.sort();
        let excess = (by_age.len() + kept).saturating_sub(INCIDENTS_PER_MAILBOX);
        let mut b = WriteBatch::default();
        for (_, id) in by_age.iter().take(excess) {
            self.delete_incident(&mut b, mailbox, id)?;
        }
        self.store.write(b)
    }

    /// Reads, changes and writes back an incident (created on first sight), moving its entry
    /// in the tenant's list when its time or state changed.
    fn update_incident(
        &self,
        id: &str,
        mailbox: &str,
        tenant: &str,
        b: &mut WriteBatch,
        change: impl FnOnce(&mut Incident),
    ) -> Result<bool, StoreError> {
        let old = queries::incident(&self.store, id)?;
        let mut inc = old.clone().unwrap_or_else(|| Incident {
            mailbox: mailbox.to_owned(),
            tenant_id: tenant.to_owned(),
            ..Incident::default()
        });
        change(&mut inc);
        match &old {
            None => b.put(
                Key::new(Kind::Recent).s(mailbox).raw(id.as_bytes()).bytes(),
                [],
            ),
            Some(o) if o.tripped && (o.when() != inc.when() || o.state() != inc.state()) => {
                b.delete(o.tenant_key(id).bytes())
            }
            Some(_) => {}
        }
        if inc.tripped {
            b.put(inc.tenant_key(id).bytes(), inc.state().as_bytes());
        }
        let head = serde_json::to_vec(&inc).map_err(|e| StoreError::Corrupt {
            what: "incident",
            reason: e.to_string(),
        })?;
        b.put(Key::new(Kind::Incident).s(id).bytes(), head);
        Ok(old.is_none())
    }

    fn apply_effect(&self, effect: Effect, at: Millis) -> Result<(), StoreError> {
        let mut b = WriteBatch::default();
        // Only a new incident can take a mailbox past its bound.
        let added = match &effect {
            Effect::Block(r) => self.apply_block(r, &mut b)?.then_some(&r.mailbox),
            Effect::Event(e) => self.apply_event(e, &mut b)?.then_some(&e.mailbox),
            Effect::Alert(a) => {
                self.apply_alert(a, at, &mut b)?;
                None
            }
            Effect::Scan(_) | Effect::Exemption(_) => None,
        };
        self.store.write(b)?;
        match added {
            Some(mailbox) => self.evict(mailbox),
            None => Ok(()),
        }
    }

    /// Whether the block's incident is new.
    fn apply_block(&self, r: &BlockRecord, b: &mut WriteBatch) -> Result<bool, StoreError> {
        self.update_incident(&r.incident_id, &r.mailbox, &r.tenant_id, b, |inc| {
            if r.state != BlockState::Unblocked {
                inc.strike = Some(r.strike);
                inc.blocked_until = r.blocked_until;
                inc.permanent = r.state == BlockState::PermanentlyBlocked;
            }
            inc.blocked_at = Some(r.blocked_at);
            inc.tripped = true;
            inc.last_state = Some(r.state.as_str().to_owned());
            if !r.evidence_message_ids.is_empty() {
                inc.evidence = r.evidence_message_ids.clone();
            }
        })
    }

    /// Whether the event's incident is new.
    fn apply_event(&self, e: &EventLogEntry, b: &mut WriteBatch) -> Result<bool, StoreError> {
        // The events report holds each event as the JSON item it is served as, so a page is
        // copied out, not decoded and encoded again (PERFORMANCE.md, "The view at scale").
        let item = store::with_kind(e.kind.as_str(), report_item(e).to_string().as_bytes());
        // The events report (by tenant, and by tenant and mailbox), and when it leaves it.
        // Redelivered events (same deterministic id and time) land on the same keys.
        let by_tenant = Key::new(Kind::Event)
            .s(&e.tenant_id)
            .raw(&desc(e.at))
            .raw(e.event_id.as_bytes());
        let by_mailbox = Key::new(Kind::MailboxEvent)
            .s(&e.tenant_id)
            .s(&e.mailbox)
            .raw(&desc(e.at))
            .raw(e.event_id.as_bytes());
        b.put(by_tenant.bytes(), &item);
        b.put(by_mailbox.bytes(), &item);
        let expiry = Key::new(Kind::Expiry)
            .raw(&asc(e.at))
            .raw(by_tenant.bytes());
        b.put(expiry.bytes(), by_mailbox.bytes());
        let Some(id) = &e.incident_id else {
            return Ok(false);
        };
        b.put(
            Key::new(Kind::IncidentEvent)
                .s(id)
                .raw(e.event_id.as_bytes())
                .bytes(),
            self.store.encode_event(e)?,
        );
        self.update_incident(id, &e.mailbox, &e.tenant_id, b, |inc| {
            inc.first_event_at = Some(inc.first_event_at.map_or(e.at, |t| t.min(e.at)));
            match e.kind {
                EventKind::MailboxBlocked
                | EventKind::MailboxPermanentlyBlocked
                | EventKind::TripSimulated
                | EventKind::TripExempted => inc.tripped = true,
                EventKind::ScanRequested => inc.scan_requested = true,
                EventKind::IncidentRemediated => inc.outcome = Some("REMEDIATED".into()),
                EventKind::IncidentNeedsAttention => inc.outcome = Some("NEEDS_ATTENTION".into()),
                _ => {}
            }
        })
    }

    fn apply_alert(&self, a: &Alert, at: Millis, b: &mut WriteBatch) -> Result<(), StoreError> {
        let key = Key::new(Kind::Alert)
            .s(&a.tenant_id)
            .raw(&desc(at))
            .raw(a.alert_id.as_bytes());
        b.put(key.bytes(), self.store.encode_alert(a)?);
        b.put(
            Key::new(Kind::Expiry)
                .raw(&asc(at))
                .raw(key.bytes())
                .bytes(),
            [],
        );
        Ok(())
    }

    /// Deletes at most `budget` events and alerts older than `cutoff`, oldest first; how many.
    pub fn expire(&self, cutoff: Millis, budget: usize) -> Result<usize, StoreError> {
        let mut b = WriteBatch::default();
        let mut n = 0;
        let prefix = [Kind::Expiry as u8];
        self.store.scan(&prefix, None, |k, v| {
            if n == budget || store::unasc(k).is_none_or(|at| at >= cutoff) {
                return false;
            }
            let mut full = prefix.to_vec();
            full.extend_from_slice(k);
            b.delete(&full);
            b.delete(&k[8..]);
            if !v.is_empty() {
                b.delete(v);
            }
            n += 1;
            true
        })?;
        self.store.write(b)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
