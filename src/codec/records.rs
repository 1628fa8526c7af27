//! Mapping between apache-avro generic values (shaped by `schemas/*.avsc`) and the domain types.
//!
//! Used for every record except the hot-path decode of `OutboundVerdict` (see `fast.rs`), and as
//! the reference implementation the fast decoder is tested against.

use apache_avro::schema::Schema;
use apache_avro::types::Value;

use super::{CodecError, RecordType};
use crate::policy::{
    ActorRole, Alert, AlertKind, BlockRecord, BlockState, Command, CommandKind, EventKind,
    EventLogEntry, Exemption, Mailbox, Millis, Owner, PolicyOverrides, RejectCode, ScanRequest,
    ScanResult, ScanSkipReason, ScanStatus, TenantMode, TenantSettings, TripFacts, Verdict,
    VerdictKind,
};

/// A body's `mailbox`, normalised (see [`Mailbox`]).
fn lower(s: &str) -> String {
    Mailbox::new(s).into_string()
}

/// `OwnerDevices`: every device assigned to an owner (table value of `directory.devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerDevices {
    /// Owner (user) id; the record key.
    pub owner_id: String,
    /// Tenant of the owner.
    pub tenant_id: String,
    /// Device ids (may be empty).
    pub device_ids: Vec<String>,
}

/// Email licence of a tenant (`EmailLicence` enum of `TenantSettings.avsc`). Informational: the
/// policy does not depend on it, but it is kept so `tail`/`produce` and a re-encode lose nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailLicence {
    /// `STANDARD`.
    Standard,
    /// `ADVANCED`.
    Advanced,
    /// `NONE`: no email licence.
    Unlicensed,
}

impl EmailLicence {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailLicence::Standard => "STANDARD",
            EmailLicence::Advanced => "ADVANCED",
            EmailLicence::Unlicensed => "NONE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "STANDARD" => EmailLicence::Standard,
            "ADVANCED" => EmailLicence::Advanced,
            "NONE" => EmailLicence::Unlicensed,
            _ => return None,
        })
    }
}

/// A whole `TenantSettings` record: the key, the settings the core uses, and the email licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// Tenant id; the record key.
    pub tenant_id: String,
    /// Settings as the core sees them.
    pub settings: TenantSettings,
    /// Email licence (informational).
    pub email_licence: EmailLicence,
}

// ---------------------------------------------------------------------------------------------
// Schema look-ups (enum indices, union branches), all derived from the parsed schema.

fn field_schema(rt: RecordType, name: &str) -> Result<&'static Schema, CodecError> {
    match rt.schema() {
        Schema::Record(r) => r
            .lookup
            .get(name)
            .map(|&i| &r.fields[i].schema)
            .ok_or_else(|| CodecError::invalid(name, format!("no such field in {rt}"))),
        _ => Err(CodecError::invalid(name, format!("{rt} is not a record"))),
    }
}

