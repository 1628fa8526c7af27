//! [`CodecError`]: why a record could not be decoded or encoded. Its `Display` is the DLQ reason.

use super::{RecordType, WriterKey};

/// Why a record could not be decoded (or encoded).
///
/// The `Display` text is meant to go verbatim into the DLQ `reason` header; [`CodecError::code`]
/// is a short, stable, low-cardinality label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The value is empty (zero bytes). A tombstone is the caller's business, not the codec's.
    #[error("empty value")]
    EmptyValue,
    /// The first byte is neither 0xC3 (single-object) nor 0x00 (Confluent).
    #[error("bad magic byte 0x{0:02X}")]
    BadMagic(u8),
    /// 0xC3 followed by something other than 0x01.
    #[error("bad single-object marker 0xC3 0x{0:02X} (expected 0xC3 0x01)")]
    BadMarker(u8),
    /// The framing header is cut short.
    #[error("truncated header: {got} bytes, {needed} needed")]
    TruncatedHeader {
        /// Bytes present.
        got: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// A single-object fingerprint of no writer schema the codec knows (they are known only
    /// from the embedded schemas, `Codec::add_writer_schema` and `Codec::load_writer_schemas`).
    #[error("unknown schema fingerprint 0x{fingerprint:016x}")]
    UnknownFingerprint {
        /// Fingerprint found (the little-endian u64 of the header bytes).
        fingerprint: u64,
    },
    /// A Confluent schema id the codec does not know and the registry (if any) does not have.
    #[error("unknown schema id {id} ({})", why_unknown(*.registry))]
    UnknownSchemaId {
        /// Id found.
        id: u32,
        /// Whether a registry was asked (and said "not found").
        registry: bool,
    },
    /// The writer schema is of another record type (e.g. a `MailboxOwner` on the verdicts
    /// topic), or of no mailguard record at all.
    #[error("wrong record type: {key} is {got}, expected {expected}")]
    WrongRecordType {
        /// The header's key.
        key: WriterKey,
        /// Full name of the writer's record.
        got: String,
        /// What was expected.
        expected: RecordType,
    },
    /// The writer schema cannot be resolved against mailguard's schema of the record.
    #[error("{key} is incompatible with {}: {reason}", .record.full_name())]
    IncompatibleSchema {
        /// The header's key.
        key: WriterKey,
        /// The record type (reader schema).
        record: RecordType,
        /// Why (names the field).
        reason: String,
    },
    /// The schema bound (or to be bound) to a key is not a valid Avro record schema, not a
    /// mailguard record, or the key is already bound to another schema.
    #[error("{key}: invalid writer schema: {reason}")]
    BadWriterSchema {
        /// The key.
        key: WriterKey,
        /// Why.
        reason: String,
    },
    /// A writer schema file could not be loaded.
    #[error("writer schema {path}: {reason}")]
    SchemaFile {
        /// The file (or directory).
        path: String,
        /// Why.
        reason: String,
    },
    /// The schema source (registry) failed to answer for an unknown id. When `transient`, the
    /// record should be retried, not dead-lettered ([`CodecError::is_transient`]).
    #[error("schema id {id}: schema registry lookup failed: {message}")]
    SchemaSource {
        /// Id looked up.
        id: u32,
        /// The source's message.
        message: String,
        /// Whether asking again may succeed.
        transient: bool,
    },
    /// The body ends inside a field.
    #[error("truncated body at field {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{0} trailing bytes after body")]
    TrailingBytes(usize),
    /// An enum index outside the symbol table.
    #[error("invalid enum index {index} at field {field}")]
    InvalidEnumIndex {
        /// Field being read.
        field: &'static str,
        /// Index found.
        index: i64,
    },
    /// A union branch index outside the union.
    #[error("invalid union index {index} at field {field}")]
    InvalidUnionIndex {
        /// Field being read.
        field: &'static str,
        /// Index found.
        index: i64,
    },
    /// A negative or oversized length prefix.
    #[error("invalid length {len} at field {field}")]
    InvalidLength {
        /// Field being read.
        field: &'static str,
        /// Length found.
        len: i64,
    },
    /// A varint longer than 10 bytes or overflowing.
    #[error("invalid varint at field {field}")]
    InvalidVarint {
        /// Field being read.
        field: &'static str,
    },
    /// A string that is not UTF-8.
    #[error("invalid utf-8 at field {field}")]
    InvalidUtf8 {
        /// Field being read.
        field: &'static str,
    },
    /// An enum symbol the schema does not have (JSON input, or a domain value the schema lacks).
    #[error("invalid enum symbol {symbol:?} at field {field}")]
    InvalidEnumSymbol {
        /// Field.
        field: String,
        /// Symbol given.
        symbol: String,
    },
    /// A required string field is empty.
    #[error("empty {0}")]
    EmptyField(&'static str),
    /// A field value outside its allowed range (e.g. `threshold` 0).
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Field.
        field: String,
        /// Why.
        reason: String,
    },
    /// The Kafka record has no key although the topic requires one (for the pipeline's use).
    #[error("missing key")]
    MissingKey,
    /// The Kafka record key is not UTF-8 (for the pipeline's use).
    #[error("key is not utf-8")]
    KeyNotUtf8,
    /// JSON input that does not fit the schema.
    #[error("json: {0}")]
    Json(String),
    /// An error reported by apache-avro (generic path), with the record type.
    #[error("avro {record}: {message}")]
    Avro {
        /// Record type being decoded/encoded.
        record: RecordType,
        /// apache-avro's message.
        message: String,
    },
}

