//! Deterministic ids (SPEC §3 last paragraph): UUID v5 (SHA-1, RFC 9562) under a fixed namespace
//! of an unambiguous, length-prefixed byte encoding of the inputs. The same inputs give the same
//! id on every platform and in every version of mailguard, so a replay or a retry yields the same
//! ids and consumers can de-duplicate.
//!
//! - incident = f(mailbox, strike, blocked_at): `blocked_at` is included so that ids stay unique
//!   after a support unblock resets the strike count;
//! - scan request = f(incident, device);
//! - alert = f(incident);
//! - event = f(mailbox, scope, kind, discriminator), where the scope is the incident id (block,
//!   scan, alert and unblock events) or the command id (command events), and the discriminator
//!   tells apart several events of one kind in one scope (the device id of `SCAN_REQUESTED`).

use super::model::{EventKind, Millis};
use uuid::Uuid;

/// The fixed namespace of every mailguard id. Never change it: ids would change with it.
pub const NAMESPACE: Uuid = Uuid::from_u128(0x6d61_696c_6775_4172_a964_0001_0000_0001);

struct Key(Vec<u8>);

impl Key {
    fn new(tag: &str) -> Self {
        let mut k = Key(Vec::with_capacity(96));
        k.str(tag);
        k
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(&(s.len() as u64).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn int(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn id(&self) -> Uuid {
        Uuid::new_v5(&NAMESPACE, &self.0)
    }
}

/// Incident id of strike `strike` of `mailbox`, blocked at `blocked_at`.
pub fn incident_id(mailbox: &str, strike: u32, blocked_at: Millis) -> Uuid {
    Key::new("incident")
        .str(mailbox)
        .int(i64::from(strike))
        .int(blocked_at)
        .id()
}

/// Scan request id of `device_id` in an incident.
/// Incident id of a simulated trip (an `ALERT_ONLY` tenant's would-be block): its own namespace,
/// so it never equals a real incident's.
pub fn simulated_incident_id(mailbox: &str, strike: u32, blocked_at: Millis) -> Uuid {
    Key::new("simulated-incident")
        .str(mailbox)
        .int(i64::from(strike))
        .int(blocked_at)
        .id()
}

/// Incident id of a shadow trip (the shadow policy's would-be block; only its `SHADOW_TRIP`
/// event carries it): its own namespace, so it never equals a real or simulated incident's.
pub fn shadow_incident_id(mailbox: &str, strike: u32, blocked_at: Millis) -> Uuid {
    Key::new("shadow-incident")
        .str(mailbox)
        .int(i64::from(strike))
        .int(blocked_at)
        .id()
}

/// Id of an exempt trip (its alert and events), from the trip's `blocked_at`: its own namespace,
/// so it never equals a real incident's.
pub fn exempt_trip_id(mailbox: &str, blocked_at: Millis) -> Uuid {
    Key::new("exempt-trip").str(mailbox).int(blocked_at).id()
}

/// Id of an early warning, from the largest `sent_at` of its run (one warning per run).
pub fn warning_id(mailbox: &str, warned_through: Millis) -> Uuid {
    Key::new("warning").str(mailbox).int(warned_through).id()
}

pub fn request_id(incident: &Uuid, device_id: &str) -> Uuid {
    Key::new("scan-request")
        .str(&incident.hyphenated().to_string())
        .str(device_id)
        .id()
}

/// Alert id of an incident.
pub fn alert_id(incident: &Uuid) -> Uuid {
    Key::new("alert")
        .str(&incident.hyphenated().to_string())
        .id()
}

/// Alert id of the end of an incident (remediated or needing attention): its own namespace, so
/// it never equals the block's alert of the same incident.
pub fn incident_update_alert_id(incident: &Uuid) -> Uuid {
    Key::new("incident-update")
        .str(&incident.hyphenated().to_string())
        .id()
}

/// Event id: `scope` is an incident id (as string) or a command id; `discriminator` is `""`
/// unless several events of one kind share a scope (device id of `SCAN_REQUESTED`).
pub fn event_id(mailbox: &str, scope: &str, kind: EventKind, discriminator: &str) -> Uuid {
    Key::new("event")
        .str(mailbox)
        .str(scope)
        .str(kind.as_str())
        .str(discriminator)
        .id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_deterministic_and_pinned() {
        let a = incident_id("a@x.test", 1, 1_000);
        assert_eq!(a, incident_id("a@x.test", 1, 1_000));
        assert_eq!(a.get_version_num(), 5);
        // Pinned: a change here changes every id ever published. Cross-checked with Python:
        // uuid.UUID(bytes=sha1(NAMESPACE.bytes + name).digest()[:16], version=5), name being
        // the length-prefixed (u64 big-endian) fields and big-endian i64 integers.
        assert_eq!(a.to_string(), PINNED_INCIDENT);
    }

    const PINNED_INCIDENT: &str = "738e61f9-04e2-5f2c-9c50-34717c0b1100";

    #[test]
    fn ids_are_distinct() {
        let inc = incident_id("a@x.test", 1, 1_000);
        let ids = [
            inc,
            incident_id("a@x.test", 2, 1_000),
            incident_id("a@x.test", 1, 1_001),
            incident_id("b@x.test", 1, 1_000),
            // Length prefixes: no ambiguity between ("ab","c") and ("a","bc").
            event_id("ab", "c", EventKind::ScanRequested, ""),
            event_id("a", "bc", EventKind::ScanRequested, ""),
            request_id(&inc, "d1"),
            request_id(&inc, "d2"),
            alert_id(&inc),
            incident_update_alert_id(&inc),
            simulated_incident_id("a@x.test", 1, 1_000),
            shadow_incident_id("a@x.test", 1, 1_000),
            event_id("a@x.test", &inc.to_string(), EventKind::MailboxBlocked, ""),
            event_id("a@x.test", &inc.to_string(), EventKind::ScanRequested, "d1"),
            event_id("a@x.test", &inc.to_string(), EventKind::ScanRequested, "d2"),
            event_id("a@x.test", &inc.to_string(), EventKind::AlertSent, ""),
            event_id("a@x.test", "cmd-1", EventKind::CommandRejected, ""),
            event_id("a@x.test", "cmd-1", EventKind::SupportUnblock, ""),
        ];
        let set: HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
    }
}