/// The enum schema of a field, looking through a `["null", enum]` union.
fn enum_symbols(schema: &'static Schema) -> Option<&'static [String]> {
    match schema {
        Schema::Enum(e) => Some(&e.symbols),
        Schema::Union(u) => u.variants().iter().find_map(enum_symbols),
        _ => None,
    }
}

fn enum_value(rt: RecordType, field: &str, symbol: &str) -> Result<Value, CodecError> {
    let symbols = enum_symbols(field_schema(rt, field)?)
        .ok_or_else(|| CodecError::invalid(field, "not an enum"))?;
    match symbols.iter().position(|s| s == symbol) {
        Some(i) => Ok(Value::Enum(i as u32, symbol.to_string())),
        None => Err(CodecError::InvalidEnumSymbol {
            field: field.to_string(),
            symbol: symbol.to_string(),
        }),
    }
}

/// Wraps a value into the right branch of an optional (`["null", T]`) field.
fn optional(rt: RecordType, field: &str, v: Option<Value>) -> Result<Value, CodecError> {
    let Schema::Union(u) = field_schema(rt, field)? else {
        return Err(CodecError::invalid(field, "not a union"));
    };
    let is_null = v.is_none();
    let idx = u
        .variants()
        .iter()
        .position(|s| matches!(s, Schema::Null) == is_null)
        .ok_or_else(|| CodecError::invalid(field, "no matching union branch"))?;
    Ok(Value::Union(idx as u32, Box::new(v.unwrap_or(Value::Null))))
}

fn int_of(field: &'static str, v: u32) -> Result<Value, CodecError> {
    i32::try_from(v)
        .map(Value::Int)
        .map_err(|_| CodecError::invalid(field, format!("{v} does not fit an Avro int")))
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// Builds a record value field by field (names must be the schema's; order is the schema's).
struct Builder {
    rt: RecordType,
    fields: Vec<(String, Value)>,
}

impl Builder {
    fn new(rt: RecordType) -> Self {
        Builder {
            rt,
            fields: Vec::with_capacity(12),
        }
    }
    fn put(mut self, name: &str, v: Value) -> Self {
        self.fields.push((name.to_string(), v));
        self
    }
    fn str(self, name: &str, s: &str) -> Self {
        self.put(name, Value::String(s.to_string()))
    }
    fn ts(self, name: &str, t: Millis) -> Self {
        self.put(name, Value::TimestampMillis(t))
    }
    fn opt(self, name: &str, v: Option<Value>) -> Result<Self, CodecError> {
        let v = optional(self.rt, name, v)?;
        Ok(self.put(name, v))
    }
    fn sym(self, name: &str, symbol: &str) -> Result<Self, CodecError> {
        let v = enum_value(self.rt, name, symbol)?;
        Ok(self.put(name, v))
    }
    fn finish(self) -> Value {
        Value::Record(self.fields)
    }
}

/// Reads fields out of a decoded record value by name.
pub(crate) struct Fields {
    rt: RecordType,
    fields: Vec<(String, Value)>,
}

fn type_err(field: &str, want: &str, got: &Value) -> CodecError {
    CodecError::invalid(field, format!("expected {want}, got {got:?}"))
}

impl Fields {
    pub(crate) fn new(rt: RecordType, v: Value) -> Result<Self, CodecError> {
        match v {
            Value::Record(fields) => Ok(Fields { rt, fields }),
            other => Err(CodecError::Avro {
                record: rt,
                message: format!("expected a record, got {other:?}"),
            }),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => Ok(std::mem::replace(v, Value::Null)),
            None => Err(CodecError::invalid(
                name,
                format!("missing from {}", self.rt.name()),
            )),
        }
    }

    fn opt(&mut self, name: &str) -> Result<Option<Value>, CodecError> {
        Ok(match self.take(name)? {
            Value::Union(_, b) => match *b {
                Value::Null => None,
                v => Some(v),
            },
            Value::Null => None,
            v => Some(v),
        })
    }

    fn string(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(type_err(name, "string", &other)),
        }
    }

    fn required(&mut self, name: &'static str) -> Result<String, CodecError> {
        let s = self.string(name)?;
        if s.is_empty() {
            return Err(CodecError::EmptyField(name));
        }
        Ok(s)
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match self.opt(name)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_err(name, "string", &other)),
        }
    }

    fn long_of(name: &str, v: Value) -> Result<i64, CodecError> {
        match v {
            Value::Long(x) | Value::TimestampMillis(x) => Ok(x),
            Value::Int(x) => Ok(i64::from(x)),
            other => Err(type_err(name, "long", &other)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, CodecError> {
        let v = self.take(name)?;
        Self::long_of(name, v)
    }

    fn opt_long(&mut self, name: &str) -> Result<Option<i64>, CodecError> {
        self.opt(name)?.map(|v| Self::long_of(name, v)).transpose()
    }

    fn u32_of(name: &str, v: Value) -> Result<u32, CodecError> {
        match v {
            Value::Int(x) => {
                u32::try_from(x).map_err(|_| CodecError::invalid(name, format!("{x} is negative")))
            }
            other => Err(type_err(name, "int", &other)),
        }
    }

    fn u32(&mut self, name: &str) -> Result<u32, CodecError> {
        let v = self.take(name)?;
        Self::u32_of(name, v)
    }

    fn opt_u32(&mut self, name: &str) -> Result<Option<u32>, CodecError> {
        self.opt(name)?.map(|v| Self::u32_of(name, v)).transpose()
    }

    fn bool(&mut self, name: &str) -> Result<bool, CodecError> {
        match self.take(name)? {
            Value::Boolean(b) => Ok(b),
            other => Err(type_err(name, "boolean", &other)),
        }
    }

    fn symbol(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            other => Err(type_err(name, "enum", &other)),
        }
    }

    fn opt_symbol(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match self.opt(name)? {
            None => Ok(None),
            Some(Value::Enum(_, s)) => Ok(Some(s)),
            Some(other) => Err(type_err(name, "enum", &other)),
        }
    }

    fn strings(&mut self, name: &str) -> Result<Vec<String>, CodecError> {
        match self.take(name)? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(type_err(name, "string", &other)),
                })
                .collect(),
            other => Err(type_err(name, "array", &other)),
        }
    }
}

