//! Size limits on everything a producer controls.
//!
//! Every field that grows (ids, mailbox, tenant, texts, device lists) and every number that
//! multiplies them (a tenant's threshold decides how many message ids a block carries as
//! evidence) is bounded here. Input over a limit goes to the DLQ with the field, its size and the
//! limit named; so every record mailguard writes (block, alert, event, scan request, changelog)
//! has a size known in advance, and [`Limits::largest_output`] checks it against what the broker
//! accepts when the configuration is loaded — an output can then never be refused for its size.

use super::model::{Command, Exemption, Owner, ScanResult, TenantSettings};

/// The limits; `[limits]` in the configuration (unknown keys are an error, missing keys take the
/// default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest mailbox address, in bytes. Default 320 (RFC 5321: 64 local + `@` + 255 domain).
    pub max_mailbox_bytes: usize,
    /// Longest id (`message_id`, `tenant_id`, `command_id`, `owner_id`, device ids), in bytes.
    /// Default 256.
    pub max_id_bytes: usize,
    /// Longest free text (`owner_name`, a command's `actor` and `ticket`), in bytes. Default 1024.
    pub max_text_bytes: usize,
    /// Most devices one owner may have. Default 1000 (one scan request each).
    pub max_devices: usize,
    /// Highest threshold a tenant may set (it bounds a block's evidence). Default 100.
    pub max_threshold: u32,
    /// Largest record mailguard writes, in bytes, key and headers included: the broker's
    /// `message.max.bytes` (default 1 048 588) with room to spare. A DLQ copy of a larger input is
    /// truncated to fit (and says so in a header). Default 900 000.
    pub max_record_bytes: usize,
    /// Most exemptions one tenant may hold (an `EXEMPTION_PUT` over it is rejected; the
    /// exemptions table never holds more per tenant in memory). Default 1000.
    pub max_exemptions_per_tenant: usize,
    /// Most threat names one scan result may list (each at most `max_id_bytes`). Default 1000.
    pub max_threats: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_mailbox_bytes: 320,
            max_id_bytes: 256,
            max_text_bytes: 1024,
            max_devices: 1000,
            max_threshold: 100,
            max_record_bytes: 900_000,
            max_exemptions_per_tenant: 1000,
            max_threats: 1000,
        }
    }
}

/// A field over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` is {size} {unit}, over the limit of {limit} (limits.{setting})")]
pub struct LimitError {
    /// The record field.
    pub field: &'static str,
    /// Its size.
    pub size: usize,
    /// Bytes, items…
    pub unit: &'static str,
    /// The limit.
    pub limit: usize,
    /// The configuration key of the limit.
    pub setting: &'static str,
}

/// Fixed bytes of the largest output besides its bounded fields (names, enums, timestamps, uuids,
/// headers, Avro framing), generously rounded up.
const OUTPUT_OVERHEAD: usize = 4096;

impl Limits {
    fn check(
        size: usize,
        limit: usize,
        field: &'static str,
        setting: &'static str,
    ) -> Result<(), LimitError> {
        if size > limit {
            return Err(LimitError {
                field,
                size,
                unit: "bytes",
                limit,
                setting,
            });
        }
        Ok(())
    }

    fn id(&self, field: &'static str, value: &str) -> Result<(), LimitError> {
        Self::check(value.len(), self.max_id_bytes, field, "max_id_bytes")
    }

    fn mailbox(&self, value: &str) -> Result<(), LimitError> {
        Self::check(
            value.len(),
            self.max_mailbox_bytes,
            "mailbox",
            "max_mailbox_bytes",
        )
    }

    fn text(&self, field: &'static str, value: &str) -> Result<(), LimitError> {
        Self::check(value.len(), self.max_text_bytes, field, "max_text_bytes")
    }

    /// An `OutboundVerdict`'s fields.
    pub fn verdict(
        &self,
        message_id: &str,
        tenant_id: &str,
        mailbox: &str,
    ) -> Result<(), LimitError> {
        self.id("message_id", message_id)?;
        self.id("tenant_id", tenant_id)?;
        self.mailbox(mailbox)
    }

