//! Avro codec: the wire records of SPEC §3 ↔ the domain types of [`crate::policy`].
//!
//! # Schemas
//!
//! `schemas/*.avsc` (namespace `mailguard.v1`) are the source of truth. They are embedded with
//! `include_str!` and parsed once ([`RecordType::schema`]); nothing in Rust repeats them.
//!
//! # Framing
//!
//! Every value carries a header that says which schema wrote it:
//!
//! | framing | bytes |
//! |---|---|
//! | [`Framing::SingleObject`] (no registry, the default) | `C3 01`, 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form, Avro binary body |
//! | [`Framing::Confluent`] (a registry is configured) | `00`, 4-byte big-endian schema id, Avro binary body |
//!
//! The fingerprint is the one the Avro specification defines, computed from the spec's Parsing
//! Canonical Form by [`parsing_canonical_form`] (`canonical.rs`), so Java Avro, fastavro and
//! serde_avro_fast agree with it; apache-avro's own `Schema::canonical_form` does not (see
//! `canonical.rs`), and what mailguard wrote with it earlier is still read (its "legacy"
//! fingerprints are known as the embedded schemas).
//!
//! [`Codec::new`] takes the registry id of each record type that has one; those types are
//! *written* with Confluent framing, the others with single-object framing.
//! [`Codec::set_schema_id`] changes that later (the registry client, once it has registered the
//! embedded schemas at start-up). *Reading* accepts both framings, recognised by the first
//! byte. A body must be consumed exactly: trailing bytes are an error.
//!
//! # Writer schemas and resolution
//!
//! Producers evolve their schemas on their own schedule, and Avro data can only be read with
//! the schema that wrote it. So the header's key (fingerprint or registry id, [`WriterKey`])
//! selects the *writer* schema, and Avro schema resolution maps it onto mailguard's embedded
//! schema of the record (the *reader* schema, which the domain mapping is written against):
//! fields matched by name whatever their order, writer-only fields skipped, reader fields the
//! writer lacks given the reader default, `int`→`long`/`float`/`double`, `long`→`float`/
//! `double`, `float`→`double`, `string`↔`bytes`, unions on either side, a writer enum symbol the
//! reader lacks read as the reader enum's default (`CLEAN`, `UNKNOWN`), nested records, arrays
//! and maps. `resolve.rs` has the rules and the two places where mailguard is stricter than the
//! spec, so that a record is never misread: every branch of a writer union must be readable, and
//! writer logical types must match the reader's.
//!
//! The writer schemas live in a schema store shared by all clones of a [`Codec`]: the embedded
//! schemas (under their fingerprint, and under each configured id), schemas given to
//! [`Codec::add_writer_schema`] or found by [`Codec::load_writer_schemas`] (a directory of
//! `.avsc`, each under its fingerprint), and, for a registry id the store does not know, the
//! answer of the [`SchemaSource`] set with [`Codec::set_schema_source`] (the registry client).
//! Each writer schema is checked and compiled once, when first met: into the structural
//! validator over the writer schema and, for `OutboundVerdict`, a resolving field program. The
//! outcome is cached whether it succeeded or not, so a record of an incompatible writer fails as
//! fast as a good one decodes, and the registry is asked once per id. The record of the embedded
//! schema (its fingerprint, or the configured id) needs no lookup at all; other writers in use
//! are found in lock-free slots, so a resolved verdict costs about what an embedded one does.
//!
//! What a decoder does *not* do is read a record whose writer it cannot identify with the
//! embedded schema "hoping it fits": an unknown id is an error even without a registry (reading
//! it as ours would misread any other schema version silently).
//!
//! # Errors
//!
//! Every failure is a [`CodecError`] whose `Display` is the DLQ reason; those about the writer
//! schema name its fingerprint or id: `unknown schema fingerprint 0x…`, `unknown schema id 999
//! (not in the registry)`, `wrong record type: schema id 5 is mailguard.v1.MailboxOwner, …`,
//! `schema id 999 is incompatible with mailguard.v1.OutboundVerdict: field 'sent_at': …`. The
//! one failure a retry can cure, the registry being unreachable, is its own variant
//! ([`CodecError::SchemaSource`], [`CodecError::is_transient`]) so that the pipeline retries it
//! instead of dead-lettering the record; it is not cached.
//!
//! # The verdict hot path
//!
//! Every `OutboundVerdict` is decoded, so its decoder is the one that matters for throughput.
//! apache-avro's generic path (`from_avro_datum` → `Value` → domain) allocates a `Value` tree,
//! a `String` per field name and per string, and walks the schema per value. Measured with
//! `cargo bench --bench avro_decode` (1024 varied verdicts of ~130 bytes, single-object framed;
//! 2-core AMD EPYC VM, Rust 1.95, with a C++ build running on the other core, so ±15 %):
//!
//! | decoder | ns/verdict |
//! |---|---|
//! | apache-avro `from_avro_datum` → `Value` only (no domain mapping) | 940 – 1 220 |
//! | apache-avro `from_avro_datum` → `Value` → `Verdict` ([`Codec::decode_verdict_generic`]) | 1 260 – 1 600 |
//! | apache-avro `from_avro_datum` → `from_value::<serde struct>` → `Verdict` | 1 260 – 1 550 |
//! | compiled field program ([`VerdictProgram`], [`Codec::decode_verdict`]) | 100 – 140 |
//! | same, borrowed ([`VerdictRef`], [`Codec::decode_verdict_ref`]; the pipeline's hot path) | ~41 |
//!
//! The owned form's extra cost is the three `String` allocations the domain `Verdict` needs, so
//! the pipeline decodes into a [`VerdictRef`] and makes a `Verdict` only of offending verdicts.
//!
//! So verdicts are decoded by [`VerdictProgram`]: each writer schema of `OutboundVerdict`
//! (the embedded one at start-up, others when first met) is compiled against the reader schema
//! into a field program (per writer field: read into a slot of `Verdict`, or skip a value of the
//! field's shape; unions per branch; promotions; the writer's enum symbols mapped to the reader's,
//! reader defaults for slots the writer lacks), which then runs straight over the byte slice
//! (zig-zag varints, length-prefixed UTF-8) with no intermediate `Value` and allocates only the
//! three strings of the result. It is checked against the apache-avro path by property tests
//! (random records, and random compatible writer schemas, agree; random and truncated bytes
//! never panic). All other records are rare (tables, commands, outputs) and use the apache-avro
//! generic path (its `from_avro_datum` with writer and reader schema does the value resolution,
//! behind our compatibility check), preceded by a strict structural check compiled from the
//! *writer* schema (same reader as the fast path): apache-avro alone reads an end of input where a union
//! index should be as `null`, so a truncated record ending in an optional field would pass, and
//! its errors do not name the field. With the check, every decoder reports e.g.
//! "truncated body at field owner_name".
//!
//! # Enums
//!
//! Enum symbols are upper-case. `AdminCommand.kind` is an enum (`SUPPORT_UNBLOCK`,
//! `ADMIN_UNBLOCK`, `RESET_STRIKES`, `UNKNOWN`, default `UNKNOWN`) rather than a string: producers
//! get validation, and a reader resolving a newer writer schema maps unknown kinds to `UNKNOWN`,
//! which the core rejects like any kind but `SUPPORT_UNBLOCK`. `OutboundVerdict.verdict` has
//! default `CLEAN` (unknown verdicts never count, SPEC §1) and `EventLogEntry.kind` has default
//! `UNKNOWN` (never written by mailguard) for the same reason.