fn bad_symbol(field: &str, symbol: String) -> CodecError {
    CodecError::InvalidEnumSymbol {
        field: field.to_string(),
        symbol,
    }
}

// ---------------------------------------------------------------------------------------------
// Per record: domain → Value, Value → domain.

pub(crate) fn verdict_to_value(v: &Verdict) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::OutboundVerdict)
        .str("message_id", &v.message_id)
        .str("tenant_id", &v.tenant_id)
        .str("mailbox", &v.mailbox)
        .ts("sent_at", v.sent_at)
        .sym("verdict", v.verdict.as_str())?
        .opt("recipient_count", None)?
        .opt("gateway_id", None)?
        .finish())
}

pub(crate) fn verdict_from_value(v: Value) -> Result<Verdict, CodecError> {
    let mut f = Fields::new(RecordType::OutboundVerdict, v)?;
    let message_id = f.required("message_id")?;
    let tenant_id = f.required("tenant_id")?;
    let mailbox = lower(&f.required("mailbox")?);
    let sent_at = f.long("sent_at")?;
    let verdict = match f.symbol("verdict")?.as_str() {
        "SPAM" => VerdictKind::Spam,
        "VIRUS" => VerdictKind::Virus,
        // SPEC §1: CLEAN and any other value never count.
        _ => VerdictKind::Clean,
    };
    Ok(Verdict {
        message_id,
        tenant_id,
        mailbox,
        sent_at,
        verdict,
    })
}

pub(crate) fn command_to_value(c: &Command) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::AdminCommand)
        .str("command_id", &c.command_id)
        .str("mailbox", &c.mailbox)
        .str("tenant_id", &c.tenant_id)
        .sym("kind", c.kind.as_str())?
        .str("actor", &c.actor)
        .sym("actor_role", c.actor_role.as_str())?
        .str("ticket", &c.ticket)
        .ts("issued_at", c.issued_at)
        .opt("reason", c.reason.clone().map(Value::String))?
        .opt("expires_at", c.expires_at.map(Value::TimestampMillis))?
        .finish())
}

pub(crate) fn command_from_value(v: Value) -> Result<Command, CodecError> {
    let mut f = Fields::new(RecordType::AdminCommand, v)?;
    let command_id = f.required("command_id")?;
    let mailbox = lower(&f.required("mailbox")?);
    let tenant_id = f.required("tenant_id")?;
    let kind = CommandKind::parse(f.symbol("kind")?);
    let actor = f.string("actor")?;
    let actor_role = role(f.symbol("actor_role")?)?;
    let ticket = f.string("ticket")?;
    let issued_at = f.long("issued_at")?;
    let reason = f.opt_string("reason")?;
    let expires_at = f.opt_long("expires_at")?;
    Ok(Command {
        command_id,
        mailbox,
        tenant_id,
        kind,
        actor,
        actor_role,
        ticket,
        issued_at,
        reason,
        expires_at,
    })
}

fn role(s: String) -> Result<ActorRole, CodecError> {
    Ok(match s.as_str() {
        "SUPPORT" => ActorRole::Support,
        "ADMIN" => ActorRole::Admin,
        "VIEWER" => ActorRole::Viewer,
        _ => return Err(bad_symbol("actor_role", s)),
    })
}

pub(crate) fn exemption_to_value(e: &Exemption) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::Exemption)
        .str("tenant_id", &e.tenant_id)
        .str("pattern", &e.pattern)
        .str("reason", &e.reason)
        .str("actor", &e.actor)
        .sym("actor_role", e.actor_role.as_str())?
        .str("command_id", &e.command_id)
        .ts("created_at", e.created_at)
        .opt("expires_at", e.expires_at.map(Value::TimestampMillis))?
        .finish())
}

