//! The backtest proper: every policy's core ([`crate::policy::step`]) over one stream of
//! verdicts, and the tallies the report is made of. Pure: the caller brings the verdicts and
//! the clock.
//!
//! One map holds, per active mailbox, one [`MailboxState`] per policy (one lookup per offending
//! verdict, whatever the number of policies). A state is dropped as soon as every policy's is
//! forgettable ([`MailboxState::is_forgettable`], the changelog's rule: exact, it changes no
//! future trip), and a sweep every quarter of the smallest idle TTL drops those that became
//! forgettable by the passage of time. Memory is therefore bounded by the mailboxes active
//! within the idle TTL, plus those with strikes (kept, as the pipeline keeps them), plus one
//! name per blocked mailbox per tenant and policy (the report names them).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::codec::VerdictRef;
use crate::policy::{
    step, Directory, Exemption, Input, MailboxState, Millis, Outcome, Owner, Policy,
    PolicyOverrides, TenantMode, TenantSettings, Verdict,
};

/// One hour, in ms (the trips-per-hour buckets).
pub const HOUR_MS: Millis = 3_600_000;

/// Per-tenant overrides of a policy file: the fields of `TenantSettings`' overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverrides {
    /// Offending messages that trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Window span in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<Millis>,
    /// Duration of the first block in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_block_ms: Option<Millis>,
    /// The strike that blocks permanently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permanent_strike: Option<u32>,
    /// Offending messages that raise an early warning (no effect on trips).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn_threshold: Option<u32>,
}

impl From<&TenantOverrides> for PolicyOverrides {
    fn from(o: &TenantOverrides) -> Self {
        PolicyOverrides {
            threshold: o.threshold,
            window_ms: o.window_ms,
            base_block_ms: o.base_block_ms,
            permanent_strike: o.permanent_strike,
            warn_threshold: o.warn_threshold,
        }
    }
}

/// One policy to evaluate: a name, the `[policy]` numbers and per-tenant overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    /// Name in the report (`live`, or the candidate file's).
    pub name: String,
    /// The global numbers.
    pub policy: Policy,
    /// Overrides by tenant id.
    pub tenants: BTreeMap<String, TenantOverrides>,
}

/// The directory a backtest sees: every tenant `ENFORCE`, with the policy's overrides; no
/// owners, devices or exemptions (trips never depend on them: they only shape the records).
struct Dir<'a> {
    overrides: &'a BTreeMap<String, PolicyOverrides>,
}

impl Directory for Dir<'_> {
    fn owner(&self, _mailbox: &str) -> Option<Owner> {
        None
    }
    fn devices(&self, _owner_id: &str) -> Option<Vec<String>> {
        None
    }
    fn tenant(&self, tenant_id: &str) -> TenantSettings {
        TenantSettings {
            sync_security_enabled: false,
            endpoint_licence: false,
            overrides: self.overrides.get(tenant_id).cloned().unwrap_or_default(),
            mode: TenantMode::Enforce,
            // A backtest runs each policy as the live one; no shadow beside it.
            shadow: None,
        }
    }
    fn exemption(&self, _tenant_id: &str, _pattern: &str) -> Option<Exemption> {
        None
    }
}

/// One trip of one policy, as the backtest saw it (also what `--trips` writes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trip<'a> {
    /// Name of the policy.
    pub policy: &'a str,
    /// Mailbox, lower-cased.
    pub mailbox: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Strike of the block.
    pub strike: u32,
    /// Whether it is permanent.
    pub permanent: bool,
    /// Largest `sent_at` of the evidence.
    pub blocked_at: Millis,
    /// End of a timed block.
    pub blocked_until: Option<Millis>,
    /// The incident id the pipeline gives this block (f(mailbox, strike, blocked_at)).
    pub incident_id: String,
    /// Earliest `sent_at` counted since the mailbox's last block (or since it was new).
    pub first_offending_at: Millis,
    /// The backtest's clock at the trip.
    pub at: Millis,
}

/// What one policy did for one tenant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    pub(crate) trips: u64,
    pub(crate) permanent: u64,
    /// Trips by strike.
    pub(crate) strikes: BTreeMap<u32, u64>,
    /// Time from first offending message to block, seconds → trips.
    pub(crate) time_to_block: BTreeMap<i64, u64>,
    /// Mailboxes blocked at least once.
    pub(crate) blocked: BTreeSet<Box<str>>,
}

impl Tally {
    pub(crate) fn merge(&mut self, o: &Tally) {
        self.trips += o.trips;
        self.permanent += o.permanent;
        for (k, v) in &o.strikes {
            *self.strikes.entry(*k).or_default() += v;
        }
        for (k, v) in &o.time_to_block {
            *self.time_to_block.entry(*k).or_default() += v;
        }
        self.blocked.extend(o.blocked.iter().cloned());
    }
}

/// Counters of the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Verdicts stepped.
    pub verdicts: u64,
    /// Of which SPAM or VIRUS.
    pub offending: u64,
    /// Smallest and largest `sent_at` seen.
    pub sent_range: Option<(Millis, Millis)>,
    /// Largest number of mailbox states held at once.
    pub peak_active: u64,
}