fn why_unknown(registry: bool) -> &'static str {
    if registry {
        "not in the registry"
    } else {
        "no schema registry configured and not added"
    }
}

impl CodecError {
    /// A short, stable label for metrics (`reason` label of the DLQ counter).
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::EmptyValue => "empty_value",
            CodecError::BadMagic(_) | CodecError::BadMarker(_) => "bad_magic",
            CodecError::TruncatedHeader { .. } => "truncated_header",
            CodecError::UnknownFingerprint { .. } => "unknown_fingerprint",
            CodecError::UnknownSchemaId { .. } => "unknown_schema_id",
            CodecError::WrongRecordType { .. } => "wrong_record_type",
            CodecError::IncompatibleSchema { .. } => "incompatible_schema",
            CodecError::BadWriterSchema { .. } | CodecError::SchemaFile { .. } => {
                "bad_writer_schema"
            }
            CodecError::SchemaSource { .. } => "schema_source",
            CodecError::Truncated { .. } => "truncated_body",
            CodecError::TrailingBytes(_) => "trailing_bytes",
            CodecError::InvalidEnumIndex { .. } | CodecError::InvalidEnumSymbol { .. } => {
                "invalid_enum"
            }
            CodecError::InvalidUnionIndex { .. }
            | CodecError::InvalidLength { .. }
            | CodecError::InvalidVarint { .. }
            | CodecError::InvalidUtf8 { .. } => "malformed_body",
            CodecError::EmptyField(_) | CodecError::InvalidField { .. } => "invalid_field",
            CodecError::MissingKey => "missing_key",
            CodecError::KeyNotUtf8 => "key_not_utf8",
            CodecError::Json(_) => "json",
            CodecError::Avro { .. } => "avro",
        }
    }

    /// Whether the failure may go away if the record is decoded again later (the schema
    /// registry was unreachable): the caller should retry instead of dead-lettering.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CodecError::SchemaSource {
                transient: true,
                ..
            }
        )
    }

    pub(crate) fn avro(record: RecordType, e: apache_avro::Error) -> Self {
        CodecError::Avro {
            record,
            message: e.to_string(),
        }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        CodecError::InvalidField {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