mod canonical;
mod error;
mod fast;
mod json;
mod records;
mod resolve;
mod schema;
mod store;
mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apache_avro::types::Value;

pub use canonical::{crc64_avro, fingerprint as schema_fingerprint, parsing_canonical_form};
pub use error::CodecError;
pub use fast::{VerdictProgram, VerdictRef};
pub use records::{EmailLicence, OwnerDevices, TenantRecord};
pub use schema::{RecordType, UnknownRecordType, NAMESPACE};
pub use store::{SchemaSource, SourceError, WriterKey};
pub use wire::CompileError;

use crate::policy::{
    Command, Effect, Exemption, ExemptionChange, Owner, ScanResult, TenantSettings, Verdict,
};

/// Magic first byte of Avro single-object encoding (followed by 0x01).
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Magic first byte of the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// How a record type is framed on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// `C3 01` + 8-byte little-endian CRC-64-AVRO fingerprint + body.
    SingleObject,
    /// `00` + 4-byte big-endian registry schema id + body.
    Confluent {
        /// Registry id of the schema.
        schema_id: u32,
    },
}

impl Header {
    /// The key of the writer schema this header names.
    pub fn key(self) -> WriterKey {
        match self {
            Header::SingleObject { fingerprint } => WriterKey::Fingerprint(fingerprint),
            Header::Confluent { schema_id } => WriterKey::SchemaId(schema_id),
        }
    }
}