/// An `Exemption`; the pattern lower-cased, tenant and pattern non-empty. A role this reader
/// does not know (`UNKNOWN`) is an error: mailguard alone writes the topic.
pub(crate) fn exemption_from_value(v: Value) -> Result<Exemption, CodecError> {
    let mut f = Fields::new(RecordType::Exemption, v)?;
    Ok(Exemption {
        tenant_id: f.required("tenant_id")?,
        pattern: lower(&f.required("pattern")?),
        reason: f.string("reason")?,
        actor: f.string("actor")?,
        actor_role: role(f.symbol("actor_role")?)?,
        command_id: f.string("command_id")?,
        created_at: f.long("created_at")?,
        expires_at: f.opt_long("expires_at")?,
    })
}

pub(crate) fn owner_to_value(mailbox: &str, o: &Owner) -> Result<Value, CodecError> {
    Builder::new(RecordType::MailboxOwner)
        .str("mailbox", mailbox)
        .str("tenant_id", &o.tenant_id)
        .str("owner_id", &o.owner_id)
        .opt("owner_name", o.owner_name.clone().map(Value::String))
        .map(Builder::finish)
}

pub(crate) fn owner_from_value(v: Value) -> Result<(String, Owner), CodecError> {
    let mut f = Fields::new(RecordType::MailboxOwner, v)?;
    let mailbox = lower(&f.required("mailbox")?);
    let tenant_id = f.required("tenant_id")?;
    let owner_id = f.required("owner_id")?;
    let owner_name = f.opt_string("owner_name")?;
    Ok((
        mailbox,
        Owner {
            owner_id,
            tenant_id,
            owner_name,
        },
    ))
}

pub(crate) fn devices_to_value(d: &OwnerDevices) -> Value {
    Builder::new(RecordType::OwnerDevices)
        .str("owner_id", &d.owner_id)
        .str("tenant_id", &d.tenant_id)
        .put("device_ids", strings(&d.device_ids))
        .finish()
}

pub(crate) fn devices_from_value(v: Value) -> Result<OwnerDevices, CodecError> {
    let mut f = Fields::new(RecordType::OwnerDevices, v)?;
    let owner_id = f.required("owner_id")?;
    let tenant_id = f.string("tenant_id")?;
    let device_ids = f.strings("device_ids")?;
    if device_ids.iter().any(String::is_empty) {
        return Err(CodecError::EmptyField("device_ids item"));
    }
    Ok(OwnerDevices {
        owner_id,
        tenant_id,
        device_ids,
    })
}

pub(crate) fn tenant_to_value(t: &TenantRecord) -> Result<Value, CodecError> {
    let o = &t.settings.overrides;
    let b = Builder::new(RecordType::TenantSettings)
        .str("tenant_id", &t.tenant_id)
        .put(
            "sync_security_enabled",
            Value::Boolean(t.settings.sync_security_enabled),
        )
        .put(
            "endpoint_licence",
            Value::Boolean(t.settings.endpoint_licence),
        )
        .sym("email_licence", t.email_licence.as_str())?;
    let threshold = o.threshold.map(|x| int_of("threshold", x)).transpose()?;
    let permanent = o
        .permanent_strike
        .map(|x| int_of("permanent_strike", x))
        .transpose()?;
    let warn = o
        .warn_threshold
        .map(|x| int_of("warn_threshold", x))
        .transpose()?;
    Ok(b.opt("threshold", threshold)?
        .opt("window_ms", o.window_ms.map(Value::Long))?
        .opt("base_block_ms", o.base_block_ms.map(Value::Long))?
        .opt("permanent_strike", permanent)?
        .sym("mode", t.settings.mode.as_str())?
        .opt("warn_threshold", warn)?
        .opt(
            "shadow",
            t.settings
                .shadow
                .as_ref()
                .map(shadow_overrides_to_value)
                .transpose()?,
        )?
        .finish())
}

