//! Domain types of the policy core: what goes in, what comes out.
//!
//! These are deliberately *not* the Avro records. The codec maps between the wire (`schemas/*.avsc`)
//! and these types, so the core can be tested, benchmarked and replayed without any I/O, and so a
//! schema change is a codec change, not a policy change.

/// Milliseconds since the Unix epoch. Every time in the core is one of these, passed in.
pub type Millis = i64;

/// The gateway's verdict on one sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// A clean message: never counts.
    Clean,
    /// Spam: counts toward a trip.
    Spam,
    /// A virus: counts toward a trip.
    Virus,
}

impl VerdictKind {
    /// Whether this verdict counts toward the threshold (SPEC §1: SPAM or VIRUS).
    #[inline]
    pub fn is_offending(self) -> bool {
        matches!(self, VerdictKind::Spam | VerdictKind::Virus)
    }

    /// Upper-case wire name, also used as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Clean => "CLEAN",
            VerdictKind::Spam => "SPAM",
            VerdictKind::Virus => "VIRUS",
        }
    }
}

/// `OutboundVerdict` as the core sees it. `mailbox` is already lower-cased by the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Gateway message id; de-duplication key within a mailbox.
    pub message_id: String,
    /// Tenant of the mailbox.
    pub tenant_id: String,
    /// Sending mailbox, lower-cased.
    pub mailbox: String,
    /// Event time: when the gateway saw the message sent.
    pub sent_at: Millis,
    /// The verdict.
    pub verdict: VerdictKind,
}

/// Role of the actor who issued an admin command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorRole {
    /// Vendor support: may lift a permanent block.
    Support,
    /// Tenant administrator.
    Admin,
    /// Read-only user.
    Viewer,
}

impl ActorRole {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::Support => "SUPPORT",
            ActorRole::Admin => "ADMIN",
            ActorRole::Viewer => "VIEWER",
        }
    }
}

/// What an admin command asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Lift a permanent block and reset the strike count (SPEC §4).
    SupportUnblock,
    /// Add (or replace) the exemption of the key's pattern (SPEC §1.11 and §4).
    ExemptionPut,
    /// Remove the exemption of the key's pattern (SPEC §1.11 and §4).
    ExemptionDelete,
    /// Any other kind (e.g. `ADMIN_UNBLOCK`): always rejected, kept by name for the audit event.
    Other(String),
}

impl CommandKind {
    /// Upper-case wire name.
    pub fn as_str(&self) -> &str {
        match self {
            CommandKind::SupportUnblock => "SUPPORT_UNBLOCK",
            CommandKind::ExemptionPut => "EXEMPTION_PUT",
            CommandKind::ExemptionDelete => "EXEMPTION_DELETE",
            CommandKind::Other(s) => s,
        }
    }

    /// From the wire name; any symbol mailguard does not act on is kept as [`CommandKind::Other`].
    pub fn parse(s: String) -> Self {
        match s.as_str() {
            "SUPPORT_UNBLOCK" => CommandKind::SupportUnblock,
            "EXEMPTION_PUT" => CommandKind::ExemptionPut,
            "EXEMPTION_DELETE" => CommandKind::ExemptionDelete,
            _ => CommandKind::Other(s),
        }
    }
}

/// `AdminCommand` as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Unique id of the command; the `COMMAND_REJECTED` / `SUPPORT_UNBLOCK` event id derives from it.
    pub command_id: String,
    /// Target mailbox, lower-cased.
    pub mailbox: String,
    /// Tenant of the mailbox.
    pub tenant_id: String,
    /// What is asked.
    pub kind: CommandKind,
    /// Who asked.
    pub actor: String,
    /// With which role.
    pub actor_role: ActorRole,
    /// Support ticket reference, for the audit trail.
    pub ticket: String,
    /// When the command was issued.
    pub issued_at: Millis,
    /// Why (`EXEMPTION_PUT`: the exemption's reason, required).
    pub reason: Option<String>,
    /// `EXEMPTION_PUT`: when the exemption ends; `None` = never.
    pub expires_at: Option<Millis>,
}