    /// An `AdminCommand`.
    pub fn command(&self, c: &Command) -> Result<(), LimitError> {
        self.id("command_id", &c.command_id)?;
        self.id("tenant_id", &c.tenant_id)?;
        self.mailbox(&c.mailbox)?;
        self.text("actor", &c.actor)?;
        self.text("ticket", &c.ticket)?;
        match &c.reason {
            Some(r) => self.text("reason", r),
            None => Ok(()),
        }
    }

    /// An `Exemption` (a `mailguard.exemptions` value).
    pub fn exemption(&self, e: &Exemption) -> Result<(), LimitError> {
        self.id("tenant_id", &e.tenant_id)?;
        Self::check(
            e.pattern.len(),
            self.max_mailbox_bytes,
            "pattern",
            "max_mailbox_bytes",
        )?;
        self.text("reason", &e.reason)?;
        self.text("actor", &e.actor)?;
        self.id("command_id", &e.command_id)
    }

    /// A `ScanResult`.
    pub fn scan_result(&self, r: &ScanResult) -> Result<(), LimitError> {
        self.id("request_id", &r.request_id)?;
        self.id("incident_id", &r.incident_id)?;
        self.id("tenant_id", &r.tenant_id)?;
        self.id("device_id", &r.device_id)?;
        if let Some(m) = &r.mailbox {
            self.mailbox(m)?;
        }
        if r.threats.len() > self.max_threats {
            return Err(LimitError {
                field: "threats",
                size: r.threats.len(),
                unit: "items",
                limit: self.max_threats,
                setting: "max_threats",
            });
        }
        r.threats.iter().try_for_each(|t| self.id("threats", t))
    }

    /// A record mailguard forwards as it was read (a scan result re-keyed by mailbox): key and
    /// value, with room for the record's framing, within `max_record_bytes`. A newer writer's
    /// fields that the reader skips are not bounded by the field limits, so the size is checked.
    pub fn forwarded(&self, key: usize, value: usize) -> Result<(), LimitError> {
        const FRAMING: usize = 512;
        let size = key.saturating_add(value).saturating_add(FRAMING);
        Self::check(size, self.max_record_bytes, "record", "max_record_bytes")
    }

    /// A `MailboxOwner`.
    pub fn owner(&self, mailbox: &str, o: &Owner) -> Result<(), LimitError> {
        self.mailbox(mailbox)?;
        self.id("owner_id", &o.owner_id)?;
        self.id("tenant_id", &o.tenant_id)?;
        match &o.owner_name {
            Some(n) => self.text("owner_name", n),
            None => Ok(()),
        }
    }

    /// An `OwnerDevices`.
    pub fn devices(
        &self,
        owner_id: &str,
        tenant_id: &str,
        device_ids: &[String],
    ) -> Result<(), LimitError> {
        self.id("owner_id", owner_id)?;
        self.id("tenant_id", tenant_id)?;
        if device_ids.len() > self.max_devices {
            return Err(LimitError {
                field: "device_ids",
                size: device_ids.len(),
                unit: "items",
                limit: self.max_devices,
                setting: "max_devices",
            });
        }
        device_ids.iter().try_for_each(|d| self.id("device_ids", d))
    }

    /// A `TenantSettings`.
    pub fn tenant(&self, tenant_id: &str, t: &TenantSettings) -> Result<(), LimitError> {
        self.id("tenant_id", tenant_id)?;
        let shadow = t.shadow.as_ref().and_then(|o| o.threshold);
        match t.overrides.threshold.max(shadow) {
            Some(n) if n > self.max_threshold => Err(LimitError {
                field: "threshold",
                size: n as usize,
                unit: "messages",
                limit: self.max_threshold as usize,
                setting: "max_threshold",
            }),
            _ => Ok(()),
        }
    }