/// What is called with every trip.
type TripSink = Box<dyn FnMut(&Trip<'_>)>;

/// The mailbox states of one mailbox, one per policy, and each policy's first counted
/// `sent_at` since its last trip.
struct Slot {
    states: Box<[MailboxState]>,
    first: Box<[Option<Millis>]>,
}

/// A backtest in progress.
pub struct Backtest {
    sets: Vec<PolicySet>,
    overrides: Vec<BTreeMap<String, PolicyOverrides>>,
    states: HashMap<Box<str>, Slot>,
    pub(crate) tallies: HashMap<Box<str>, Vec<Tally>>,
    /// Hour start → trips per policy.
    pub(crate) hours: BTreeMap<Millis, Vec<u64>>,
    now: Millis,
    sweep_every: Millis,
    next_sweep: Millis,
    counts: Counts,
    on_trip: Option<TripSink>,
}

impl Backtest {
    /// A backtest of `sets` (at least one; names distinct).
    pub fn new(sets: Vec<PolicySet>) -> Self {
        let overrides = sets
            .iter()
            .map(|s| {
                s.tenants
                    .iter()
                    .map(|(t, o)| (t.clone(), PolicyOverrides::from(o)))
                    .collect()
            })
            .collect();
        let ttl = sets
            .iter()
            .map(|s| s.policy.state_idle_ttl_ms)
            .min()
            .unwrap_or(HOUR_MS);
        Backtest {
            sets,
            overrides,
            states: HashMap::new(),
            tallies: HashMap::new(),
            hours: BTreeMap::new(),
            now: Millis::MIN,
            sweep_every: (ttl / 4).max(1),
            next_sweep: Millis::MIN,
            counts: Counts::default(),
            on_trip: None,
        }
    }

    /// Calls `f` with every trip, as it happens.
    pub fn on_trip(&mut self, f: impl FnMut(&Trip<'_>) + 'static) {
        self.on_trip = Some(Box::new(f));
    }

    /// The policies.
    pub fn sets(&self) -> &[PolicySet] {
        &self.sets
    }

    /// The input counters so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Mailbox states held now.
    pub fn active(&self) -> usize {
        self.states.len()
    }

    /// The backtest's clock (largest `clock` given so far).
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Steps one verdict through every policy at `clock` (processor time: the record's
    /// timestamp for a topic, its `sent_at` for a file; the backtest's clock never goes back).
    /// A CLEAN verdict changes no trip (rule 2: it only ends a block that the next offending
    /// verdict would end as well), so it is only counted.
    pub fn verdict(&mut self, v: &VerdictRef<'_>, clock: Millis) {
        self.now = self.now.max(clock);
        let now = self.now;
        self.counts.verdicts += 1;
        let r = self.counts.sent_range.get_or_insert((v.sent_at, v.sent_at));
        *r = (r.0.min(v.sent_at), r.1.max(v.sent_at));
        if now >= self.next_sweep {
            self.sweep();
        }
        if !v.verdict.is_offending() {
            return;
        }
        self.counts.offending += 1;
        let mailbox = lower(v.mailbox);
        if !self.states.contains_key(&*mailbox) {
            let n = self.sets.len();
            let slot = Slot {
                states: vec![MailboxState::default(); n].into(),
                first: vec![None; n].into(),
            };
            self.states.insert(Box::from(&*mailbox), slot);
            self.counts.peak_active = self.counts.peak_active.max(self.states.len() as u64);
        }
        let input = Input::Verdict(Verdict {
            message_id: v.message_id.to_owned(),
            tenant_id: v.tenant_id.to_owned(),
            mailbox: mailbox.into_owned(),
            sent_at: v.sent_at,
            verdict: v.verdict,
        });
        let Input::Verdict(verdict) = &input else {
            unreachable!()
        };
        let Backtest {
            sets,
            overrides,
            states,
            tallies,
            hours,
            on_trip,
            ..
        } = self;
        let slot = states
            .get_mut(verdict.mailbox.as_str())
            .expect("inserted above");
        let mut forgettable = true;
        for (i, set) in sets.iter().enumerate() {
            let state = &mut slot.states[i];
            if state.is_forgettable(now, &set.policy) {
                slot.first[i] = None;
            }
            let dir = Dir {
                overrides: &overrides[i],
            };
            let r = step(state, &input, now, &dir, &set.policy);
            for o in &r.outcomes {
                match *o {
                    Outcome::Counted => {
                        let f = slot.first[i].get_or_insert(verdict.sent_at);
                        *f = (*f).min(verdict.sent_at);
                    }
                    Outcome::Tripped { strike, permanent } => {
                        let block = state.block().expect("a trip leaves a block");
                        let first = slot.first[i]
                            .take()
                            .map_or(verdict.sent_at, |f| f.min(verdict.sent_at));
                        let trip = Trip {
                            policy: &set.name,
                            mailbox: &verdict.mailbox,
                            tenant_id: &verdict.tenant_id,
                            strike,
                            permanent,
                            blocked_at: block.blocked_at,
                            blocked_until: block.blocked_until,
                            incident_id: block.incident_id.to_string(),
                            first_offending_at: first,
                            at: now,
                        };
                        record(tallies, hours, sets.len(), i, &trip);
                        if let Some(f) = on_trip {
                            f(&trip);
                        }
                    }
                    _ => {}
                }
            }
            forgettable &= state.is_forgettable(now, &set.policy);
        }
        if forgettable {
            states.remove(verdict.mailbox.as_str());
        }
    }

    /// Drops every state that every policy may forget at the current clock.
    fn sweep(&mut self) {
        let (now, sets) = (self.now, &self.sets);
        self.states.retain(|_, slot| {
            !slot
                .states
                .iter()
                .zip(sets)
                .all(|(s, set)| s.is_forgettable(now, &set.policy))
        });
        self.next_sweep = now.saturating_add(self.sweep_every);
    }
}

/// The mailbox lower-cased, borrowed when it is already (the common case).
fn lower(m: &str) -> Cow<'_, str> {
    if m.is_ascii() && !m.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(m)
    } else {
        Cow::Owned(crate::policy::Mailbox::new(m).into_string())
    }
}

fn record(
    tallies: &mut HashMap<Box<str>, Vec<Tally>>,
    hours: &mut BTreeMap<Millis, Vec<u64>>,
    n: usize,
    i: usize,
    trip: &Trip<'_>,
) {
    if !tallies.contains_key(trip.tenant_id) {
        tallies.insert(Box::from(trip.tenant_id), vec![Tally::default(); n]);
    }
    let t = &mut tallies.get_mut(trip.tenant_id).expect("inserted")[i];
    t.trips += 1;
    t.permanent += u64::from(trip.permanent);
    *t.strikes.entry(trip.strike).or_default() += 1;
    let secs = trip
        .blocked_at
        .saturating_sub(trip.first_offending_at)
        .max(0)
        / 1000;
    *t.time_to_block.entry(secs).or_default() += 1;
    if !t.blocked.contains(trip.mailbox) {
        t.blocked.insert(Box::from(trip.mailbox));
    }
    let hour = trip.blocked_at.div_euclid(HOUR_MS) * HOUR_MS;
    hours.entry(hour).or_insert_with(|| vec![0; n])[i] += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::VerdictKind;

    fn v<'a>(id: &'a str, mailbox: &'a str, tenant: &'a str, at: Millis) -> VerdictRef<'a> {
        VerdictRef {
            message_id: id,
            tenant_id: tenant,
            mailbox,
            sent_at: at,
            verdict: VerdictKind::Spam,
        }
    }

    fn sets() -> Vec<PolicySet> {
        let strict = Policy {
            threshold: 3,
            ..Policy::default()
        };
        vec![
            PolicySet {
                name: "live".into(),
                policy: Policy::default(),
                tenants: BTreeMap::new(),
            },
            PolicySet {
                name: "strict".into(),
                policy: strict,
                tenants: [(
                    "lenient".to_string(),
                    TenantOverrides {
                        threshold: Some(10),
                        ..TenantOverrides::default()
                    },
                )]
                .into(),
            },
        ]
    }

    #[test]
    fn each_policy_trips_on_its_own_threshold_and_tenant_overrides() {
        let mut b = Backtest::new(sets());
        let t0 = 1_700_000_000_000;
        let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let at = t0 + i as Millis * 1000;
            b.verdict(&v(id, "A@x.com", "t", at), at);
            b.verdict(&v(id, "b@x.com", "lenient", at), at);
        }
        let t = &b.tallies["t"];
        assert_eq!((t[0].trips, t[1].trips), (1, 1));
        // Strict tripped at the third message: 2 s after the first.
        assert_eq!(t[1].time_to_block.keys().collect::<Vec<_>>(), [&2]);
        assert_eq!(t[0].time_to_block.keys().collect::<Vec<_>>(), [&4]);
        assert!(t[0].blocked.contains("a@x.com"));
        // The lenient tenant's override (10) keeps strict from tripping; live (5) trips.
        let l = &b.tallies["lenient"];
        assert_eq!((l[0].trips, l[1].trips), (1, 0));
    }

    #[test]
    fn idle_states_are_forgotten_and_clean_verdicts_keep_none() {
        let mut b = Backtest::new(sets());
        let t0 = 1_700_000_000_000;
        let clean = VerdictRef {
            verdict: VerdictKind::Clean,
            ..v("c", "clean@x.com", "t", t0)
        };
        b.verdict(&clean, t0);
        assert_eq!(b.active(), 0);
        b.verdict(&v("m", "once@x.com", "t", t0), t0);
        assert_eq!(b.active(), 1);
        // A day and a bit later the sweep drops it (no strikes, idle past the TTL).
        let later = t0 + Policy::default().state_idle_ttl_ms + HOUR_MS * 7;
        b.verdict(
            &VerdictRef {
                sent_at: later,
                ..clean
            },
            later,
        );
        assert_eq!(b.active(), 0);
        assert_eq!(b.counts().peak_active, 1);
    }
}