/// `TenantSettings.shadow` (a record inside the union; field order is the schema's).
fn shadow_overrides_to_value(o: &PolicyOverrides) -> Result<Value, CodecError> {
    let threshold = o.threshold.map(|x| int_of("shadow.threshold", x));
    let permanent = o
        .permanent_strike
        .map(|x| int_of("shadow.permanent_strike", x));
    Ok(Value::Record(vec![
        ("threshold".into(), nullable(threshold.transpose()?)),
        ("window_ms".into(), nullable(o.window_ms.map(Value::Long))),
        (
            "base_block_ms".into(),
            nullable(o.base_block_ms.map(Value::Long)),
        ),
        ("permanent_strike".into(), nullable(permanent.transpose()?)),
    ]))
}

fn shadow_overrides_from_value(v: Value) -> Result<PolicyOverrides, CodecError> {
    let mut f = Fields::new(RecordType::TenantSettings, v)?;
    let o = PolicyOverrides {
        threshold: f.opt_u32("threshold")?,
        window_ms: f.opt_long("window_ms")?,
        base_block_ms: f.opt_long("base_block_ms")?,
        permanent_strike: f.opt_u32("permanent_strike")?,
        warn_threshold: None,
    };
    validate_overrides(&o)?;
    Ok(o)
}

pub(crate) fn tenant_from_value(v: Value) -> Result<TenantRecord, CodecError> {
    let mut f = Fields::new(RecordType::TenantSettings, v)?;
    let tenant_id = f.required("tenant_id")?;
    let sync_security_enabled = f.bool("sync_security_enabled")?;
    let endpoint_licence = f.bool("endpoint_licence")?;
    let lic = f.symbol("email_licence")?;
    let email_licence =
        EmailLicence::parse(&lic).ok_or_else(|| bad_symbol("email_licence", lic))?;
    let overrides = PolicyOverrides {
        threshold: f.opt_u32("threshold")?,
        window_ms: f.opt_long("window_ms")?,
        base_block_ms: f.opt_long("base_block_ms")?,
        permanent_strike: f.opt_u32("permanent_strike")?,
        warn_threshold: f.opt_u32("warn_threshold")?,
    };
    let m = f.symbol("mode")?;
    let mode = TenantMode::parse(&m).ok_or_else(|| bad_symbol("mode", m))?;
    validate_overrides(&overrides)?;
    let shadow = f
        .opt("shadow")?
        .map(shadow_overrides_from_value)
        .transpose()?;
    Ok(TenantRecord {
        tenant_id,
        settings: TenantSettings {
            sync_security_enabled,
            endpoint_licence,
            overrides,
            mode,
            shadow,
        },
        email_licence,
    })
}

fn validate_overrides(o: &PolicyOverrides) -> Result<(), CodecError> {
    if o.threshold == Some(0) {
        return Err(CodecError::invalid("threshold", "must be >= 1"));
    }
    if o.permanent_strike == Some(0) {
        return Err(CodecError::invalid("permanent_strike", "must be >= 1"));
    }
    if let Some(w) = o.window_ms.filter(|&w| w < 0) {
        return Err(CodecError::invalid("window_ms", format!("{w} is negative")));
    }
    if let Some(b) = o.base_block_ms.filter(|&b| b <= 0) {
        return Err(CodecError::invalid(
            "base_block_ms",
            format!("{b} must be > 0"),
        ));
    }
    Ok(())
}

fn block_state(field: &str, s: String) -> Result<BlockState, CodecError> {
    Ok(match s.as_str() {
        "BLOCKED" => BlockState::Blocked,
        "PERMANENTLY_BLOCKED" => BlockState::PermanentlyBlocked,
        "UNBLOCKED" => BlockState::Unblocked,
        _ => return Err(bad_symbol(field, s)),
    })
}

pub(crate) fn block_to_value(b: &BlockRecord) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::MailboxBlock)
        .str("mailbox", &b.mailbox)
        .str("tenant_id", &b.tenant_id)
        .sym("state", b.state.as_str())?
        .put("strike", int_of("strike", b.strike)?)
        .ts("blocked_at", b.blocked_at)
        .opt("blocked_until", b.blocked_until.map(Value::TimestampMillis))?
        .str("incident_id", &b.incident_id)
        .put("evidence_message_ids", strings(&b.evidence_message_ids))
        .ts("updated_at", b.updated_at)
        .finish())
}

