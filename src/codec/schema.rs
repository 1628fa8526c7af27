//! The record types and their schemas, parsed once from `schemas/*.avsc` (the source of truth).

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;

use super::canonical;

/// One record type of SPEC §3. The schema of each is `schemas/<Name>.avsc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// `mail.outbound.verdicts` (gateway → mailguard).
    OutboundVerdict,
    /// `directory.mailboxes`.
    MailboxOwner,
    /// `directory.devices`.
    OwnerDevices,
    /// `tenant.settings`.
    TenantSettings,
    /// `mailguard.commands`.
    AdminCommand,
    /// `mailguard.blocks`.
    MailboxBlock,
    /// `mailguard.scan-requests`.
    ScanRequest,
    /// `mailguard.alerts`.
    Alert,
    /// `mailguard.events`.
    EventLogEntry,
    /// `mailguard.exemptions`.
    Exemption,
    /// `endpoint.scan-results` (endpoints → mailguard), re-keyed onto `mailguard.scan-results`.
    ScanResult,
}

/// Namespace of every record.
pub const NAMESPACE: &str = "mailguard.v1";

pub(crate) const COUNT: usize = 11;

const SOURCES: [&str; COUNT] = [
    include_str!("../../schemas/OutboundVerdict.avsc"),
    include_str!("../../schemas/MailboxOwner.avsc"),
    include_str!("../../schemas/OwnerDevices.avsc"),
    include_str!("../../schemas/TenantSettings.avsc"),
    include_str!("../../schemas/AdminCommand.avsc"),
    include_str!("../../schemas/MailboxBlock.avsc"),
    include_str!("../../schemas/ScanRequest.avsc"),
    include_str!("../../schemas/Alert.avsc"),
    include_str!("../../schemas/EventLogEntry.avsc"),
    include_str!("../../schemas/Exemption.avsc"),
    include_str!("../../schemas/ScanResult.avsc"),
];

/// Earlier versions of the schemas that mailguard itself wrote (`schemas/history/`): records of
/// an older mailguard in its own topics (read back by the API's view and the CLI) stay readable
/// with no registry and no `codec.writer_schemas_dir`.
pub(crate) const HISTORY: &[&str] = &[
    include_str!("../../schemas/history/EventLogEntry.v1.avsc"),
    include_str!("../../schemas/history/EventLogEntry.v2.avsc"),
    include_str!("../../schemas/history/EventLogEntry.v3.avsc"),
    include_str!("../../schemas/history/AdminCommand.v1.avsc"),
    include_str!("../../schemas/history/TenantSettings.v1.avsc"),
    include_str!("../../schemas/history/Alert.v1.avsc"),
    include_str!("../../schemas/history/EventLogEntry.v4.avsc"),
    include_str!("../../schemas/history/Alert.v2.avsc"),
    include_str!("../../schemas/history/EventLogEntry.v5.avsc"),
    include_str!("../../schemas/history/TenantSettings.v2.avsc"),
];

/// A parsed schema with its single-object fingerprint.
pub(crate) struct Parsed {
    pub(crate) schema: Schema,
    /// The spec's Parsing Canonical Form (see [`canonical`]).
    pub(crate) canonical: String,
    /// CRC-64-AVRO fingerprint of `canonical`, as the little-endian u64 that the 8 header bytes
    /// spell.
    pub(crate) fingerprint: u64,
    /// The fingerprint mailguard wrote before it computed the spec's form (apache-avro's
    /// `fingerprint::<Rabin>()`), still accepted on input for records written back then
    /// (e.g. in compacted topics).
    pub(crate) legacy_fingerprint: u64,
}

static PARSED: LazyLock<[Parsed; COUNT]> = LazyLock::new(|| {
    RecordType::ALL.map(|rt| {
        let schema = Schema::parse_str(SOURCES[rt as usize])
            .unwrap_or_else(|e| panic!("schemas/{}.avsc does not parse: {e}", rt.name()));
        let canonical = canonical::parsing_canonical_form(SOURCES[rt as usize])
            .unwrap_or_else(|e| panic!("schemas/{}.avsc: {e}", rt.name()));
        let legacy = schema.fingerprint::<Rabin>();
        let legacy: [u8; 8] = legacy.bytes[..]
            .try_into()
            .expect("a Rabin fingerprint has 8 bytes");
        Parsed {
            schema,
            fingerprint: canonical::crc64_avro(canonical.as_bytes()),
            canonical,
            legacy_fingerprint: u64::from_le_bytes(legacy),
        }
    })
});

