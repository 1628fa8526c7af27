//! The shadow policy (rule 12 of [`crate::policy`]): a candidate policy evaluated on the same
//! verdicts beside the live one, with its own window and would-be ladder in the mailbox's state
//! ([`ShadowState`]), so it is kept exactly once like the live state. It only ever reports:
//! one `SHADOW_TRIP` event per trip, with the trip as data ([`TripFacts`]); never a block, a
//! scan request, an alert or a warning, and it never touches the live state.
//!
//! It counts as the live rules 4 to 9 do — idle reset, its own would-be block (a verdict sent
//! before the end of the last would-be timed block, or any after a would-be permanent one, is
//! not counted), lateness, duplicates, the exact window, decay and the ladder — with the same
//! functions ([`Window`](super::window::Window), [`ladder`](super::ladder)), so a shadow with
//! the live policy's numbers trips exactly when the live policy does. Whatever the tenant's mode it
//! simulates enforcement; an exemption in force makes its trip exempt as it makes the live one
//! (reported, `exempt = true`, no strike).

use std::borrow::Cow;

use super::config::Policy;
use super::exemptions;
use super::ids;
use super::ladder::Applied;
use super::model::{
    Directory, Effect, EventKind, Millis, Outcome, PolicyOverrides, StepResult, TenantSettings,
    TripFacts, Verdict,
};
use super::records::Events;
use super::state::{MailboxState, ShadowState};
use super::text;

/// Rule 12: the shadow policy `shadow` (before the tenant's shadow overrides) counts the
/// offending verdict `v`, sent at `sent` (clamped already); `ttl` is the live policy's idle TTL,
/// which bounds the shadow's state as it does the live one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn verdict(
    state: &mut MailboxState,
    v: &Verdict,
    sent: Millis,
    now: Millis,
    dir: &dyn Directory,
    tenant: Option<TenantSettings>,
    shadow: &Policy,
    ttl: Millis,
    r: &mut StepResult,
) {
    let s = state.shadow.get_or_insert_with(Box::default);
    if s.is_idle_expired(now, ttl) {
        **s = ShadowState::default();
    }
    let not_counted = s.permanent
        || s.until.is_some_and(|u| sent < u)
        || s.window.is_late(sent, shadow.allowed_lateness_ms)
        || s.window.contains(&v.message_id);
    if not_counted {
        return;
    }
    // Looked up only now (when the live rules did not already): a verdict the shadow does not
    // count, like the rest of a burst inside its would-be block, costs no lookup.
    let tenant = tenant.unwrap_or_else(|| dir.tenant(&v.tenant_id));
    let p = match &tenant.shadow {
        Some(o) => Cow::Owned(shadow.with_overrides(&PolicyOverrides {
            warn_threshold: None,
            ..o.clone()
        })),
        None => Cow::Borrowed(shadow),
    };
    let i = s.window.insert(sent, &v.message_id);
    s.touched_at = now;
    r.state_changed = true;
    let Some(group) = s.window.trip_containing(i, p.threshold, p.window_ms) else {
        s.window.prune(p.allowed_lateness_ms, p.window_ms);
        return;
    };
    let Some(evidence) = s.window.take_run(group) else {
        return;
    };
    let would = Applied::next(&p, s.strikes, s.until, evidence.blocked_at, now);
    let exempt = exemptions::matching(state, v, now, dir).is_some();
    if !exempt {
        // Borrowed again: the exemption check reads the whole state.
        if let Some(s) = state.shadow.as_deref_mut() {
            s.strikes = would.strike;
            // After a permanent one nothing counts: no end, no decay.
            s.until = would.until;
            s.permanent = would.until.is_none();
        }
    }
    let facts = would.facts(
        evidence.first_sent_at,
        evidence.blocked_at,
        evidence.message_ids,
        exempt,
    );
    let (strike, permanent) = (facts.strike, facts.block_ms.is_none());
    r.effects.push(event(v, facts, now));
    r.outcomes.push(Outcome::ShadowTrip {
        strike,
        permanent,
        exempt,
    });
}