pub(crate) fn block_from_value(v: Value) -> Result<BlockRecord, CodecError> {
    let mut f = Fields::new(RecordType::MailboxBlock, v)?;
    Ok(BlockRecord {
        mailbox: f.string("mailbox")?,
        tenant_id: f.string("tenant_id")?,
        state: block_state("state", f.symbol("state")?)?,
        strike: f.u32("strike")?,
        blocked_at: f.long("blocked_at")?,
        blocked_until: f.opt_long("blocked_until")?,
        incident_id: f.string("incident_id")?,
        evidence_message_ids: f.strings("evidence_message_ids")?,
        updated_at: f.long("updated_at")?,
    })
}

pub(crate) fn scan_to_value(s: &ScanRequest) -> Value {
    Builder::new(RecordType::ScanRequest)
        .str("request_id", &s.request_id)
        .str("incident_id", &s.incident_id)
        .str("tenant_id", &s.tenant_id)
        .str("device_id", &s.device_id)
        .str("owner_id", &s.owner_id)
        .str("mailbox", &s.mailbox)
        .ts("requested_at", s.requested_at)
        .finish()
}

pub(crate) fn scan_from_value(v: Value) -> Result<ScanRequest, CodecError> {
    let mut f = Fields::new(RecordType::ScanRequest, v)?;
    Ok(ScanRequest {
        request_id: f.string("request_id")?,
        incident_id: f.string("incident_id")?,
        tenant_id: f.string("tenant_id")?,
        device_id: f.string("device_id")?,
        owner_id: f.string("owner_id")?,
        mailbox: f.string("mailbox")?,
        requested_at: f.long("requested_at")?,
    })
}

pub(crate) fn alert_to_value(a: &Alert) -> Result<Value, CodecError> {
    let reason = a
        .scan_skipped_reason
        .map(|r| enum_value(RecordType::Alert, "scan_skipped_reason", r.as_str()))
        .transpose()?;
    Ok(Builder::new(RecordType::Alert)
        .str("alert_id", &a.alert_id)
        .str("incident_id", &a.incident_id)
        .str("tenant_id", &a.tenant_id)
        .str("mailbox", &a.mailbox)
        .opt("owner_id", a.owner_id.clone().map(Value::String))?
        .put("strike", int_of("strike", a.strike)?)
        .sym("state", a.state.as_str())?
        .opt("blocked_until", a.blocked_until.map(Value::TimestampMillis))?
        .put("devices_scanned", strings(&a.devices_scanned))
        .opt("scan_skipped_reason", reason)?
        .str("summary", &a.summary)
        .sym("kind", a.kind.as_str())?
        .finish())
}

pub(crate) fn scan_result_to_value(r: &ScanResult) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::ScanResult)
        .str("request_id", &r.request_id)
        .str("incident_id", &r.incident_id)
        .str("tenant_id", &r.tenant_id)
        .str("device_id", &r.device_id)
        .sym("status", r.status.as_str())?
        .put("threats", strings(&r.threats))
        .ts("started_at", r.started_at)
        .ts("completed_at", r.completed_at)
        .opt("mailbox", r.mailbox.clone().map(Value::String))?
        .finish())
}

/// A `ScanResult`: ids non-empty, the mailbox (when given) lower-cased. A status of a newer
/// writer reads as `UNKNOWN` (the schema default), never as clean.
pub(crate) fn scan_result_from_value(v: Value) -> Result<ScanResult, CodecError> {
    let mut f = Fields::new(RecordType::ScanResult, v)?;
    Ok(ScanResult {
        request_id: f.required("request_id")?,
        incident_id: f.required("incident_id")?,
        tenant_id: f.required("tenant_id")?,
        device_id: f.required("device_id")?,
        status: {
            let s = f.symbol("status")?;
            ScanStatus::parse(&s).ok_or_else(|| bad_symbol("status", s))?
        },
        threats: f.strings("threats")?,
        started_at: f.long("started_at")?,
        completed_at: f.long("completed_at")?,
        mailbox: f.opt_string("mailbox")?.map(|m| lower(&m)),
    })
}

