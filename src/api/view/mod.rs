//! The queryable view: every instance reads the whole of mailguard's own topics — the state
//! changelog (current state of every mailbox), the blocks topic (evidence of each incident), the
//! events topic (the incident timelines and command outcomes), the commands topic and the tenant
//! settings — into memory, so any instance answers for any mailbox, whichever instance owns its
//! partition (docs/DESIGN.md §8 says why this and not routing to the owner).
//!
//! - this module — the data model and how each record changes it;
//! - [`loader`] — the reader thread that feeds it (`read_committed`, never committing);
//! - [`freshness`] — how far behind its topics the view is (503 beyond a bound);
//! - [`queries`] — what the handlers ask of it.
//!
//! Every map is bounded: mailbox states by the changelog (which forgets idle mailboxes),
//! incidents by [`INCIDENTS_PER_MAILBOX`] per mailbox with state, commands and their outcomes by
//! [`MAX_COMMANDS`].

pub mod freshness;
pub mod loader;
pub mod queries;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::policy::{
    BlockState, Command, Effect, EventKind, EventLogEntry, MailboxState, Millis, TenantSettings,
};

pub use loader::{spawn, ViewReader};
pub use queries::{blocked_page, exemption_for, exemptions_of, recent_incidents};

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
#[derive(Debug, Clone, Default)]
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
    /// Latest block state published for it.
    pub last_state: Option<BlockState>,
    /// The messages that tripped it.
    pub evidence: Vec<String>,
    /// Its events, in the order they were published.
    pub events: Vec<EventLogEntry>,
}

impl Incident {
    /// When it happened, for ordering: `blocked_at`, or before its block record is read (the
    /// topics are read independently) its earliest event.
    pub fn when(&self) -> Millis {
        self.blocked_at
            .or_else(|| self.events.iter().map(|e| e.at).min())
            .unwrap_or(Millis::MAX)
    }
}

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

/// The data of the view (behind one lock: updates are applied per polled batch).
pub struct ViewData {
    /// Current state per (lower-cased) mailbox, from the changelog.
    pub mailboxes: HashMap<String, MailboxState>,
    /// Mailboxes whose state holds a block, by tenant, ordered (the paginated list).
    pub blocked: HashMap<String, BTreeSet<String>>,
    /// Incidents by id.
    pub incidents: HashMap<String, Incident>,
    /// The incident ids of each mailbox (at most [`INCIDENTS_PER_MAILBOX`], unordered).
    pub recent: HashMap<String, Vec<String>>,
    /// Commands by id (from the commands topic, and those this instance just sent).
    pub commands: Bounded<Command>,
    /// Command events (`SUPPORT_UNBLOCK`, `COMMAND_REJECTED`) by event id.
    pub command_events: Bounded<EventLogEntry>,
    /// Tenant settings from the tenant table, checked as the pipeline checks them.
    pub tenants: HashMap<String, TenantSettings>,
    /// The keys whose state holds an exemption of a tenant, by tenant, ordered (the list); the
    /// exemptions themselves are in those states. Bounded by the pipeline's bounds.
    pub exempt: HashMap<String, BTreeSet<String>>,
    /// Every partition of every topic has been read to its end once.
    pub caught_up: bool,
    /// The view holds everything committed before this instant (see [`freshness`]).
    pub fresh_at: Option<Instant>,
}

impl Default for ViewData {
    fn default() -> Self {
        ViewData {
            mailboxes: HashMap::new(),
            blocked: HashMap::new(),
            incidents: HashMap::new(),
            recent: HashMap::new(),
            commands: Bounded::new(MAX_COMMANDS),
            command_events: Bounded::new(MAX_COMMANDS),
            tenants: HashMap::new(),
            exempt: HashMap::new(),
            caught_up: false,
            fresh_at: None,
        }
    }
}

/// Shared handle of the view.
pub type SharedView = Arc<RwLock<ViewData>>;

/// One change the loader read.
pub enum Update {
    /// A mailbox's state (`None`: the changelog forgot it).
    State(String, Option<MailboxState>),
    /// A block or event record.
    Effect(Effect),
    /// A command.
    Command(Command),
    /// A tenant's settings (`None`: tombstone), already checked.
    Tenant(String, Option<TenantSettings>),
}

impl ViewData {
    /// The tenant a mailbox belongs to, as far as the view knows: its state's, or its newest
    /// incident's.
    pub fn tenant_of(&self, mailbox: &str) -> Option<&str> {
        if let Some(t) = self.mailboxes.get(mailbox).and_then(|s| s.tenant_id()) {
            return Some(t);
        }
        self.recent
            .get(mailbox)?
            .iter()
            .filter_map(|id| self.incidents.get(id))
            .max_by_key(|i| i.when())
            .map(|i| i.tenant_id.as_str())
    }