impl RecordType {
    /// Every record type, in SPEC order.
    pub const ALL: [RecordType; COUNT] = [
        RecordType::OutboundVerdict,
        RecordType::MailboxOwner,
        RecordType::OwnerDevices,
        RecordType::TenantSettings,
        RecordType::AdminCommand,
        RecordType::MailboxBlock,
        RecordType::ScanRequest,
        RecordType::Alert,
        RecordType::EventLogEntry,
        RecordType::Exemption,
        RecordType::ScanResult,
    ];

    /// Every record type, in SPEC order.
    pub fn all() -> &'static [RecordType] {
        &Self::ALL
    }

    /// The record's short name (= schema name = file stem of its `.avsc`).
    pub fn name(&self) -> &'static str {
        match self {
            RecordType::OutboundVerdict => "OutboundVerdict",
            RecordType::MailboxOwner => "MailboxOwner",
            RecordType::OwnerDevices => "OwnerDevices",
            RecordType::TenantSettings => "TenantSettings",
            RecordType::AdminCommand => "AdminCommand",
            RecordType::MailboxBlock => "MailboxBlock",
            RecordType::ScanRequest => "ScanRequest",
            RecordType::Alert => "Alert",
            RecordType::EventLogEntry => "EventLogEntry",
            RecordType::Exemption => "Exemption",
            RecordType::ScanResult => "ScanResult",
        }
    }

    /// Fully qualified schema name, e.g. `mailguard.v1.OutboundVerdict`.
    pub fn full_name(&self) -> String {
        format!("{NAMESPACE}.{}", self.name())
    }

    /// The parsed schema (parsed once, on first use, from the embedded `.avsc`).
    pub fn schema(&self) -> &'static Schema {
        &PARSED[*self as usize].schema
    }

    /// The `.avsc` text as embedded at build time (e.g. to register it with a schema registry).
    pub fn schema_json(&self) -> &'static str {
        SOURCES[*self as usize]
    }

    /// The Parsing Canonical Form of the schema, per the Avro specification (as Java Avro and
    /// fastavro compute it; not apache-avro's `Schema::canonical_form`).
    pub fn canonical_form(&self) -> &'static str {
        &PARSED[*self as usize].canonical
    }

    /// CRC-64-AVRO fingerprint of the canonical form, as the little-endian u64 of the 8 bytes in
    /// the single-object header.
    pub fn fingerprint(&self) -> u64 {
        PARSED[*self as usize].fingerprint
    }

    /// The fingerprint mailguard used to write (apache-avro's canonical form); accepted on input
    /// as the embedded schema.
    pub fn legacy_fingerprint(&self) -> u64 {
        PARSED[*self as usize].legacy_fingerprint
    }

    /// The record type whose single-object fingerprint (or legacy fingerprint) this is.
    pub fn from_fingerprint(fp: u64) -> Option<RecordType> {
        Self::ALL
            .into_iter()
            .find(|rt| rt.fingerprint() == fp || rt.legacy_fingerprint() == fp)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`RecordType::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown record type {0:?} (expected one of OutboundVerdict, MailboxOwner, OwnerDevices, TenantSettings, AdminCommand, MailboxBlock, ScanRequest, Alert, EventLogEntry, Exemption, ScanResult)")]
pub struct UnknownRecordType(pub String);

impl FromStr for RecordType {
    type Err = UnknownRecordType;

    /// Accepts the short name (`OutboundVerdict`) or the full name (`mailguard.v1.OutboundVerdict`),
    /// case-sensitively, like Avro names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s
            .strip_prefix(NAMESPACE)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(s);
        Self::ALL
            .into_iter()
            .find(|rt| rt.name() == short)
            .ok_or_else(|| UnknownRecordType(s.to_string()))
    }
}
