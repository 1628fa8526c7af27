//! The queryable view: every instance reads the whole of mailguard's own topics — the state
//! changelog (current state of every mailbox), the blocks topic (evidence of each incident), the
//! events topic (the incident timelines and command outcomes), the commands topic and the tenant
//! settings — into memory, so any instance answers for any mailbox, whichever instance owns its
//! partition (docs/DESIGN.md §8 says why this and not routing to the owner).
//!
//! The reader is a plain `assign()` consumer (`read_committed`, never committing, group id from
//! [`client::reader_group`]): it sees exactly what the pipeline committed, a few milliseconds after
//! the commit. Rebalances of the pipeline's group do not touch it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::codec::Codec;
use crate::config::Config;
use crate::kafka::{admin, client, KafkaError};
use crate::policy::{
    BlockState, Command, Effect, EventLogEntry, MailboxState, Millis, TenantSettings,
};

/// How many incidents the view keeps per mailbox (newest first); older ones are dropped from
/// memory (the events topic still has them).
pub const INCIDENTS_PER_MAILBOX: usize = 20;

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

/// The data of the view (behind one lock: updates are applied per polled batch).
#[derive(Default)]
pub struct ViewData {
    /// Current state per (lower-cased) mailbox, from the changelog.
    pub mailboxes: HashMap<String, MailboxState>,
    /// Mailboxes whose state holds a block, by tenant, ordered (the paginated list).
    pub blocked: HashMap<String, BTreeSet<String>>,
    /// Incidents by id.
    pub incidents: HashMap<String, Incident>,
    /// Newest-first incident ids per mailbox.
    pub recent: HashMap<String, VecDeque<String>>,
    /// Commands by id (from the commands topic, and those this instance just sent).
    pub commands: HashMap<String, Command>,
    /// Command events (`SUPPORT_UNBLOCK`, `COMMAND_REJECTED`) by event id.
    pub command_events: HashMap<String, EventLogEntry>,
    /// Tenant settings from the tenant table.
    pub tenants: HashMap<String, TenantSettings>,
    /// Every partition of every topic has been read to its end once.
    pub caught_up: bool,
}

/// Shared handle of the view.
pub type SharedView = Arc<RwLock<ViewData>>;

impl ViewData {
    /// The tenant a mailbox belongs to, as far as the view knows.
    pub fn tenant_of(&self, mailbox: &str) -> Option<&str> {
        if let Some(t) = self.mailboxes.get(mailbox).and_then(|s| s.tenant_id()) {
            return Some(t);
        }
        let id = self.recent.get(mailbox)?.front()?;
        self.incidents.get(id).map(|i| i.tenant_id.as_str())
    }

    fn set_state(&mut self, mailbox: &str, state: Option<MailboxState>) {
        let old_tenant = self.tenant_of(mailbox).map(str::to_owned);
        if let Some(t) = old_tenant {
            if let Some(set) = self.blocked.get_mut(&t) {
                set.remove(mailbox);
            }
        }
        match state {
            None => {
                self.mailboxes.remove(mailbox);
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
            }
        }
    }

