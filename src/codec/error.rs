//! [`CodecError`]: why a record could not be decoded or encoded. Its `Display` is the DLQ reason.

use super::RecordType;

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
    /// A single-object fingerprint that is not the expected record's (and not any record's we know).
    #[error("unknown schema fingerprint {got:016x} (expected {expected} {want:016x})")]
    UnknownFingerprint {
        /// Fingerprint found (as the little-endian u64 of the header).
        got: u64,
        /// The expected record type.
        expected: RecordType,
        /// Its fingerprint.
        want: u64,
    },
    /// A single-object fingerprint of another record type we know (e.g. a `MailboxOwner` on the
    /// verdicts topic).
    #[error("wrong record type: got {got}, expected {expected}")]
    WrongRecordType {
        /// What the fingerprint says.
        got: RecordType,
        /// What was expected.
        expected: RecordType,
    },
    /// A Confluent schema id that differs from the one configured for this record type.
    #[error("unexpected schema id {got} for {expected} (configured {want})")]
    SchemaIdMismatch {
        /// Id found.
        got: u32,
        /// Expected record type.
        expected: RecordType,
        /// Configured id.
        want: u32,
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

impl CodecError {
    /// A short, stable label for metrics (`reason` label of the DLQ counter).
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::EmptyValue => "empty_value",
            CodecError::BadMagic(_) | CodecError::BadMarker(_) => "bad_magic",
            CodecError::TruncatedHeader { .. } => "truncated_header",
            CodecError::UnknownFingerprint { .. } => "unknown_fingerprint",
            CodecError::WrongRecordType { .. } => "wrong_record_type",
            CodecError::SchemaIdMismatch { .. } => "schema_id_mismatch",
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
