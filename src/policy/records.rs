//! The block and event records the core publishes, built here only: the engine's expiry and
//! trip and the commands' support unblock and rejection all go through [`block_record`] and
//! [`Events`], so a field of these records is set the same way everywhere.

use super::ids;
use super::model::{
    Alert, AlertKind, BlockRecord, BlockState, Effect, EventKind, EventLogEntry, Millis,
    RejectCode, TripFacts,
};
use super::state::CurrentBlock;
use super::text;

/// The `Block` record of `block` (taken from the state, or just started) at `now`.
pub(crate) fn block_record(
    mailbox: &str,
    tenant_id: &str,
    block: CurrentBlock,
    state: BlockState,
    now: Millis,
) -> Effect {
    Effect::Block(BlockRecord {
        mailbox: mailbox.to_owned(),
        tenant_id: tenant_id.to_owned(),
        state,
        strike: block.strike,
        blocked_at: block.blocked_at,
        blocked_until: block.blocked_until,
        incident_id: block.incident_id.to_string(),
        evidence_message_ids: block.evidence_message_ids,
        updated_at: now,
    })
}

/// The `Event` records of one input: same mailbox, tenant, incident and time; event ids derive
/// from `id_source` (the incident, or the command for a command's events).
pub(crate) struct Events<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// The tenant the records name.
    pub tenant_id: &'a str,
    /// Incident id the events belong to, if any.
    pub incident_id: Option<&'a str>,
    /// What the event ids derive from.
    pub id_source: &'a str,
    /// Processor time.
    pub now: Millis,
}

impl Events<'_> {
    /// The event of `kind`; `disc` tells apart events of one kind (a device id).
    pub(crate) fn event(&self, kind: EventKind, disc: &str, detail: String) -> Effect {
        self.entry(kind, disc, detail, None)
    }

    /// The `COMMAND_REJECTED` event, with its reason as a code.
    pub(crate) fn rejected(&self, detail: String, reason: RejectCode) -> Effect {
        self.entry(EventKind::CommandRejected, "", detail, Some(reason))
    }

    /// The event of a trip (`kind` records a trip), with the trip as data.
    pub(crate) fn trip(&self, kind: EventKind, detail: String, trip: TripFacts) -> Effect {
        let mut e = self.entry(kind, "", detail, None);
        if let Effect::Event(e) = &mut e {
            e.trip = Some(trip);
        }
        e
    }

    fn entry(
        &self,
        kind: EventKind,
        disc: &str,
        detail: String,
        reason: Option<RejectCode>,
    ) -> Effect {
        Effect::Event(EventLogEntry {
            event_id: ids::event_id(self.mailbox, self.id_source, kind, disc).to_string(),
            incident_id: self.incident_id.map(str::to_owned),
            tenant_id: self.tenant_id.to_owned(),
            mailbox: self.mailbox.to_owned(),
            kind,
            at: self.now,
            detail,
            reason,
            trip: None,
        })
    }
}

/// An alert that blocks nothing (an early warning, a simulated block), with its event and
/// `ALERT_SENT`. The alert, event and alert-event ids derive from `id`, which stands in for an
/// incident id.
pub(crate) struct Notice<'a> {
    /// The mailbox.
    pub mailbox: &'a str,
    /// The tenant the records name.
    pub tenant_id: &'a str,
    /// The warning's or the simulated incident's id.
    pub id: uuid::Uuid,
    /// `Alert.kind`.
    pub kind: AlertKind,
    /// `Alert.strike`.
    pub strike: u32,
    /// `Alert.state`.
    pub state: BlockState,
    /// `Alert.blocked_until`.
    pub blocked_until: Option<Millis>,
    /// `Alert.summary`.
    pub summary: String,
    /// The event that says what happened, and its detail.
    pub event: (EventKind, String),
    /// The trip the event records, as data (`None` for a warning).
    pub trip: Option<TripFacts>,
    /// Processor time.
    pub now: Millis,
}

impl Notice<'_> {
    /// Appends `Alert`, the event and `ALERT_SENT`, in that order.
    pub(crate) fn push(self, effects: &mut Vec<Effect>) {
        let id = self.id.to_string();
        let alert_id = ids::alert_id(&self.id).to_string();
        let events = Events {
            mailbox: self.mailbox,
            tenant_id: self.tenant_id,
            incident_id: Some(&id),
            id_source: &id,
            now: self.now,
        };
        let (kind, detail) = self.event;
        let sent = events.event(EventKind::AlertSent, "", text::alert_sent_detail(&alert_id));
        let event = match self.trip {
            Some(t) => events.trip(kind, detail, t),
            None => events.event(kind, "", detail),
        };
        effects.push(Effect::Alert(Alert {
            alert_id,
            incident_id: id,
            tenant_id: self.tenant_id.to_owned(),
            mailbox: self.mailbox.to_owned(),
            owner_id: None,
            strike: self.strike,
            state: self.state,
            blocked_until: self.blocked_until,
            devices_scanned: Vec::new(),
            scan_skipped_reason: None,
            summary: self.summary,
            kind: self.kind,
        }));
        effects.push(event);
        effects.push(sent);
    }
}