    /// Applies one update.
    pub fn apply(&mut self, u: Update) {
        match u {
            Update::State(mb, s) => self.set_state(&mb, s),
            Update::Effect(e) => self.apply_effect(e),
            Update::Command(c) => self.commands.insert(c.command_id.clone(), c),
            Update::Tenant(id, Some(t)) => {
                self.tenants.insert(id, t);
            }
            Update::Tenant(id, None) => {
                self.tenants.remove(&id);
            }
        }
    }

    fn set_state(&mut self, mailbox: &str, state: Option<MailboxState>) {
        let old_tenant = self.tenant_of(mailbox).map(str::to_owned);
        if let Some(t) = old_tenant {
            if let Some(set) = self.blocked.get_mut(&t) {
                set.remove(mailbox);
                if set.is_empty() {
                    self.blocked.remove(&t);
                }
            }
        }
        if let Some(old) = self.mailboxes.get(mailbox) {
            for e in old.exemptions() {
                if let Some(keys) = self.exempt.get_mut(&e.tenant_id) {
                    keys.remove(mailbox);
                    if keys.is_empty() {
                        self.exempt.remove(&e.tenant_id);
                    }
                }
            }
        }
        if let Some(s) = &state {
            for e in s.exemptions() {
                self.exempt
                    .entry(e.tenant_id.clone())
                    .or_default()
                    .insert(mailbox.to_owned());
            }
        }
        match state {
            None => {
                // Forgotten by the changelog (idle past its TTL): so are its incidents here.
                self.mailboxes.remove(mailbox);
                for id in self.recent.remove(mailbox).unwrap_or_default() {
                    self.incidents.remove(&id);
                }
            }
            Some(s) => {
                if s.block().is_some() {
                    if let Some(t) = s.tenant_id() {
                        self.blocked
                            .entry(t.to_owned())
                            .or_default()
                            .insert(mailbox.to_owned());
                    }
                }
                self.mailboxes.insert(mailbox.to_owned(), s);
                self.evict(mailbox);
            }
        }
    }

    fn incident(&mut self, id: &str, mailbox: &str, tenant: &str) -> &mut Incident {
        if !self.incidents.contains_key(id) {
            self.recent
                .entry(mailbox.to_owned())
                .or_default()
                .push(id.to_owned());
            self.incidents.insert(
                id.to_owned(),
                Incident {
                    mailbox: mailbox.to_owned(),
                    tenant_id: tenant.to_owned(),
                    ..Incident::default()
                },
            );
        }
        self.incidents.get_mut(id).expect("just inserted")
    }

    /// Keeps at most [`INCIDENTS_PER_MAILBOX`] incidents of `mailbox`: the oldest by
    /// [`Incident::when`] go, never the one whose block is in force.
    fn evict(&mut self, mailbox: &str) {
        let in_force = self
            .mailboxes
            .get(mailbox)
            .and_then(MailboxState::incident_id);
        let Some(ids) = self.recent.get_mut(mailbox) else {
            return;
        };
        while ids.len() > INCIDENTS_PER_MAILBOX {
            let oldest = ids
                .iter()
                .enumerate()
                .filter(|(_, id)| in_force.as_deref() != Some(id.as_str()))
                .min_by_key(|(_, id)| self.incidents.get(*id).map_or(Millis::MIN, Incident::when))
                .map(|(i, _)| i);
            let Some(i) = oldest else { break };
            let id = ids.swap_remove(i);
            self.incidents.remove(&id);
        }
    }

    fn apply_effect(&mut self, effect: Effect) {
        let mailbox = match effect {
            Effect::Block(b) => {
                let inc = self.incident(&b.incident_id, &b.mailbox, &b.tenant_id);
                if b.state != BlockState::Unblocked {
                    inc.strike = Some(b.strike);
                    inc.blocked_until = b.blocked_until;
                    inc.permanent = b.state == BlockState::PermanentlyBlocked;
                }
                inc.blocked_at = Some(b.blocked_at);
                inc.last_state = Some(b.state);
                if !b.evidence_message_ids.is_empty() {
                    inc.evidence = b.evidence_message_ids;
                }
                b.mailbox
            }
            Effect::Event(e) => {
                if matches!(
                    e.kind,
                    EventKind::SupportUnblock
                        | EventKind::CommandRejected
                        | EventKind::ExemptionAdded
                        | EventKind::ExemptionRemoved
                ) {
                    self.command_events.insert(e.event_id.clone(), e.clone());
                }
                let Some(id) = e.incident_id.clone() else {
                    return;
                };
                let mailbox = e.mailbox.clone();
                let inc = self.incident(&id, &e.mailbox, &e.tenant_id);
                // Redelivered events (same deterministic id) are kept once.
                if !inc.events.iter().any(|x| x.event_id == e.event_id) {
                    inc.events.push(e);
                }
                mailbox
            }
            Effect::Scan(_) | Effect::Alert(_) | Effect::Exemption(_) => return,
        };
        self.evict(&mailbox);
    }