/// An exemption in force (SPEC §1.11 and §4): a trip of a mailbox it matches blocks and scans nothing.
/// Held in the state of its pattern's key (exactly once, like a block) and published on
/// `mailguard.exemptions` (key `tenant/pattern`) for every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    /// Tenant it belongs to; it matches only that tenant's verdicts.
    pub tenant_id: String,
    /// `local@domain` (one mailbox) or `*@domain` (every mailbox of exactly that domain),
    /// lower-cased.
    pub pattern: String,
    /// Why it was granted.
    pub reason: String,
    /// Who granted it.
    pub actor: String,
    /// With which role.
    pub actor_role: ActorRole,
    /// The command that granted it (the ids of its expiry event derive from it).
    pub command_id: String,
    /// Processor time it was granted.
    pub created_at: Millis,
    /// When it ends (it never matches at or after this); `None` = never.
    pub expires_at: Option<Millis>,
}

impl Exemption {
    /// Whether it matches a verdict of `tenant_id` at processor time `now`.
    pub fn in_force(&self, tenant_id: &str, now: Millis) -> bool {
        self.tenant_id == tenant_id && self.expires_at.is_none_or(|e| now < e)
    }

    /// The key of its record on `mailguard.exemptions`: `tenant/pattern`.
    pub fn table_key(tenant_id: &str, pattern: &str) -> String {
        format!("{tenant_id}/{pattern}")
    }
}

/// Why a string is not an exemption pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not exactly one `@`.
    #[error("a pattern has exactly one '@'")]
    At,
    /// Nothing before or after the `@`.
    #[error("a pattern has a local part (or '*') and a domain")]
    Empty,
    /// `*` other than as the whole local part, or anywhere in the domain.
    #[error("'*' may only be the whole local part ('*@domain')")]
    Wildcard,
    /// Not lower-cased (patterns are keys: one spelling, one partition).
    #[error("a pattern is lower-cased")]
    NotNormalised,
}

/// Checks an exemption pattern: `local@domain` or `*@domain`, lower-cased.
pub fn check_pattern(p: &str) -> Result<(), PatternError> {
    let mut parts = p.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(PatternError::At);
    };
    if local.is_empty() || domain.is_empty() {
        return Err(PatternError::Empty);
    }
    if domain.contains('*') || (local.contains('*') && local != "*") {
        return Err(PatternError::Wildcard);
    }
    if super::Mailbox::new(p).as_str() != p {
        return Err(PatternError::NotNormalised);
    }
    Ok(())
}

/// The domain pattern (`*@domain`) of a mailbox, if it has a domain.
pub fn domain_pattern(mailbox: &str) -> Option<String> {
    mailbox.rsplit_once('@').map(|(_, d)| format!("*@{d}"))
}

/// A change to `mailguard.exemptions`: the exemption now in force under `tenant/pattern`, or a
/// tombstone (removed or expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptionChange {
    /// Tenant.
    pub tenant_id: String,
    /// Pattern.
    pub pattern: String,
    /// The exemption; `None` = tombstone.
    pub exemption: Option<Exemption>,
}

/// One input of the per-mailbox state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A verdict for this mailbox.
    Verdict(Verdict),
    /// An admin command for this mailbox.
    Command(Command),
    /// An endpoint's scan result, routed to the mailbox of the incident it answers.
    ScanResult(ScanResult),
    /// The passage of (wall-clock) time: expires a timed block whose `blocked_until` has passed.
    /// `mailbox` identifies the state; the tick carries no other data.
    Tick {
        /// The mailbox whose timer fired.
        mailbox: String,
    },
}

/// `MailboxOwner` from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Owner (user) id.
    pub owner_id: String,
    /// Tenant of the owner.
    pub tenant_id: String,
    /// Display name, if the directory has one.
    pub owner_name: Option<String>,
}

/// Per-tenant overrides of the policy numbers (SPEC §1, last paragraph). `None` = use default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyOverrides {
    /// Offending messages that trip.
    pub threshold: Option<u32>,
    /// Window span in ms.
    pub window_ms: Option<Millis>,
    /// Duration of the first block in ms (doubles per strike).
    pub base_block_ms: Option<Millis>,
    /// The strike that blocks permanently.
    pub permanent_strike: Option<u32>,
    /// Offending messages within the window that raise an early warning; `Some(0)` = none.
    pub warn_threshold: Option<u32>,
}