/// Which header a value carries (as read by [`Codec::header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Single-object encoding with this fingerprint.
    SingleObject {
        /// Little-endian u64 of the 8 fingerprint bytes.
        fingerprint: u64,
    },
    /// Confluent framing with this schema id.
    Confluent {
        /// Registry schema id.
        schema_id: u32,
    },
}

/// Decodes and encodes every record of SPEC §3. Cheap to clone; `Send + Sync`. Clones share
/// one schema store and one set of output ids, so writer schemas added and ids set through any
/// clone are seen by all.
#[derive(Debug, Clone)]
pub struct Codec {
    inner: Arc<Inner>,
}

/// No output id (Confluent ids are u32).
const NO_ID: u64 = u64::MAX;

#[derive(Debug)]
struct Inner {
    /// Confluent id each record type is written with (`NO_ID`: single-object). Atomic so that
    /// [`Codec::set_schema_id`] works on a shared codec; a relaxed load costs nothing.
    output_ids: [AtomicU64; schema::COUNT],
    fingerprints: [u64; schema::COUNT],
    /// The verdict program of the embedded schema (the hot path's common case, no lookup).
    verdict: VerdictProgram,
    store: store::SchemaStore,
}

impl Default for Codec {
    /// Single-object framing everywhere (no schema registry).
    fn default() -> Self {
        Codec::new(HashMap::new())
    }
}

impl Codec {
    /// A codec that writes Confluent framing with the given registry ids for those record types,
    /// and single-object framing for the others. Empty map = no registry. Each id is taken to be
    /// the registry id of the embedded schema (what registering it returned); should two types
    /// be given one id, the first in [`RecordType::ALL`] order keeps it for [`Codec::detect`]
    /// (each type's own decoder still reads it as its own).
    ///
    /// Parses the schemas (once per process) and compiles the verdict decoder; panics only if
    /// the embedded schemas are broken, which the unit tests rule out.
    pub fn new(confluent_ids: HashMap<RecordType, u32>) -> Self {
        let codec = Codec {
            inner: Arc::new(Inner {
                output_ids: std::array::from_fn(|_| AtomicU64::new(NO_ID)),
                fingerprints: RecordType::ALL.map(|rt| rt.fingerprint()),
                verdict: VerdictProgram::for_outbound_verdict(),
                store: store::SchemaStore::new(),
            }),
        };
        for json in schema::HISTORY {
            // Embedded and tested (`earlier_versions_of_our_own_schemas_are_read`): cannot fail.
            let fp = canonical::fingerprint(json).expect("a schema of schemas/history parses");
            codec
                .add_writer_schema(WriterKey::Fingerprint(fp), json)
                .expect("a schema of schemas/history resolves to its record type");
        }
        let mut ids: Vec<_> = confluent_ids.into_iter().collect();
        ids.sort();
        for (rt, id) in ids {
            // A clash (same id for two types) only affects `detect`; see above.
            let _ = codec.set_schema_id(rt, id);
            codec.inner.output_ids[rt as usize].store(u64::from(id), Ordering::Relaxed);
        }
        codec
    }

    /// Writes `rt` with Confluent framing and registry id `id` from now on (in every clone), and
    /// reads `id` as the embedded schema of `rt`. For the registry client, once it has
    /// registered the embedded schema at start-up. Fails if `id` is already bound to another
    /// schema.
    pub fn set_schema_id(&self, rt: RecordType, id: u32) -> Result<(), CodecError> {
        self.inner
            .store
            .bind_embedded(WriterKey::SchemaId(id), rt)?;
        self.inner.output_ids[rt as usize].store(u64::from(id), Ordering::Relaxed);
        Ok(())
    }