pub(crate) fn alert_from_value(v: Value) -> Result<Alert, CodecError> {
    let mut f = Fields::new(RecordType::Alert, v)?;
    let scan_skipped_reason = f
        .opt_symbol("scan_skipped_reason")?
        .map(|s| {
            Ok(match s.as_str() {
                "SYNC_SECURITY_OFF" => ScanSkipReason::SyncSecurityOff,
                "NO_ENDPOINT_LICENCE" => ScanSkipReason::NoEndpointLicence,
                "OWNER_UNKNOWN" => ScanSkipReason::OwnerUnknown,
                "NO_DEVICES" => ScanSkipReason::NoDevices,
                _ => return Err(bad_symbol("scan_skipped_reason", s)),
            })
        })
        .transpose()?;
    Ok(Alert {
        alert_id: f.string("alert_id")?,
        incident_id: f.string("incident_id")?,
        tenant_id: f.string("tenant_id")?,
        mailbox: f.string("mailbox")?,
        owner_id: f.opt_string("owner_id")?,
        strike: f.u32("strike")?,
        state: block_state("state", f.symbol("state")?)?,
        blocked_until: f.opt_long("blocked_until")?,
        devices_scanned: f.strings("devices_scanned")?,
        scan_skipped_reason,
        summary: f.string("summary")?,
        kind: {
            let k = f.symbol("kind")?;
            AlertKind::parse(&k).ok_or_else(|| bad_symbol("kind", k))?
        },
    })
}

pub(crate) fn event_to_value(e: &EventLogEntry) -> Result<Value, CodecError> {
    Ok(Builder::new(RecordType::EventLogEntry)
        .str("event_id", &e.event_id)
        .opt("incident_id", e.incident_id.clone().map(Value::String))?
        .str("tenant_id", &e.tenant_id)
        .str("mailbox", &e.mailbox)
        .sym("kind", e.kind.as_str())?
        .ts("at", e.at)
        .str("detail", &e.detail)
        .opt(
            "reason",
            e.reason
                .map(|r| enum_value(RecordType::EventLogEntry, "reason", r.as_str()))
                .transpose()?,
        )?
        .opt("trip", e.trip.as_ref().map(trip_to_value).transpose()?)?
        .finish())
}

/// `["null", T]` inside a nested record (whose schema `optional` cannot look up by field).
fn nullable(v: Option<Value>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(x)),
    }
}

/// `EventLogEntry.trip` (a record inside the union; field order is the schema's).
fn trip_to_value(t: &TripFacts) -> Result<Value, CodecError> {
    Ok(Value::Record(vec![
        ("strike".into(), int_of("trip.strike", t.strike)?),
        (
            "first_sent_at".into(),
            Value::TimestampMillis(t.first_sent_at),
        ),
        ("blocked_at".into(), Value::TimestampMillis(t.blocked_at)),
        ("block_ms".into(), nullable(t.block_ms.map(Value::Long))),
        (
            "blocked_until".into(),
            nullable(t.blocked_until.map(Value::TimestampMillis)),
        ),
        (
            "evidence_message_ids".into(),
            strings(&t.evidence_message_ids),
        ),
        ("exempt".into(), Value::Boolean(t.exempt)),
    ]))
}

fn trip_from_value(v: Value) -> Result<TripFacts, CodecError> {
    let mut f = Fields::new(RecordType::EventLogEntry, v)?;
    Ok(TripFacts {
        strike: f.u32("strike")?,
        first_sent_at: f.long("first_sent_at")?,
        blocked_at: f.long("blocked_at")?,
        block_ms: f.opt_long("block_ms")?,
        blocked_until: f.opt_long("blocked_until")?,
        evidence_message_ids: f.strings("evidence_message_ids")?,
        exempt: f.bool("exempt")?,
    })
}

pub(crate) fn event_from_value(v: Value) -> Result<EventLogEntry, CodecError> {
    let mut f = Fields::new(RecordType::EventLogEntry, v)?;
    let event_id = f.string("event_id")?;
    let incident_id = f.opt_string("incident_id")?;
    let tenant_id = f.string("tenant_id")?;
    let mailbox = f.string("mailbox")?;
    let s = f.symbol("kind")?;
    let kind = EventKind::parse(&s).ok_or_else(|| bad_symbol("kind", s))?;
    Ok(EventLogEntry {
        event_id,
        incident_id,
        tenant_id,
        mailbox,
        kind,
        at: f.long("at")?,
        detail: f.string("detail")?,
        reason: f
            .opt_symbol("reason")?
            .map(|s| RejectCode::parse(&s).ok_or_else(|| bad_symbol("reason", s)))
            .transpose()?,
        trip: f.opt("trip")?.map(trip_from_value).transpose()?,
    })
}