    fn incident(&mut self, id: &str, mailbox: &str, tenant: &str) -> &mut Incident {
        if !self.incidents.contains_key(id) {
            let recent = self.recent.entry(mailbox.to_owned()).or_default();
            recent.push_front(id.to_owned());
            if recent.len() > INCIDENTS_PER_MAILBOX {
                if let Some(old) = recent.pop_back() {
                    self.incidents.remove(&old);
                }
            }
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

    fn apply_effect(&mut self, effect: Effect) {
        match effect {
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
            }
            Effect::Event(e) => {
                use crate::policy::EventKind as K;
                if matches!(e.kind, K::SupportUnblock | K::CommandRejected) {
                    self.command_events.insert(e.event_id.clone(), e.clone());
                }
                if let Some(id) = e.incident_id.clone() {
                    let inc = self.incident(&id, &e.mailbox, &e.tenant_id);
                    // Redelivered events (same deterministic id) are kept once.
                    if !inc.events.iter().any(|x| x.event_id == e.event_id) {
                        inc.events.push(e);
                    }
                }
            }
            Effect::Scan(_) | Effect::Alert(_) => {}
        }
    }
}

/// Handle of the running view reader.
pub struct ViewReader {
    /// The thread; ends when `stop` is set.
    pub thread: std::thread::JoinHandle<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Changelog,
    Blocks,
    Events,
    Commands,
    Tenants,
}

struct Reader {
    source: Source,
    consumer: BaseConsumer<client::ReaderContext>,
    partitions: usize,
    at_end: HashSet<i32>,
}

/// Start reading every partition of the view's topics from the beginning. One consumer per
/// topic, because librdkafka's end-of-partition event names the partition but not the topic.
pub fn spawn(
    cfg: &Config,
    codec: Codec,
    view: SharedView,
    stop: Arc<AtomicBool>,
) -> Result<ViewReader, KafkaError> {
    let t = &cfg.topics;
    let mut readers = Vec::new();
    for (topic, source, purpose) in [
        (&t.changelog, Source::Changelog, "api-view-changelog"),
        (&t.blocks, Source::Blocks, "api-view-blocks"),
        (&t.events, Source::Events, "api-view-events"),
        (&t.commands, Source::Commands, "api-view-commands"),
        (&t.tenants, Source::Tenants, "api-view-tenants"),
    ] {
        let consumer: BaseConsumer<client::ReaderContext> = client::reader(&cfg.kafka, purpose)
            .create_with_context(client::ReaderContext)
            .map_err(KafkaError::Client)?;
        let n = admin::partition_count(&consumer, topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(KafkaError::Client)?;
        }
        consumer.assign(&tpl).map_err(KafkaError::Client)?;
        readers.push(Reader {
            source,
            consumer,
            partitions: n as usize,
            at_end: HashSet::new(),
        });
    }
    let thread = std::thread::Builder::new()
        .name("mailguard-api-view".into())
        .spawn(move || run(readers, codec, view, stop))
        .expect("spawn view thread");
    Ok(ViewReader { thread })
}

enum Update {
    State(String, Option<MailboxState>),
    Effect(Effect),
    Command(Command),
    Tenant(String, Option<TenantSettings>),
}

fn run(mut readers: Vec<Reader>, codec: Codec, view: SharedView, stop: Arc<AtomicBool>) {
    let mut updates = Vec::with_capacity(1024);
    let mut caught_up = false;
    while !stop.load(Ordering::Relaxed) {
        for r in readers.iter_mut() {
            poll_reader(r, &codec, &mut updates);
        }
        if updates.is_empty() {
            // Idle. librdkafka cannot wait on five consumers at once (short of forwarding their
            // queues), so the loop naps: 5 ms bounds what this adds to the view's staleness, at
            // 200 cheap wake-ups a second.
            std::thread::sleep(Duration::from_millis(5));
        }
        if !updates.is_empty() {
            // One burst of already-fetched records per lock: queries wait at most one burst.
            let mut v = view.write().expect("view lock");
            for u in updates.drain(..) {
                match u {
                    Update::State(mb, s) => v.set_state(&mb, s),
                    Update::Effect(e) => v.apply_effect(e),
                    Update::Command(c) => {
                        v.commands.insert(c.command_id.clone(), c);
                    }
                    Update::Tenant(id, Some(t)) => {
                        v.tenants.insert(id, t);
                    }
                    Update::Tenant(id, None) => {
                        v.tenants.remove(&id);
                    }
                }
            }
        }
        if !caught_up && readers.iter().all(|r| r.at_end.len() >= r.partitions) {
            caught_up = true;
            info!("api view caught up");
            view.write().expect("view lock").caught_up = true;
        }
    }
}

/// Take what one reader has fetched (at most 1024 records).
fn poll_reader(r: &mut Reader, codec: &Codec, updates: &mut Vec<Update>) {
    for _ in 0..1024 {
        let msg = match r.consumer.poll(Duration::ZERO) {
            None => return,
            Some(Err(RdError::PartitionEOF(p))) => {
                r.at_end.insert(p);
                continue;
            }
            Some(Err(e)) => {
                warn!(error = %e, "api view consumer error");
                return;
            }
            Some(Ok(m)) => m,
        };
        let key = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned);
        if let Some(u) = decode(r.source, codec, key, msg.payload()) {
            updates.push(u);
        }
    }
}

fn decode(
    source: Source,
    codec: &Codec,
    key: Option<String>,
    payload: Option<&[u8]>,
) -> Option<Update> {
    let result = match (source, payload) {
        (Source::Changelog, None) => return key.map(|k| Update::State(k, None)),
        (Source::Changelog, Some(b)) => MailboxState::decode(b)
            .map(|s| Update::State(key.clone().unwrap_or_default(), Some(s)))
            .map_err(|e| e.to_string()),
        (Source::Tenants, None) => return key.map(|k| Update::Tenant(k, None)),
        (Source::Tenants, Some(b)) => codec
            .decode_tenant(b)
            .map(|(id, t)| Update::Tenant(id, Some(t)))
            .map_err(|e| e.to_string()),
        (Source::Commands, Some(b)) => codec
            .decode_command(b)
            .map(Update::Command)
            .map_err(|e| e.to_string()),
        (Source::Blocks | Source::Events, Some(b)) => codec
            .decode_effect(b)
            .map(Update::Effect)
            .map_err(|e| e.to_string()),
        (_, None) => return None,
    };
    match result {
        Ok(u) => Some(u),
        Err(e) => {
            // The pipeline dead-letters what it cannot read; the view only skips it.
            warn!(error = %e, "api view: record skipped");
            None
        }
    }
}

/// Incidents of a mailbox, newest first.
pub fn recent_incidents<'a>(v: &'a ViewData, mailbox: &str) -> Vec<(&'a str, &'a Incident)> {
    v.recent
        .get(mailbox)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| v.incidents.get(id).map(|i| (id.as_str(), i)))
                .collect()
        })
        .unwrap_or_default()
}

/// A page of a tenant's blocked mailboxes after `cursor`, with their state at `now`.
pub fn blocked_page<'a>(
    v: &'a ViewData,
    tenant: &str,
    filter: Option<BlockState>,
    cursor: Option<&str>,
    limit: usize,
    now: Millis,
) -> (Vec<(&'a str, &'a MailboxState, BlockState)>, Option<String>) {
    let Some(set) = v.blocked.get(tenant) else {
        return (Vec::new(), None);
    };
    let range = match cursor {
        Some(c) => set.range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded)),
        None => set.range::<str, _>(..),
    };
    let mut out = Vec::new();
    for mb in range {
        let Some(s) = v.mailboxes.get(mb) else {
            continue;
        };
        let state = s.block_state_at(now);
        if state == BlockState::Unblocked || filter.is_some_and(|f| f != state) {
            continue;
        }
        if out.len() == limit {
            let next = out
                .last()
                .map(|(m, _, _): &(&str, &MailboxState, BlockState)| m.to_string());
            return (out, next);
        }
        out.push((mb.as_str(), s, state));
    }
    (out, None)
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
}
