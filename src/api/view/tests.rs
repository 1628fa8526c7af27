//! The view's rules on its store: indexes kept in step with the states, incidents bounded and
//! confined to their tenant, the events report paged exactly once, retention.

use super::*;
use crate::policy::{CurrentBlock, EventKind};

fn view() -> (tempfile::TempDir, View) {
    let dir = tempfile::tempdir().unwrap();
    let v = View::new(
        ViewStore::open_empty(&dir.path().join("view")).unwrap(),
        1_000_000,
    );
    (dir, v)
}

impl View {
    fn set(&self, mailbox: &str, s: Option<MailboxState>) {
        self.apply(vec![Update::State(mailbox.into(), s)]).unwrap();
    }

    fn effect(&self, e: Effect) {
        self.apply(vec![Update::Effect(e, 0)]).unwrap();
    }
}

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
    let (_d, v) = view();
    v.set(
        "*@x.t",
        Some(exempting(&[("t", None), ("u", Some(500))], "*@x.t")),
    );
    v.set("a@y.t", Some(exempting(&[("t", Some(2_000))], "a@y.t")));
    let patterns = |v: &View, tenant: &str, now: Millis| {
        queries::exemptions_of(&v.store, tenant, now)
            .unwrap()
            .into_iter()
            .map(|e| e.pattern)
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
        queries::exemption_for(&v.store, tenant, mb, 1_000)
            .unwrap()
            .map(|e| e.pattern)
    };
    assert_eq!(hit("b@x.t", "t").as_deref(), Some("*@x.t"));
    assert_eq!(hit("b@sub.x.t", "t"), None, "not a subdomain");
    assert_eq!(hit("a@y.t", "t").as_deref(), Some("a@y.t"));
    assert_eq!(hit("a@y.t", "u"), None, "not another tenant's");
    // A state that no longer holds them drops them from the index.
    v.set("*@x.t", Some(exempting(&[("u", None)], "*@x.t")));
    v.set("a@y.t", None);
    assert!(patterns(&v, "t", 1_000).is_empty());
    let mut left = 0;
    v.store
        .scan(&Key::new(Kind::Exempt).s("t").into_bytes(), None, |_, _| {
            left += 1;
            true
        })
        .unwrap();
    assert_eq!(left, 0, "no index entries are left behind");
    assert_eq!(patterns(&v, "u", 1_000), ["*@x.t"]);
}