/// What a trip does for a tenant (`TenantSettings.mode`, `tenant_defaults.mode`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantMode {
    /// Block and scan (the default, and what records without the field read as).
    #[default]
    Enforce,
    /// Block and scan nothing; report what enforcement would have done.
    AlertOnly,
}

impl TenantMode {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantMode::Enforce => "ENFORCE",
            TenantMode::AlertOnly => "ALERT_ONLY",
        }
    }

    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ENFORCE" => TenantMode::Enforce,
            "ALERT_ONLY" => TenantMode::AlertOnly,
            _ => return None,
        })
    }
}

/// Tenant settings as resolved for the core (table value, or configured defaults when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    /// Synchronized Security on: scans are requested.
    pub sync_security_enabled: bool,
    /// The tenant has an endpoint licence.
    pub endpoint_licence: bool,
    /// Policy overrides for this tenant.
    pub overrides: PolicyOverrides,
    /// Enforce, or only report what enforcement would do.
    pub mode: TenantMode,
    /// Overrides of the shadow policy's numbers for this tenant (`TenantSettings.shadow`;
    /// `warn_threshold` is never set: a shadow warns nobody). `None` = the `[shadow]` numbers.
    pub shadow: Option<PolicyOverrides>,
}

/// What the core may ask of the outside world, read-only. Implemented by the adapters
/// (RocksDB / in-memory tables) and by plain maps in tests; consulted only on a trip or for the
/// tenant's policy, so a CLEAN verdict never causes a lookup.
pub trait Directory {
    /// The owner of a (lower-cased) mailbox, if the directory knows it.
    fn owner(&self, mailbox: &str) -> Option<Owner>;
    /// The device ids of an owner, if the directory knows them.
    fn devices(&self, owner_id: &str) -> Option<Vec<String>>;
    /// The settings of a tenant; the adapter returns the configured defaults when unknown.
    fn tenant(&self, tenant_id: &str) -> TenantSettings;
    /// The exemption of `tenant_id` under `pattern` (`*@domain`) as the exemptions table holds
    /// it (expired or not: the core checks). Consulted only on a trip.
    fn exemption(&self, _tenant_id: &str, _pattern: &str) -> Option<Exemption> {
        None
    }
    /// Whether the tenant holds as many exemptions as `limits.max_exemptions_per_tenant`
    /// allows (as of the exemptions table). Consulted only for an `EXEMPTION_PUT`.
    fn exemptions_full(&self, _tenant_id: &str) -> bool {
        false
    }
}

/// Block state as published on `mailguard.blocks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockState {
    /// Timed block in force.
    Blocked,
    /// Permanent block in force; only a support unblock ends it.
    PermanentlyBlocked,
    /// Not blocked (a block ended or was lifted).
    Unblocked,
}

impl BlockState {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockState::Blocked => "BLOCKED",
            BlockState::PermanentlyBlocked => "PERMANENTLY_BLOCKED",
            BlockState::Unblocked => "UNBLOCKED",
        }
    }
}

/// `MailboxBlock`: the latest block state of a mailbox (compacted topic, keyed by mailbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    /// Mailbox, lower-cased.
    pub mailbox: String,
    /// Tenant.
    pub tenant_id: String,
    /// State after this change.
    pub state: BlockState,
    /// Strike count after this change (0 after a support unblock).
    pub strike: u32,
    /// Largest `sent_at` of the evidence.
    pub blocked_at: Millis,
    /// End of a timed block; `None` when permanent.
    pub blocked_until: Option<Millis>,
    /// Incident this record belongs to.
    pub incident_id: String,
    /// The message ids that tripped it.
    pub evidence_message_ids: Vec<String>,
    /// Processor time of the change.
    pub updated_at: Millis,
}

/// `ScanRequest`: one per device of the owner, keyed by device id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    /// Deterministic id from incident + device.
    pub request_id: String,
    /// Incident id.
    pub incident_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Device to scan.
    pub device_id: String,
    /// Owner of the device.
    pub owner_id: String,
    /// Mailbox that tripped.
    pub mailbox: String,
    /// Processor time of the request.
    pub requested_at: Millis,
}

/// How an endpoint's scan of a device ended (`ScanResult.status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ScanStatus {
    /// Nothing found.
    Clean,
    /// Threats were found and removed.
    ThreatsRemoved,
    /// Threats were found and some remain.
    ThreatsRemaining,
    /// The scan did not complete.
    Failed,
    /// A status of a newer writer (the resolution default): not known to be clean.
    #[default]
    Unknown,
}