/// The `SHADOW_TRIP` event of a trip: incident and event ids from
/// [`ids::shadow_incident_id`] (redelivered input, same ids).
fn event(v: &Verdict, facts: TripFacts, now: Millis) -> Effect {
    let incident = ids::shadow_incident_id(&v.mailbox, facts.strike, facts.blocked_at).to_string();
    Events {
        mailbox: &v.mailbox,
        tenant_id: &v.tenant_id,
        incident_id: Some(&incident),
        id_source: &incident,
        now,
    }
    .trip(EventKind::ShadowTrip, text::shadow_detail(&facts), facts)
}

#[cfg(test)]
mod tests {
    use super::super::model::{
        EventLogEntry, Exemption, Input, Owner, StepResult, TenantMode, TenantSettings, VerdictKind,
    };
    use super::super::{step, MailboxState, Policy, PolicyOverrides};
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::sync::Arc;

    const T0: Millis = 1_700_000_000_000;
    const H: Millis = 3_600_000;
    const MB: &str = "alice@example.test";

    /// A directory with one tenant (settings changeable) and no owner; counts tenant lookups.
    struct Dir {
        tenant: RefCell<TenantSettings>,
        lookups: Cell<u32>,
    }

    impl Dir {
        fn new() -> Dir {
            Dir {
                tenant: RefCell::new(TenantSettings {
                    sync_security_enabled: true,
                    endpoint_licence: true,
                    overrides: PolicyOverrides::default(),
                    mode: TenantMode::Enforce,
                    shadow: None,
                }),
                lookups: Cell::new(0),
            }
        }
    }

    impl Directory for Dir {
        fn owner(&self, _: &str) -> Option<Owner> {
            None
        }
        fn devices(&self, _: &str) -> Option<Vec<String>> {
            None
        }
        fn tenant(&self, _: &str) -> TenantSettings {
            self.lookups.set(self.lookups.get() + 1);
            self.tenant.borrow().clone()
        }
    }

    /// The live policy (threshold 5, no warning) with a shadow of `threshold`.
    fn policy(threshold: u32) -> Policy {
        let live = Policy {
            warn_threshold: Some(0),
            ..Policy::default()
        };
        Policy {
            shadow: Some(Arc::new(Policy {
                threshold,
                ..live.clone()
            })),
            ..live
        }
    }

    fn spam(id: &str, sent_at: Millis) -> Input {
        Input::Verdict(Verdict {
            message_id: id.into(),
            tenant_id: "t1".into(),
            mailbox: MB.into(),
            sent_at,
            verdict: VerdictKind::Spam,
        })
    }

    /// Steps `inputs` (each processed at its `sent_at`), checking every state's encoding.
    fn run(state: &mut MailboxState, dir: &Dir, p: &Policy, inputs: &[Input]) -> Vec<StepResult> {
        inputs
            .iter()
            .map(|i| {
                let Input::Verdict(v) = i else { unreachable!() };
                let r = step(state, i, v.sent_at, dir, p);
                assert_eq!(
                    MailboxState::decode(&state.to_bytes()).as_ref(),
                    Ok(&*state)
                );
                r
            })
            .collect()
    }

    fn burst(prefix: &str, t: Millis, n: i64) -> Vec<Input> {
        (0..n)
            .map(|k| spam(&format!("{prefix}{k}"), t + k * 1_000))
            .collect()
    }