    /// How far behind its topics the view is at `now` (`None` before it was ever fresh).
    pub fn staleness(&self, now: Instant) -> Option<Duration> {
        self.fresh_at.map(|f| now.saturating_duration_since(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CurrentBlock;

    fn blocked_state(tenant: &str, until: Option<Millis>) -> MailboxState {
        MailboxState {
            strikes: 1,
            block: Some(CurrentBlock {
                strike: 1,
                blocked_at: 1_000,
                blocked_until: until,
                incident_id: uuid::Uuid::nil(),
                evidence_message_ids: vec!["m1".into()],
            }),
            tenant_id: tenant.into(),
            ..MailboxState::default()
        }
    }

    fn exempting(tenants: &[(&str, Option<Millis>)], pattern: &str) -> MailboxState {
        MailboxState {
            exemptions: tenants
                .iter()
                .map(|&(t, expires_at)| crate::policy::Exemption {
                    tenant_id: t.into(),
                    pattern: pattern.into(),
                    reason: "r".into(),
                    actor: "a".into(),
                    actor_role: crate::policy::ActorRole::Admin,
                    command_id: "c".into(),
                    created_at: 0,
                    expires_at,
                })
                .collect(),
            ..MailboxState::default()
        }
    }

    #[test]
    fn exemptions_are_listed_per_tenant_in_force_and_matched_like_the_pipeline() {
        let mut v = ViewData::default();
        v.set_state(
            "*@x.t",
            Some(exempting(&[("t", None), ("u", Some(500))], "*@x.t")),
        );
        v.set_state("a@y.t", Some(exempting(&[("t", Some(2_000))], "a@y.t")));
        let patterns = |v: &ViewData, tenant: &str, now: Millis| {
            exemptions_of(v, tenant, now)
                .into_iter()
                .map(|e| e.pattern.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(patterns(&v, "t", 1_000), ["*@x.t", "a@y.t"]);
        assert_eq!(patterns(&v, "u", 499), ["*@x.t"]);
        assert!(
            patterns(&v, "u", 500).is_empty(),
            "expired at its expires_at"
        );
        assert!(patterns(&v, "w", 0).is_empty());
        let hit = |mb: &str, tenant: &str| {
            exemption_for(&v, tenant, mb, 1_000).map(|e| e.pattern.clone())
        };
        assert_eq!(hit("b@x.t", "t").as_deref(), Some("*@x.t"));
        assert_eq!(hit("b@sub.x.t", "t"), None, "not a subdomain");
        assert_eq!(hit("a@y.t", "t").as_deref(), Some("a@y.t"));
        assert_eq!(hit("a@y.t", "u"), None, "not another tenant's");
        // A state that no longer holds them drops them from the index.
        v.set_state("*@x.t", Some(exempting(&[("u", None)], "*@x.t")));
        v.set_state("a@y.t", None);
        assert!(patterns(&v, "t", 1_000).is_empty());
        assert!(!v.exempt.contains_key("t"), "no empty entries are kept");
        assert_eq!(patterns(&v, "u", 1_000), ["*@x.t"]);
    }

    #[test]
    fn blocked_list_pages_in_order_filters_by_state_and_hides_expired_blocks() {
        let mut v = ViewData::default();
        for (mb, until) in [
            ("a@t", Some(10_000)),
            ("b@t", None),
            ("c@t", Some(10_000)),
            ("d@t", Some(500)), // expired at now = 1 000, expiry not yet committed
            ("e@t", None),
        ] {
            v.set_state(mb, Some(blocked_state("t", until)));
        }
        v.set_state("x@other", Some(blocked_state("other", None)));
        let names = |page: &[(&str, &MailboxState, BlockState)]| {
            page.iter()
                .map(|(m, _, _)| m.to_string())
                .collect::<Vec<_>>()
        };
        let (p1, next) = blocked_page(&v, "t", None, None, 2, 1_000);
        assert_eq!(names(&p1), ["a@t", "b@t"]);
        let (p2, next) = blocked_page(&v, "t", None, next.as_deref(), 2, 1_000);
        assert_eq!(names(&p2), ["c@t", "e@t"]);
        assert_eq!(next, None, "d@t is no longer blocked at now");
        let (perm, _) = blocked_page(
            &v,
            "t",
            Some(BlockState::PermanentlyBlocked),
            None,
            10,
            1_000,
        );
        assert_eq!(names(&perm), ["b@t", "e@t"]);
        // A lifted block leaves the list; a tombstone forgets the mailbox.
        v.set_state(
            "b@t",
            Some(MailboxState {
                tenant_id: "t".into(),
                ..MailboxState::default()
            }),
        );
        v.set_state("e@t", None);
        let (all, _) = blocked_page(&v, "t", None, None, 10, 1_000);
        assert_eq!(names(&all), ["a@t", "c@t"]);
        assert_eq!(v.tenant_of("x@other"), Some("other"));
        assert_eq!(v.tenant_of("e@t"), None);
    }

    fn block(mailbox: &str, tenant: &str, incident: uuid::Uuid, at: Millis) -> Effect {
        Effect::Block(crate::policy::BlockRecord {
            mailbox: mailbox.into(),
            tenant_id: tenant.into(),
            state: BlockState::Blocked,
            strike: 1,
            blocked_at: at,
            blocked_until: Some(at + 3_600_000),
            incident_id: incident.to_string(),
            evidence_message_ids: vec!["m1".into()],
            updated_at: at,
        })
    }

    fn incident_id(n: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(n)
    }

    #[test]
    fn a_mailbox_shows_only_the_incidents_of_the_tenant_asked_about() {
        let mut v = ViewData::default();
        // Tripped under tenant a, then moved to tenant b and tripped there.
        v.apply(Update::Effect(block("m@x", "a", incident_id(1), 1_000)));
        v.apply(Update::Effect(block("m@x", "b", incident_id(2), 9_000)));
        let mut state = blocked_state("b", Some(20_000));
        state.block.as_mut().unwrap().incident_id = incident_id(2);
        v.apply(Update::State("m@x".into(), Some(state)));
        let ids = |t: &str| {
            recent_incidents(&v, "m@x", t)
                .into_iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("b"), [incident_id(2).to_string()]);
        assert_eq!(ids("a"), [incident_id(1).to_string()]);
        assert_eq!(v.tenant_of("m@x"), Some("b"));
    }

    #[test]
    fn incidents_are_evicted_oldest_first_by_blocked_at_but_never_the_block_in_force() {
        let mut v = ViewData::default();
        // The block in force is the oldest incident by blocked_at, and read last (readers of
        // different topics run independently, so arrival order says nothing).
        let in_force = incident_id(999);
        let mut state = blocked_state("t", None);
        state.block.as_mut().unwrap().incident_id = in_force;
        v.apply(Update::State("m@t".into(), Some(state)));
        for n in 0..INCIDENTS_PER_MAILBOX as u128 + 5 {
            v.apply(Update::Effect(block(
                "m@t",
                "t",
                incident_id(n),
                10_000 + n as Millis,
            )));
        }
        v.apply(Update::Effect(block("m@t", "t", in_force, 1)));
        let kept = recent_incidents(&v, "m@t", "t");
        assert_eq!(kept.len(), INCIDENTS_PER_MAILBOX);
        assert_eq!(
            kept.last().unwrap().0,
            in_force.to_string(),
            "in force, oldest, kept"
        );
        assert_eq!(kept.last().unwrap().1.strike, Some(1));
        // Newest first; the oldest others (0..=5) went.
        assert_eq!(
            kept[0].0,
            incident_id(INCIDENTS_PER_MAILBOX as u128 + 4).to_string()
        );
        assert!(kept.iter().all(|(id, _)| *id != incident_id(5).to_string()));
        assert!(kept.iter().any(|(id, _)| *id == incident_id(6).to_string()));
        assert_eq!(
            v.incidents.len(),
            INCIDENTS_PER_MAILBOX,
            "evicted ones are gone"
        );
        // The changelog forgets the mailbox: its incidents go too.
        v.apply(Update::State("m@t".into(), None));
        assert!(v.incidents.is_empty() && v.recent.is_empty() && v.blocked.is_empty());
    }

    #[test]
    fn commands_are_bounded_oldest_first() {
        let mut b = Bounded::new(3);
        for i in 0..5 {
            b.insert(format!("c{i}"), i);
        }
        b.insert("c4".into(), 40); // a replacement is no new entry
        assert_eq!(b.len(), 3);
        assert_eq!(b.get("c1"), None);
        assert_eq!(b.get("c2"), Some(&2));
        assert_eq!(b.get("c4"), Some(&40));
    }
}