    /// Makes `json` the writer schema of `key` (a registry id, or a fingerprint: by convention
    /// the schema's own, though any key a producer uses is accepted). It is matched by its full
    /// name to a record type, checked and compiled against that type's embedded schema now; the
    /// outcome, success or failure, is kept, so records with that key decode (or fail) without
    /// further work. Fails if the schema is invalid, not a mailguard record, incompatible, or
    /// `key` is already bound to a different schema.
    pub fn add_writer_schema(&self, key: WriterKey, json: &str) -> Result<RecordType, CodecError> {
        self.inner.store.add(key, json)
    }

    /// Adds every `*.avsc` file of `dir` as a writer schema under its reference fingerprint
    /// (for single-object producers with other schema versions). Stops at the first file that
    /// fails, naming it.
    pub fn load_writer_schemas(
        &self,
        dir: impl AsRef<Path>,
    ) -> Result<Vec<(PathBuf, RecordType)>, CodecError> {
        self.inner.store.load_dir(dir.as_ref())
    }

    /// Where unknown Confluent ids are looked up (a schema registry client), in every clone.
    /// Without a source, an unknown id is an error ([`CodecError::UnknownSchemaId`]).
    pub fn set_schema_source(&self, source: Arc<dyn SchemaSource>) {
        self.inner.store.set_source(Some(source));
    }

    /// How `rt` is written.
    pub fn framing(&self, rt: RecordType) -> Framing {
        match self.inner.output_ids[rt as usize].load(Ordering::Relaxed) {
            NO_ID => Framing::SingleObject,
            id => Framing::Confluent {
                schema_id: id as u32,
            },
        }
    }