#[test]
fn blocked_list_pages_in_order_filters_by_state_and_hides_expired_blocks() {
    let (_d, v) = view();
    for (mb, until) in [
        ("a@t", Some(10_000)),
        ("b@t", None),
        ("c@t", Some(10_000)),
        ("d@t", Some(500)), // expired at now = 1 000, expiry not yet committed
        ("e@t", None),
    ] {
        v.set(mb, Some(blocked_state("t", until)));
    }
    v.set("x@other", Some(blocked_state("other", None)));
    let names = |page: &[(String, MailboxState, BlockState)]| {
        page.iter().map(|(m, _, _)| m.clone()).collect::<Vec<_>>()
    };
    let blocked_page = |v: &View, t, f, c: Option<&str>, n, now| {
        queries::blocked_page(&v.store, t, f, c, n, now).unwrap()
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
    v.set(
        "b@t",
        Some(MailboxState {
            tenant_id: "t".into(),
            ..MailboxState::default()
        }),
    );
    v.set("e@t", None);
    let (all, _) = blocked_page(&v, "t", None, None, 10, 1_000);
    assert_eq!(names(&all), ["a@t", "c@t"]);
    let tenant_of = |mb| queries::tenant_of(&v.store, mb).unwrap();
    assert_eq!(tenant_of("x@other").as_deref(), Some("other"));
    assert_eq!(tenant_of("e@t"), None);
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
    let (_d, v) = view();
    // Tripped under tenant a, then moved to tenant b and tripped there.
    v.effect(block("m@x", "a", incident_id(1), 1_000));
    v.effect(block("m@x", "b", incident_id(2), 9_000));
    let mut state = blocked_state("b", Some(20_000));
    state.block.as_mut().unwrap().incident_id = incident_id(2);
    v.set("m@x", Some(state));
    let ids = |t: &str| {
        queries::recent_incidents(&v.store, "m@x", t)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("b"), [incident_id(2).to_string()]);
    assert_eq!(ids("a"), [incident_id(1).to_string()]);
    assert_eq!(
        queries::tenant_of(&v.store, "m@x").unwrap().as_deref(),
        Some("b")
    );
}

#[test]
fn incidents_are_evicted_oldest_first_by_blocked_at_but_never_the_block_in_force() {
    let (_d, v) = view();
    // The block in force is the oldest incident by blocked_at, and read last (readers of
    // different topics run independently, so arrival order says nothing).
    let in_force = incident_id(999);
    let mut state = blocked_state("t", None);
    state.block.as_mut().unwrap().incident_id = in_force;
    v.set("m@t", Some(state));
    for n in 0..INCIDENTS_PER_MAILBOX as u128 + 5 {
        v.effect(block("m@t", "t", incident_id(n), 10_000 + n as Millis));
    }
    v.effect(block("m@t", "t", in_force, 1));
    let kept = queries::recent_incidents(&v.store, "m@t", "t").unwrap();
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
    let count = |kind: Kind| {
        let mut n = 0;
        v.store
            .scan(&[kind as u8], None, |_, _| {
                n += 1;
                true
            })
            .unwrap();
        n
    };
    assert_eq!(
        count(Kind::Incident),
        INCIDENTS_PER_MAILBOX,
        "evicted ones are gone"
    );
    assert_eq!(count(Kind::TenantIncident), INCIDENTS_PER_MAILBOX);
    // The changelog forgets the mailbox: its incidents go too.
    v.set("m@t", None);
    for kind in [
        Kind::Incident,
        Kind::Recent,
        Kind::TenantIncident,
        Kind::Blocked,
        Kind::State,
    ] {
        assert_eq!(count(kind), 0, "{}", kind as u8 as char);
    }
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

fn event(tenant: &str, mailbox: &str, kind: EventKind, at: Millis, n: u32) -> EventLogEntry {
    EventLogEntry {
        event_id: format!("ev-{tenant}-{n:05}"),
        incident_id: None,
        tenant_id: tenant.into(),
        mailbox: mailbox.into(),
        kind,
        at,
        detail: format!("detail {n}"),
        reason: None,
        trip: None,
    }
}

fn item(raw: &[u8]) -> ReportItem {
    serde_json::from_slice(raw).unwrap()
}

fn all_pages(v: &View, tenant: &str, filter: &queries::EventFilter, limit: usize) -> Vec<String> {
    let mut range = TimeRange {
        limit,
        ..TimeRange::default()
    };
    let mut out = Vec::new();
    loop {
        let page = queries::events(&v.store, tenant, filter, &range).unwrap();
        assert!(page.items.len() <= limit);
        out.extend(page.items.iter().map(|i| item(i).event_id));
        match page.next {
            Some(c) => range.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn the_events_report_pages_every_event_once_newest_first_and_only_the_tenants() {
    let (_d, v) = view();
    let mut updates = Vec::new();
    // 1 050 events of tenant t, several sharing a millisecond; redelivered ones; tenant u's.
    for n in 0..1_050u32 {
        let mb = format!("m{}@t.test", n % 7);
        let e = event(
            "t",
            &mb,
            EventKind::MailboxWarned,
            10_000 + Millis::from(n / 3),
            n,
        );
        updates.push(Update::Effect(Effect::Event(e.clone()), 0));
        if n % 100 == 0 {
            updates.push(Update::Effect(Effect::Event(e), 0));
        }
        let other = event(
            "u",
            &mb,
            EventKind::MailboxWarned,
            10_000 + Millis::from(n),
            n,
        );
        updates.push(Update::Effect(Effect::Event(other), 0));
    }
    v.apply(updates).unwrap();
    let ids = all_pages(&v, "t", &queries::EventFilter::default(), 100);
    assert_eq!(ids.len(), 1_050, "each once");
    let mut expected: Vec<_> = (0..1_050u32)
        .map(|n| (10_000 + Millis::from(n / 3), format!("ev-t-{n:05}")))
        .collect();
    // Newest first; within one millisecond, by id.
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    assert_eq!(
        ids,
        expected.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
    );
    // By mailbox: that mailbox's only.
    let f = queries::EventFilter {
        mailbox: Some("m3@t.test".into()),
        ..Default::default()
    };
    let ids = all_pages(&v, "t", &f, 40);
    assert_eq!(ids.len(), 150);
    // A time range [from, to) and a page cut inside it.
    let range = TimeRange {
        from: Some(10_100),
        to: Some(10_110),
        limit: 1_000,
        ..TimeRange::default()
    };
    let page = queries::events(&v.store, "t", &Default::default(), &range).unwrap();
    assert_eq!(page.items.len(), 30);
    assert!(page
        .items
        .iter()
        .all(|i| (10_100..10_110).contains(&item(i).at)));
    // Served as it was stored: the report's JSON item of the event.
    let first = item(&page.items[0]);
    assert_eq!(
        (first.kind.as_str(), first.reason.as_deref()),
        ("MAILBOX_WARNED", None)
    );
    assert!(page.next.is_none());
}

#[test]
fn a_kind_filter_that_matches_little_is_cut_by_the_budget_and_goes_on_by_cursor() {
    let (_d, v) = view();
    let n = queries::SCAN_BUDGET as u32 + 500;
    let mut updates = Vec::new();
    for i in 0..n {
        let kind = if i % 10_000 == 0 {
            EventKind::MailboxBlocked
        } else {
            EventKind::MailboxWarned
        };
        updates.push(Update::Effect(
            Effect::Event(event("t", "a@t", kind, Millis::from(i), i)),
            0,
        ));
    }
    v.apply(updates).unwrap();
    let f = queries::EventFilter {
        kinds: vec!["MAILBOX_BLOCKED".into()],
        ..Default::default()
    };
    let range = TimeRange {
        limit: 10,
        ..TimeRange::default()
    };
    let first = queries::events(&v.store, "t", &f, &range).unwrap();
    assert!(
        first.items.len() < 3 && first.next.is_some(),
        "cut by the budget"
    );
    assert_eq!(
        all_pages(&v, "t", &f, 10).len(),
        3,
        "0, 10 000 and 20 000, each once"
    );
}

#[test]
fn events_and_alerts_past_the_retention_are_deleted_oldest_first_within_a_budget() {
    let (_d, v) = view();
    let mut updates = Vec::new();
    for i in 0..10u32 {
        let e = event(
            "t",
            "a@t",
            EventKind::MailboxWarned,
            Millis::from(i) * 100,
            i,
        );
        updates.push(Update::Effect(Effect::Event(e), 0));
    }
    v.apply(updates).unwrap();
    assert_eq!(v.expire(450, 3).unwrap(), 3, "the budget");
    assert_eq!(v.expire(450, 100).unwrap(), 2);
    assert_eq!(v.expire(450, 100).unwrap(), 0);
    let left = all_pages(&v, "t", &Default::default(), 100);
    assert_eq!(left.len(), 5);
    let f = queries::EventFilter {
        mailbox: Some("a@t".into()),
        ..Default::default()
    };
    assert_eq!(all_pages(&v, "t", &f, 100), left, "the mailbox index too");
}

#[test]
fn incidents_are_listed_per_tenant_by_time_and_state() {
    let (_d, v) = view();
    v.effect(block("a@t", "t", incident_id(1), 1_000));
    v.effect(block("b@t", "t", incident_id(2), 2_000));
    v.effect(block("c@u", "u", incident_id(3), 3_000));
    // A warning's id is no trip: not listed.
    let mut warned = event("t", "d@t", EventKind::MailboxWarned, 2_200, 9);
    warned.incident_id = Some(incident_id(9).to_string());
    v.effect(Effect::Event(warned));
    let mut requested = event("t", "b@t", EventKind::ScanRequested, 2_001, 1);
    requested.incident_id = Some(incident_id(2).to_string());
    v.effect(Effect::Event(requested));
    let list = |state: Option<&str>| {
        let range = TimeRange {
            limit: 10,
            ..TimeRange::default()
        };
        queries::incidents(&v.store, "t", state, &range)
            .unwrap()
            .items
            .into_iter()
            .map(|(id, i)| (id, i.state().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(None),
        [
            (incident_id(2).to_string(), "OPEN".to_owned()),
            (incident_id(1).to_string(), "NO_SCAN".to_owned())
        ]
    );
    let mut done = event("t", "b@t", EventKind::IncidentRemediated, 2_500, 2);
    done.incident_id = Some(incident_id(2).to_string());
    v.effect(Effect::Event(done));
    assert_eq!(
        list(Some("REMEDIATED")),
        [(incident_id(2).to_string(), "REMEDIATED".to_owned())]
    );
    assert!(list(Some("OPEN")).is_empty(), "moved, not copied");
    let events = queries::incident_events(&v.store, &incident_id(2).to_string()).unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::ScanRequested, EventKind::IncidentRemediated]
    );
}