    fn shadow_events(results: &[StepResult]) -> Vec<&EventLogEntry> {
        results
            .iter()
            .flat_map(|r| &r.effects)
            .filter_map(|e| match e {
                Effect::Event(e) if e.kind == EventKind::ShadowTrip => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The live part: the state with the shadow's section dropped.
    fn live(state: &MailboxState) -> MailboxState {
        MailboxState {
            shadow: None,
            ..state.clone()
        }
    }

    /// A shadow of 3 beside the live 5: the third message is a `SHADOW_TRIP` with the trip as
    /// data, and nothing else: the live effects, outcomes and state are those of no shadow.
    #[test]
    fn a_shadow_of_three_trips_on_the_third_and_changes_nothing_live() {
        let dir = Dir::new();
        let inputs = burst("m", T0, 3);
        let (mut with, mut without) = (MailboxState::default(), MailboxState::default());
        let r = run(&mut with, &dir, &policy(3), &inputs);
        let plain = Policy {
            shadow: None,
            ..policy(3)
        };
        let base = run(&mut without, &dir, &plain, &inputs);
        let e = shadow_events(&r);
        assert_eq!(e.len(), 1, "{r:?}");
        let facts = e[0].trip.as_ref().unwrap();
        assert_eq!(
            *facts,
            TripFacts {
                strike: 1,
                first_sent_at: T0,
                blocked_at: T0 + 2_000,
                block_ms: Some(H),
                blocked_until: Some(T0 + 2_000 + H),
                evidence_message_ids: vec!["m0".into(), "m1".into(), "m2".into()],
                exempt: false,
            }
        );
        assert_eq!(e[0].at, T0 + 2_000);
        assert_eq!((e[0].mailbox.as_str(), e[0].tenant_id.as_str()), (MB, "t1"));
        assert!(
            e[0].detail
                .starts_with("shadow policy, strike 1: would block for 1 h after 3"),
            "{}",
            e[0].detail
        );
        let id = ids::shadow_incident_id(MB, 1, T0 + 2_000).to_string();
        assert_eq!(e[0].incident_id.as_deref(), Some(id.as_str()));
        assert_eq!(
            r[2].outcomes,
            [
                Outcome::Counted,
                Outcome::ShadowTrip {
                    strike: 1,
                    permanent: false,
                    exempt: false
                }
            ]
        );
        // Only the event: no block, scan, alert; the live side as without a shadow.
        assert_eq!(r[2].effects.len(), 1);
        for (a, b) in r.iter().zip(&base) {
            assert_eq!(a.effects.len() - usize::from(a == &r[2]), b.effects.len());
            assert_eq!(
                a.outcomes
                    .iter()
                    .filter(|o| !matches!(o, Outcome::ShadowTrip { .. }))
                    .count(),
                b.outcomes.len()
            );
        }
        assert_eq!(live(&with), without);
        assert_eq!(with.shadow().unwrap().strikes(), 1);
        // The live policy trips on the fifth as ever; the shadow, inside its would-be block,
        // counts neither.
        let more = run(&mut with, &dir, &policy(3), &burst("n", T0 + 3_000, 2));
        assert_eq!(
            more[1].outcomes,
            [Outcome::Tripped {
                strike: 1,
                permanent: false
            }]
        );
        assert!(shadow_events(&more).is_empty());
    }

    /// The shadow's ladder is its own: the next trip after its would-be block is strike 2 for
    /// 2 h, while the live ladder is untouched; a permanent strike ends its counting.
    #[test]
    fn the_shadow_walks_its_own_ladder_to_permanent() {
        let dir = Dir::new();
        let mut p = policy(3);
        Arc::make_mut(p.shadow.as_mut().unwrap()).permanent_strike = 3;
        let mut s = MailboxState::default();
        let mut t = T0;
        let mut got = Vec::new();
        for k in 0..4 {
            let r = run(&mut s, &dir, &p, &burst(&format!("k{k}-"), t, 3));
            got.extend(
                shadow_events(&r)
                    .into_iter()
                    .map(|e| e.trip.clone().unwrap()),
            );
            // Past the longest would-be block.
            t += 10 * H;
        }
        let ladder: Vec<(u32, Option<Millis>)> =
            got.iter().map(|f| (f.strike, f.block_ms)).collect();
        assert_eq!(ladder, [(1, Some(H)), (2, Some(2 * H)), (3, None)]);
        assert!(s.shadow().unwrap().is_permanent());
        assert_eq!(
            (s.strikes(), s.block()),
            (0, None),
            "live: three messages never trip"
        );
    }

    /// An exempt mailbox's shadow trip is reported (`exempt`), strikes nothing; an ALERT_ONLY
    /// tenant's shadow trips as under enforcement; the tenant's shadow overrides apply.
    #[test]
    fn exemptions_modes_and_tenant_overrides() {
        let dir = Dir::new();
        let mut s = MailboxState::default();
        s.exemptions.push(Exemption {
            tenant_id: "t1".into(),
            pattern: MB.into(),
            reason: "newsletter".into(),
            actor: "carol".into(),
            actor_role: super::super::ActorRole::Admin,
            command_id: "c-1".into(),
            created_at: 0,
            expires_at: None,
        });
        let r = run(&mut s, &dir, &policy(3), &burst("m", T0, 3));
        let facts = shadow_events(&r)[0].trip.clone().unwrap();
        assert!(facts.exempt && facts.strike == 1, "{facts:?}");
        assert!(shadow_events(&r)[0].detail.contains("exempt"));
        assert_eq!(s.shadow().unwrap().strikes(), 0);

        dir.tenant.borrow_mut().mode = TenantMode::AlertOnly;
        dir.tenant.borrow_mut().shadow = Some(PolicyOverrides {
            threshold: Some(2),
            base_block_ms: Some(60_000),
            warn_threshold: Some(1),
            ..PolicyOverrides::default()
        });
        let mut s = MailboxState::default();
        let r = run(&mut s, &dir, &policy(3), &burst("m", T0, 2));
        let facts = shadow_events(&r)[0].trip.clone().unwrap();
        assert_eq!((facts.strike, facts.block_ms), (1, Some(60_000)));
        assert_eq!(r[1].effects.len(), 1, "no warning, nothing but the event");
    }

    /// A redelivered verdict is a duplicate to the shadow too; replaying the input on a fresh
    /// state gives the same event, id included. One tenant lookup per offending verdict.
    #[test]
    fn redelivery_and_replay_give_the_same_ids_and_one_lookup() {
        let dir = Dir::new();
        let mut inputs = burst("m", T0, 3);
        inputs.insert(2, inputs[1].clone());
        let mut a = MailboxState::default();
        let ra = run(&mut a, &dir, &policy(3), &inputs);
        // Three counted verdicts, one lookup each (the live rules' and the shadow's are one); the
        // redelivery counts for neither and costs none.
        assert_eq!(dir.lookups.get(), 3);
        let mut b = MailboxState::default();
        let rb = run(&mut b, &dir, &policy(3), &inputs);
        assert_eq!(shadow_events(&ra).len(), 1);
        assert_eq!(shadow_events(&ra), shadow_events(&rb));
        // A CLEAN verdict costs nothing, shadow or not.
        let before = dir.lookups.get();
        let clean = Input::Verdict(Verdict {
            verdict: VerdictKind::Clean,
            ..match &inputs[0] {
                Input::Verdict(v) => v.clone(),
                _ => unreachable!(),
            }
        });
        let r = step(&mut a, &clean, T0 + 9_000, &dir, &policy(3));
        assert!(!r.state_changed && dir.lookups.get() == before);
    }

    /// The shadow's window is reset by the idle TTL as the live one is, and its state is
    /// dropped at the next offending verdict once the shadow is turned off.
    #[test]
    fn idle_reset_and_turning_it_off() {
        let dir = Dir::new();
        let p = policy(3);
        let ttl = p.state_idle_ttl_ms;
        let mut s = MailboxState::default();
        run(&mut s, &dir, &p, &burst("m", T0, 2));
        // Late for the live window, and after the TTL: the shadow starts afresh (as the live).
        let late = spam("x", T0 + 1_500);
        let r = step(&mut s, &late, T0 + 1_000 + ttl + 1, &dir, &p);
        assert!(shadow_events(std::slice::from_ref(&r)).is_empty());
        assert_eq!(s.shadow().unwrap().window().len(), 1);
        let off = Policy { shadow: None, ..p };
        let r = step(&mut s, &spam("y", T0 + 2 * ttl), T0 + 2 * ttl, &dir, &off);
        assert!(r.state_changed && s.shadow().is_none());
    }
}