    /// Whether `header` names the embedded schema of `rt` the quick way (its fingerprint or its
    /// output id): the common case needs no store lookup.
    #[inline(always)]
    fn is_embedded(&self, rt: RecordType, header: Header) -> bool {
        match header {
            Header::SingleObject { fingerprint } => {
                fingerprint == self.inner.fingerprints[rt as usize]
            }
            Header::Confluent { schema_id } => {
                self.inner.output_ids[rt as usize].load(Ordering::Relaxed) == u64::from(schema_id)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Framing

    /// Reads the framing header, without checking it against any record type.
    #[inline]
    pub fn header(bytes: &[u8]) -> Result<(Header, &[u8]), CodecError> {
        match bytes.first() {
            None => Err(CodecError::EmptyValue),
            Some(0xC3) => {
                if let Some(&b) = bytes.get(1) {
                    if b != 0x01 {
                        return Err(CodecError::BadMarker(b));
                    }
                }
                let Some((head, body)) = bytes.split_first_chunk::<10>() else {
                    return Err(CodecError::TruncatedHeader {
                        got: bytes.len(),
                        needed: 10,
                    });
                };
                let fp: [u8; 8] = head[2..].try_into().expect("8 bytes");
                Ok((
                    Header::SingleObject {
                        fingerprint: u64::from_le_bytes(fp),
                    },
                    body,
                ))
            }
            Some(0x00) => {
                let Some((head, body)) = bytes.split_first_chunk::<5>() else {
                    return Err(CodecError::TruncatedHeader {
                        got: bytes.len(),
                        needed: 5,
                    });
                };
                let id: [u8; 4] = head[1..].try_into().expect("4 bytes");
                Ok((
                    Header::Confluent {
                        schema_id: u32::from_be_bytes(id),
                    },
                    body,
                ))
            }
            Some(&b) => Err(CodecError::BadMagic(b)),
        }
    }

    /// Returns the body of a value of `rt` written with the embedded schema, which callers
    /// may then read with [`RecordType::schema`]. A value written with another (even
    /// compatible) writer schema is an error here, since reading it with the embedded schema
    /// would misread it: the decoders resolve, this does not.
    #[inline]
    pub fn body<'a>(&self, rt: RecordType, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let (header, body) = Self::header(bytes)?;
        if self.is_embedded(rt, header) {
            return Ok(body);
        }
        let key = header.key();
        self.inner.store.with(key, rt, |w| {
            if w.embedded {
                Ok(body)
            } else {
                Err(CodecError::IncompatibleSchema {
                    key,
                    record: rt,
                    reason: "another version of the schema; Codec::body reads only the embedded one (use a decoder)".into(),
                })
            }
        })
    }

    /// Clears `out` and writes the header of `rt` into it.
    pub fn write_header(&self, rt: RecordType, out: &mut Vec<u8>) {
        out.clear();
        match self.framing(rt) {
            Framing::SingleObject => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&self.inner.fingerprints[rt as usize].to_le_bytes());
            }
            Framing::Confluent { schema_id } => {
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&schema_id.to_be_bytes());
            }
        }
    }

    /// The record type of a value, from the writer schema its header names (embedded, added,
    /// or fetched from the schema source).
    pub fn detect(&self, bytes: &[u8]) -> Option<RecordType> {
        self.record_type_of(Self::header(bytes).ok()?.0).ok()
    }

    fn record_type_of(&self, header: Header) -> Result<RecordType, CodecError> {
        if let Some(rt) = RecordType::ALL
            .into_iter()
            .find(|&rt| self.is_embedded(rt, header))
        {
            return Ok(rt);
        }
        self.inner.store.record_type(header.key())
    }

    // -----------------------------------------------------------------------------------------
    // Generic values

    /// Decodes a framed value of `rt` into an apache-avro generic value (the slow, general path).
    /// Resolves the writer schema the header names against the embedded schema of `rt`: the
    /// value has the embedded schema's shape whichever compatible writer wrote it.
    pub fn decode_value(&self, rt: RecordType, bytes: &[u8]) -> Result<Value, CodecError> {
        let (header, body) = Self::header(bytes)?;
        if self.is_embedded(rt, header) {
            return decode_generic(rt, &store::EMBEDDED_WRITERS[rt as usize], body);
        }
        self.inner
            .store
            .with(header.key(), rt, |w| decode_generic(rt, w, body))
    }

    /// Clears `out` and writes a framed value of `rt` (validated against the schema) into it.
    pub fn encode_value(
        &self,
        rt: RecordType,
        value: Value,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let body = apache_avro::to_avro_datum(rt.schema(), value).map_err(|e| {
            out.clear();
            CodecError::avro(rt, e)
        })?;
        self.write_header(rt, out);
        out.extend_from_slice(&body);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Decoders

    /// Hot path: decodes an `OutboundVerdict` with the compiled field program. Lower-cases the
    /// mailbox; rejects an empty `message_id`, `tenant_id` or `mailbox`.
    #[inline]
    pub fn decode_verdict(&self, bytes: &[u8]) -> Result<Verdict, CodecError> {
        self.decode_verdict_ref(bytes).map(|v| v.to_owned())
    }

    /// Like [`Codec::decode_verdict`], borrowing the strings from `bytes` (see [`VerdictRef`]).
    #[inline]
    pub fn decode_verdict_ref<'a>(&self, bytes: &'a [u8]) -> Result<VerdictRef<'a>, CodecError> {
        const RT: RecordType = RecordType::OutboundVerdict;
        let (header, body) = Self::header(bytes)?;
        if self.is_embedded(RT, header) {
            return self.inner.verdict.decode_ref(body);
        }
        self.inner
            .store
            .with(header.key(), RT, |w| match &w.verdict {
                Some(p) => p.decode_ref(body),
                None => Err(CodecError::invalid("record", "no verdict program")),
            })
    }

    /// Same result as [`Codec::decode_verdict`] through apache-avro's generic path: the reference
    /// the fast path is tested and benchmarked against. Not for production use.
    pub fn decode_verdict_generic(&self, bytes: &[u8]) -> Result<Verdict, CodecError> {
        records::verdict_from_value(self.decode_value(RecordType::OutboundVerdict, bytes)?)
    }

    /// Decodes an `AdminCommand`; mailbox lower-cased; non-empty `command_id`, `mailbox`,
    /// `tenant_id`. A kind other than `SUPPORT_UNBLOCK` becomes `CommandKind::Other(symbol)`.
    pub fn decode_command(&self, bytes: &[u8]) -> Result<Command, CodecError> {
        records::command_from_value(self.decode_value(RecordType::AdminCommand, bytes)?)
    }

    /// Decodes a `MailboxOwner` into (lower-cased mailbox, owner).
    pub fn decode_owner(&self, bytes: &[u8]) -> Result<(String, Owner), CodecError> {
        records::owner_from_value(self.decode_value(RecordType::MailboxOwner, bytes)?)
    }

    /// Decodes an `OwnerDevices`.
    pub fn decode_devices(&self, bytes: &[u8]) -> Result<OwnerDevices, CodecError> {
        records::devices_from_value(self.decode_value(RecordType::OwnerDevices, bytes)?)
    }

    /// Decodes a `TenantSettings` into (tenant id, settings for the core). Overrides are
    /// validated (threshold and permanent_strike >= 1, window_ms >= 0, base_block_ms > 0).
    pub fn decode_tenant(&self, bytes: &[u8]) -> Result<(String, TenantSettings), CodecError> {
        let t = self.decode_tenant_record(bytes)?;
        Ok((t.tenant_id, t.settings))
    }

    /// Decodes a whole `TenantSettings` record, email licence included.
    pub fn decode_tenant_record(&self, bytes: &[u8]) -> Result<TenantRecord, CodecError> {
        records::tenant_from_value(self.decode_value(RecordType::TenantSettings, bytes)?)
    }

    /// Decodes an `Exemption` (a `mailguard.exemptions` value).
    pub fn decode_exemption(&self, bytes: &[u8]) -> Result<Exemption, CodecError> {
        records::exemption_from_value(self.decode_value(RecordType::Exemption, bytes)?)
    }

    /// Decodes a `ScanResult` (`endpoint.scan-results`, `mailguard.scan-results`).
    pub fn decode_scan_result(&self, bytes: &[u8]) -> Result<ScanResult, CodecError> {
        records::scan_result_from_value(self.decode_value(RecordType::ScanResult, bytes)?)
    }

    /// Encodes a `ScanResult` (tests, tooling: mailguard forwards the bytes it read).
    pub fn encode_scan_result(&self, r: &ScanResult, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(
            RecordType::ScanResult,
            records::scan_result_to_value(r)?,
            out,
        )
    }

    /// Decodes one of mailguard's own outputs (`MailboxBlock`, `ScanRequest`, `Alert`,
    /// `EventLogEntry`), recognised by its header. For tests, replay and tooling.
    pub fn decode_effect(&self, bytes: &[u8]) -> Result<Effect, CodecError> {
        let rt = self.record_type_of(Self::header(bytes)?.0)?;
        let v = self.decode_value(rt, bytes)?;
        Ok(match rt {
            RecordType::MailboxBlock => Effect::Block(records::block_from_value(v)?),
            RecordType::ScanRequest => Effect::Scan(records::scan_from_value(v)?),
            RecordType::Alert => Effect::Alert(records::alert_from_value(v)?),
            RecordType::EventLogEntry => Effect::Event(records::event_from_value(v)?),
            RecordType::Exemption => {
                let e = records::exemption_from_value(v)?;
                Effect::Exemption(ExemptionChange {
                    tenant_id: e.tenant_id.clone(),
                    pattern: e.pattern.clone(),
                    exemption: Some(e),
                })
            }
            other => {
                return Err(CodecError::invalid(
                    "record",
                    format!("{other} is not an output record type"),
                ))
            }
        })
    }

    // -----------------------------------------------------------------------------------------
    // Encoders (each clears `out`, then leaves exactly one framed value in it)

    /// The record type an effect is written as.
    pub fn effect_type(effect: &Effect) -> RecordType {
        match effect {
            Effect::Block(_) => RecordType::MailboxBlock,
            Effect::Scan(_) => RecordType::ScanRequest,
            Effect::Alert(_) => RecordType::Alert,
            Effect::Event(_) => RecordType::EventLogEntry,
            Effect::Exemption(_) => RecordType::Exemption,
        }
    }

    /// Encodes an effect as `MailboxBlock`, `ScanRequest`, `Alert`, `EventLogEntry` or
    /// `Exemption` (an exemption's tombstone has no value: `out` is left empty).
    pub fn encode_effect(&self, effect: &Effect, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let value = match effect {
            Effect::Exemption(ExemptionChange {
                exemption: None, ..
            }) => {
                out.clear();
                return Ok(());
            }
            Effect::Exemption(ExemptionChange {
                exemption: Some(e), ..
            }) => records::exemption_to_value(e)?,
            Effect::Block(b) => records::block_to_value(b)?,
            Effect::Scan(s) => records::scan_to_value(s),
            Effect::Alert(a) => records::alert_to_value(a)?,
            Effect::Event(e) => records::event_to_value(e)?,
        };
        self.encode_value(Self::effect_type(effect), value, out)
    }

    /// Encodes an `OutboundVerdict` (optional fields null). Writes the mailbox as given.
    pub fn encode_verdict(&self, v: &Verdict, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(
            RecordType::OutboundVerdict,
            records::verdict_to_value(v)?,
            out,
        )
    }

    /// Encodes an `AdminCommand`. `CommandKind::Other(s)` must be a symbol of the schema.
    pub fn encode_command(&self, c: &Command, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(RecordType::AdminCommand, records::command_to_value(c)?, out)
    }

    /// Encodes a `MailboxOwner`.
    pub fn encode_owner(
        &self,
        mailbox: &str,
        owner: &Owner,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let v = records::owner_to_value(mailbox, owner)?;
        self.encode_value(RecordType::MailboxOwner, v, out)
    }

    /// Encodes an `OwnerDevices`.
    pub fn encode_devices(&self, d: &OwnerDevices, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(RecordType::OwnerDevices, records::devices_to_value(d), out)
    }

    /// Encodes a `TenantSettings`.
    pub fn encode_tenant(&self, t: &TenantRecord, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.encode_value(
            RecordType::TenantSettings,
            records::tenant_to_value(t)?,
            out,
        )
    }

    // -----------------------------------------------------------------------------------------
    // JSON (CLI)

    /// Friendly JSON → framed Avro of `rt` (clears `out`). Missing optional fields are null;
    /// timestamps are integer ms; enums are symbol strings; unknown fields are an error. Input
    /// record types are then decoded back with their typed decoder, so what `produce` writes is
    /// exactly what mailguard accepts (e.g. an empty `message_id` is refused here).
    pub fn json_to_avro(
        &self,
        rt: RecordType,
        json: &serde_json::Value,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let value = json::to_value(rt.schema(), json, "")?;
        self.encode_value(rt, value, out)?;
        let check = match rt {
            RecordType::OutboundVerdict => self.decode_verdict(out).map(drop),
            RecordType::MailboxOwner => self.decode_owner(out).map(drop),
            RecordType::OwnerDevices => self.decode_devices(out).map(drop),
            RecordType::TenantSettings => self.decode_tenant(out).map(drop),
            RecordType::AdminCommand => self.decode_command(out).map(drop),
            RecordType::ScanResult => self.decode_scan_result(out).map(drop),
            _ => self.decode_effect(out).map(drop),
        };
        check.inspect_err(|_| out.clear())
    }

    /// Framed Avro of `rt` → friendly JSON (timestamps integer ms, optional fields value or
    /// null, enums strings).
    pub fn avro_to_json(
        &self,
        rt: RecordType,
        bytes: &[u8],
    ) -> Result<serde_json::Value, CodecError> {
        Ok(json::from_value(self.decode_value(rt, bytes)?))
    }
}

/// Decodes a body written with `w` as `rt`: strict structural check over the writer schema
/// first (apache-avro reads an end of input where a union index should be as `null`), then
/// apache-avro's decode, with its resolution against the embedded schema unless `w` is it.
fn decode_generic(rt: RecordType, w: &store::Writer, mut body: &[u8]) -> Result<Value, CodecError> {
    w.validator.validate(body)?;
    let reader = (!w.embedded).then(|| rt.schema());
    let v = apache_avro::from_avro_datum(&w.schema, &mut body, reader)
        .map_err(|e| CodecError::avro(rt, e))?;
    if !body.is_empty() {
        return Err(CodecError::TrailingBytes(body.len()));
    }
    Ok(v)
}

/// The record type of a single-object-encoded value with an embedded schema, from its
/// fingerprint (other writer schemas and Confluent framing need a codec: use
/// [`Codec::detect`]).
pub fn detect(bytes: &[u8]) -> Option<RecordType> {
    match Codec::header(bytes).ok()?.0 {
        Header::SingleObject { fingerprint } => RecordType::from_fingerprint(fingerprint),
        Header::Confluent { .. } => None,
    }
}

#[cfg(test)]
mod resolution_tests;
#[cfg(test)]
mod tests;