impl ScanStatus {
    /// Upper-case wire name, also a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Clean => "CLEAN",
            ScanStatus::ThreatsRemoved => "THREATS_REMOVED",
            ScanStatus::ThreatsRemaining => "THREATS_REMAINING",
            ScanStatus::Failed => "FAILED",
            ScanStatus::Unknown => "UNKNOWN",
        }
    }

    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "CLEAN" => ScanStatus::Clean,
            "THREATS_REMOVED" => ScanStatus::ThreatsRemoved,
            "THREATS_REMAINING" => ScanStatus::ThreatsRemaining,
            "FAILED" => ScanStatus::Failed,
            "UNKNOWN" => ScanStatus::Unknown,
            _ => return None,
        })
    }

    /// Whether the device is known to be free of the infection (`CLEAN`, `THREATS_REMOVED`).
    pub fn is_remediated(self) -> bool {
        matches!(self, ScanStatus::Clean | ScanStatus::ThreatsRemoved)
    }
}

/// `ScanResult` (topic `endpoint.scan-results`, key = device id): an endpoint's answer to a
/// [`ScanRequest`]. `mailbox` is echoed from the request; mailguard routes the result by it to
/// the partition of the incident's state (SPEC §2, DESIGN §2) and checks every other field
/// against that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// The request answered (`ScanRequest.request_id`).
    pub request_id: String,
    /// Its incident.
    pub incident_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Device scanned.
    pub device_id: String,
    /// Mailbox of the incident, lower-cased (echoed from the request; `None` from an endpoint
    /// that does not echo it: such a result cannot be routed).
    pub mailbox: Option<String>,
    /// How the scan ended.
    pub status: ScanStatus,
    /// Names of the threats found.
    pub threats: Vec<String>,
    /// When the scan started (endpoint time).
    pub started_at: Millis,
    /// When it completed (endpoint time).
    pub completed_at: Millis,
}

/// Why no scan was requested on a trip (SPEC §1 step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanSkipReason {
    /// Tenant has Synchronized Security off.
    SyncSecurityOff,
    /// Tenant has no endpoint licence.
    NoEndpointLicence,
    /// The directory does not know the mailbox's owner.
    OwnerUnknown,
    /// The owner has no devices.
    NoDevices,
}

impl ScanSkipReason {
    /// Upper-case wire name, also a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanSkipReason::SyncSecurityOff => "SYNC_SECURITY_OFF",
            ScanSkipReason::NoEndpointLicence => "NO_ENDPOINT_LICENCE",
            ScanSkipReason::OwnerUnknown => "OWNER_UNKNOWN",
            ScanSkipReason::NoDevices => "NO_DEVICES",
        }
    }
}

/// `Alert` for the tenant administrator, keyed by tenant id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Deterministic id from the incident.
    pub alert_id: String,
    /// Incident id.
    pub incident_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Mailbox that tripped.
    pub mailbox: String,
    /// Owner, when known.
    pub owner_id: Option<String>,
    /// Strike of this trip.
    pub strike: u32,
    /// Block state after the trip.
    pub state: BlockState,
    /// End of the block; `None` when permanent.
    pub blocked_until: Option<Millis>,
    /// Devices a scan was requested for.
    pub devices_scanned: Vec<String>,
    /// Why no scan was requested, if none was.
    pub scan_skipped_reason: Option<ScanSkipReason>,
    /// One human-readable line.
    pub summary: String,
    /// What the alert is about.
    pub kind: AlertKind,
}

/// What an [`Alert`] is about (`Alert.kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A block started (what alerts written before the field existed read as).
    #[default]
    Block,
    /// Early warning: the window holds `warn_threshold` offending messages; nothing is blocked.
    Warning,
    /// An `ALERT_ONLY` tenant's mailbox tripped: strike and `blocked_until` are what enforcement
    /// would have applied; nothing is blocked or scanned.
    SimulatedBlock,
    /// An exempt mailbox tripped; nothing is blocked or scanned.
    ExemptTrip,
    /// An incident ended: every device reported (or one is overdue); the summary says whether
    /// it is remediated or needs attention. The block is untouched.
    IncidentUpdate,
}