    /// The largest record mailguard can write under these limits: a changelog state or a block
    /// carries at most `max_threshold` message ids of evidence plus a window of fewer than
    /// `max_threshold` (and a state the exemptions of its key); an alert lists at most
    /// `max_devices` device ids. The shadow's window (issue 23) is bounded like the live one.
    pub fn largest_output(&self) -> usize {
        let ids = 3 * self.max_threshold as usize * (self.max_id_bytes + 2);
        let devices = self.max_devices * (self.max_id_bytes + 2);
        let fields = 2 * self.max_mailbox_bytes + 4 * self.max_id_bytes + 2 * self.max_text_bytes;
        // A state also holds the exemptions of its key (pattern, tenant, command id, reason and
        // actor each, and a few bytes of times and tags).
        let exemption = self.max_mailbox_bytes + 2 * self.max_id_bytes + 2 * self.max_text_bytes;
        let exemptions = super::state::MAX_EXEMPTIONS_PER_KEY * (exemption + 32);
        // And its open incidents: 16 bytes per pending device, the tenant and a few numbers.
        let incident = 16 * self.max_devices + self.max_id_bytes + 64;
        let incidents = super::state::MAX_OPEN_INCIDENTS * incident;
        (ids + exemptions + incidents).max(devices) + fields + OUTPUT_OVERHEAD
    }

    /// Checks the limits against each other; the error names the setting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, v) in [
            ("max_mailbox_bytes", self.max_mailbox_bytes),
            ("max_id_bytes", self.max_id_bytes),
            ("max_text_bytes", self.max_text_bytes),
            ("max_threshold", self.max_threshold as usize),
        ] {
            if v == 0 {
                return Err((name, "must be >= 1".into()));
            }
        }
        if self.largest_output() > self.max_record_bytes {
            return Err((
                "max_record_bytes",
                format!(
                    "is {}, but the other limits allow an output of {} bytes: raise it (and the \
                     broker's message.max.bytes) or lower them",
                    self.max_record_bytes,
                    self.largest_output()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ActorRole, CommandKind};

    #[test]
    fn defaults_are_consistent_and_leave_room_under_the_broker_default() {
        let l = Limits::default();
        l.validate().unwrap();
        // About 320 kB with the shadow's window (issue 23): a third of the broker's 1 MB.
        assert!(l.largest_output() < 350_000, "{}", l.largest_output());
    }

    #[test]
    fn each_field_over_its_limit_is_named() {
        let l = Limits::default();
        let long = "x".repeat(257);
        let e = l.verdict(&long, "t", "a@b.c").unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `message_id` is 257 bytes, over the limit of 256 (limits.max_id_bytes)"
        );
        assert_eq!(
            l.verdict("m", "t", &"a".repeat(321)).unwrap_err().field,
            "mailbox"
        );
        let devices: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert_eq!(
            l.devices("o", "t", &devices).unwrap_err().setting,
            "max_devices"
        );
        let c = Command {
            command_id: "c".into(),
            mailbox: "a@b.c".into(),
            tenant_id: "t".into(),
            kind: CommandKind::SupportUnblock,
            actor: "a".into(),
            actor_role: ActorRole::Support,
            ticket: "x".repeat(1025),
            issued_at: 0,
            reason: None,
            expires_at: None,
        };
        assert_eq!(l.command(&c).unwrap_err().field, "ticket");
        let mut t = TenantSettings {
            mode: Default::default(),
            sync_security_enabled: true,
            endpoint_licence: true,
            overrides: Default::default(),
            shadow: None,
        };
        t.overrides.threshold = Some(101);
        assert_eq!(l.tenant("t", &t).unwrap_err().field, "threshold");
        t.overrides.threshold = Some(100);
        t.shadow = Some(crate::policy::PolicyOverrides {
            threshold: Some(101),
            ..Default::default()
        });
        assert_eq!(l.tenant("t", &t).unwrap_err().field, "threshold");
        t.shadow = None;
        l.tenant("t", &t).unwrap();
    }

    #[test]
    fn a_forwarded_record_fits_the_largest_record() {
        let l = Limits::default();
        l.forwarded(320, 900_000 - 320 - 512).unwrap();
        let e = l.forwarded(320, 900_000 - 320 - 511).unwrap_err();
        assert_eq!((e.field, e.setting), ("record", "max_record_bytes"));
    }

    #[test]
    fn limits_that_allow_an_oversized_output_are_refused() {
        let l = Limits {
            max_id_bytes: 10_000,
            ..Limits::default()
        };
        let (setting, why) = l.validate().unwrap_err();
        assert_eq!(setting, "max_record_bytes");
        assert!(why.contains("raise it"), "{why}");
    }
}