impl AlertKind {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Block => "BLOCK",
            AlertKind::Warning => "WARNING",
            AlertKind::SimulatedBlock => "SIMULATED_BLOCK",
            AlertKind::ExemptTrip => "EXEMPT_TRIP",
            AlertKind::IncidentUpdate => "INCIDENT_UPDATE",
        }
    }

    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "BLOCK" => AlertKind::Block,
            "WARNING" => AlertKind::Warning,
            "SIMULATED_BLOCK" => AlertKind::SimulatedBlock,
            "EXEMPT_TRIP" => AlertKind::ExemptTrip,
            "INCIDENT_UPDATE" => AlertKind::IncidentUpdate,
            _ => return None,
        })
    }
}

/// Kind of an event-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A timed block started.
    MailboxBlocked,
    /// A permanent block started.
    MailboxPermanentlyBlocked,
    /// A scan was requested for a device.
    ScanRequested,
    /// No scan was requested; `detail` has the reason.
    ScanSkipped,
    /// The administrator was alerted.
    AlertSent,
    /// A timed block ended by itself.
    MailboxUnblocked,
    /// Support lifted a permanent block.
    SupportUnblock,
    /// A command was rejected; `detail` says why.
    CommandRejected,
    /// Early warning: the window holds `warn_threshold` offending messages.
    MailboxWarned,
    /// An `ALERT_ONLY` tenant's mailbox tripped; `detail` has the strike and block length
    /// enforcement would have applied.
    TripSimulated,
    /// An exempt mailbox tripped: nothing was blocked or scanned; `detail` names the exemption.
    TripExempted,
    /// An exemption was added or replaced; `detail` names actor, role, reason and expiry.
    ExemptionAdded,
    /// An exemption was removed; `detail` names actor, role and reason.
    ExemptionRemoved,
    /// An exemption reached its `expires_at`.
    ExemptionExpired,
    /// A device's scan result arrived; `detail` has the device, status and threat count.
    ScanCompleted,
    /// Devices did not report within `scan.result_timeout_ms`; `detail` says how many.
    ScanOverdue,
    /// Every device of the incident reported `CLEAN` or `THREATS_REMOVED`.
    IncidentRemediated,
    /// A device reported `THREATS_REMAINING`, `FAILED` or `UNKNOWN`, or did not report in time.
    IncidentNeedsAttention,
    /// The shadow policy tripped: nothing was blocked, scanned or alerted; `trip` has the strike
    /// and block length it would have applied and its evidence.
    ShadowTrip,
}

impl EventKind {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MailboxBlocked => "MAILBOX_BLOCKED",
            EventKind::MailboxPermanentlyBlocked => "MAILBOX_PERMANENTLY_BLOCKED",
            EventKind::ScanRequested => "SCAN_REQUESTED",
            EventKind::ScanSkipped => "SCAN_SKIPPED",
            EventKind::AlertSent => "ALERT_SENT",
            EventKind::MailboxUnblocked => "MAILBOX_UNBLOCKED",
            EventKind::SupportUnblock => "SUPPORT_UNBLOCK",
            EventKind::CommandRejected => "COMMAND_REJECTED",
            EventKind::MailboxWarned => "MAILBOX_WARNED",
            EventKind::TripSimulated => "TRIP_SIMULATED",
            EventKind::TripExempted => "TRIP_EXEMPTED",
            EventKind::ExemptionAdded => "EXEMPTION_ADDED",
            EventKind::ExemptionRemoved => "EXEMPTION_REMOVED",
            EventKind::ExemptionExpired => "EXEMPTION_EXPIRED",
            EventKind::ScanCompleted => "SCAN_COMPLETED",
            EventKind::ScanOverdue => "SCAN_OVERDUE",
            EventKind::IncidentRemediated => "INCIDENT_REMEDIATED",
            EventKind::IncidentNeedsAttention => "INCIDENT_NEEDS_ATTENTION",
            EventKind::ShadowTrip => "SHADOW_TRIP",
        }
    }

    /// Every kind mailguard writes or reads, in schema order.
    pub const ALL: [EventKind; 19] = [
        EventKind::MailboxBlocked,
        EventKind::MailboxPermanentlyBlocked,
        EventKind::ScanRequested,
        EventKind::ScanSkipped,
        EventKind::AlertSent,
        EventKind::MailboxUnblocked,
        EventKind::SupportUnblock,
        EventKind::CommandRejected,
        EventKind::MailboxWarned,
        EventKind::TripSimulated,
        EventKind::TripExempted,
        EventKind::ExemptionAdded,
        EventKind::ExemptionRemoved,
        EventKind::ExemptionExpired,
        EventKind::ScanCompleted,
        EventKind::ScanOverdue,
        EventKind::IncidentRemediated,
        EventKind::IncidentNeedsAttention,
        EventKind::ShadowTrip,
    ];

    /// From the wire name (`UNKNOWN`, never written, is not a kind).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// `EventLogEntry`, keyed by mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogEntry {
    /// Deterministic id.
    pub event_id: String,
    /// Incident, when the event belongs to one.
    pub incident_id: Option<String>,
    /// Tenant.
    pub tenant_id: String,
    /// Mailbox.
    pub mailbox: String,
    /// What happened.
    pub kind: EventKind,
    /// When (processor time).
    pub at: Millis,
    /// Free-form detail (reason, actor and ticket, device id, ...).
    pub detail: String,
    /// `COMMAND_REJECTED`: why, as a code; `None` on every other kind.
    pub reason: Option<RejectCode>,
    /// The trip the event records, as data: on `MAILBOX_BLOCKED`,
    /// `MAILBOX_PERMANENTLY_BLOCKED`, `TRIP_SIMULATED`, `TRIP_EXEMPTED` and `SHADOW_TRIP`; `None`
    /// on every other kind.
    pub trip: Option<TripFacts>,
}

/// A trip as data (`EventLogEntry.trip`): enough to compare policies from the event log alone
/// (trips, strikes, the mailboxes blocked, the time from first offending message to block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripFacts {
    /// The strike the trip applies (would apply).
    pub strike: u32,
    /// Smallest `sent_at` of the evidence: the first offending message of the tripping run.
    pub first_sent_at: Millis,
    /// Largest `sent_at` of the evidence (`blocked_at`).
    pub blocked_at: Millis,
    /// Length of the block; `None` = permanent.
    pub block_ms: Option<Millis>,
    /// End of the block (`max(blocked_at, at) + block_ms`); `None` = permanent.
    pub blocked_until: Option<Millis>,
    /// The message ids of the evidence, in `sent_at` order.
    pub evidence_message_ids: Vec<String>,
    /// An exemption of the mailbox was in force: the trip would have blocked nothing (and
    /// advances no ladder); strike and length are what it would have applied without it.
    pub exempt: bool,
}

/// Why a command was rejected, as data (`EventLogEntry.reason`; the API reports it as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Kind other than `SUPPORT_UNBLOCK`.
    UnknownKind,
    /// The actor's role may not do this.
    RoleNotAllowed,
    /// A timed block is in force: nothing can end it early.
    TimedBlock,
    /// The mailbox is not (permanently) blocked.
    NotBlocked,
    /// A reason of a newer writer (the resolution default; never written).
    Other,
    /// An exemption command that is malformed: bad pattern, no reason, or an expiry not in the
    /// future.
    InvalidExemption,
    /// The tenant holds `limits.max_exemptions_per_tenant` exemptions already (or the pattern
    /// is held by the most tenants one pattern may have).
    ExemptionLimit,
    /// `EXEMPTION_DELETE` of a pattern the tenant holds no exemption for.
    NotExempt,
}

impl RejectCode {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::UnknownKind => "UNKNOWN_KIND",
            RejectCode::RoleNotAllowed => "ROLE_NOT_ALLOWED",
            RejectCode::TimedBlock => "TIMED_BLOCK",
            RejectCode::NotBlocked => "NOT_BLOCKED",
            RejectCode::Other => "OTHER",
            RejectCode::InvalidExemption => "INVALID_EXEMPTION",
            RejectCode::ExemptionLimit => "EXEMPTION_LIMIT",
            RejectCode::NotExempt => "NOT_EXEMPT",
        }
    }

    /// From the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "UNKNOWN_KIND" => RejectCode::UnknownKind,
            "ROLE_NOT_ALLOWED" => RejectCode::RoleNotAllowed,
            "TIMED_BLOCK" => RejectCode::TimedBlock,
            "NOT_BLOCKED" => RejectCode::NotBlocked,
            "OTHER" => RejectCode::Other,
            "INVALID_EXEMPTION" => RejectCode::InvalidExemption,
            "EXEMPTION_LIMIT" => RejectCode::ExemptionLimit,
            "NOT_EXEMPT" => RejectCode::NotExempt,
            _ => return None,
        })
    }
}

/// A record the pipeline must publish, in order, in the same transaction as the state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// To `mailguard.blocks`.
    Block(BlockRecord),
    /// To `mailguard.scan-requests`.
    Scan(ScanRequest),
    /// To `mailguard.alerts`.
    Alert(Alert),
    /// To `mailguard.events`.
    Event(EventLogEntry),
    /// To `mailguard.exemptions` (an upsert or a tombstone).
    Exemption(ExemptionChange),
}

/// What happened to one input, for metrics and logs (never published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// CLEAN (never counts).
    NotOffending,
    /// Offending and counted into the window (no trip).
    Counted,
    /// Offending and counted, and it tripped a block with this strike (6 = permanent by default).
    Tripped {
        /// Strike number of the new block.
        strike: u32,
        /// Whether the new block is permanent.
        permanent: bool,
    },
    /// Same `message_id` already counted for this mailbox.
    Duplicate,
    /// Older than the allowed lateness: dropped from counting.
    Late,
    /// Offending but the mailbox was blocked (or the verdict predates the end of the last block).
    IgnoredWhileBlocked,
    /// A timed block expired (tick or lazily on another input).
    Unblocked,
    /// A support unblock lifted a permanent block.
    SupportUnblocked,
    /// A command was rejected.
    CommandRejected,
    /// A tick that found nothing to do.
    Idle,
    /// Offending and counted, and it tripped an `ALERT_ONLY` tenant's would-be ladder: nothing
    /// blocked (`mailguard_simulated_trips_total`).
    SimulatedTrip {
        /// Strike enforcement would have applied.
        strike: u32,
        /// Whether that block would have been permanent.
        permanent: bool,
    },
    /// Offending and counted, and the window reached the warning threshold for the first time.
    Warned,
    /// Offending and counted, and it tripped, but an exemption matched: nothing blocked or
    /// scanned (`mailguard_exempt_trips_total`).
    ExemptTrip,
    /// An exemption was added or replaced.
    ExemptionAdded,
    /// An exemption was removed.
    ExemptionRemoved,
    /// An exemption reached its expiry.
    ExemptionExpired,
    /// A scan result of a device an open incident waited for.
    ScanCompleted,
    /// A scan result that changes nothing (`mailguard_scan_results_ignored_total{reason}`).
    ScanResultIgnored(ScanIgnored),
    /// The shadow policy tripped (`mailguard_shadow_trips_total`): event `SHADOW_TRIP` only.
    ShadowTrip {
        /// Strike the shadow would have applied.
        strike: u32,
        /// Whether that block would have been permanent.
        permanent: bool,
        /// An exemption was in force (the shadow would have blocked nothing).
        exempt: bool,
    },
    /// An incident ended: remediated, or it needs attention (`overdue`: a device did not report
    /// in time).
    IncidentClosed {
        /// Every device reported `CLEAN` or `THREATS_REMOVED`.
        remediated: bool,
        /// Closed because of the result deadline (or the bound on open incidents).
        overdue: bool,
    },
}

/// Why a scan result changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanIgnored {
    /// No open incident of the mailbox has this request (never asked, already closed, or ids
    /// that disagree).
    UnknownRequest,
    /// The incident belongs to another tenant.
    OtherTenant,
    /// The device of this request already reported.
    Duplicate,
}

impl ScanIgnored {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanIgnored::UnknownRequest => "unknown_request",
            ScanIgnored::OtherTenant => "other_tenant",
            ScanIgnored::Duplicate => "duplicate",
        }
    }
}

/// Result of one step: the records to publish and what happened, plus whether `sent_at` was clamped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepResult {
    /// Records to publish, in order.
    pub effects: Vec<Effect>,
    /// Outcomes, in order (a verdict may first expire a block, then count).
    pub outcomes: Vec<Outcome>,
    /// The verdict's `sent_at` lay too far in the future and was clamped to `now`.
    pub clamped: bool,
    /// The state changed and must be persisted (and written to the changelog).
    pub state_changed: bool,
}
