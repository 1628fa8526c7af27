//! The backtest's file formats, read as a stream: Avro object container files of
//! `OutboundVerdict` ([`OcfReader`]) and JSON lines as `mailguard produce` takes them
//! ([`json_line`]). Pure (no I/O beyond the `Read` given), so the fuzz targets build them.
//!
//! The container is read block by block (one block in memory at a time, at most
//! [`MAX_BLOCK_BYTES`] before and after decompression); each body is decoded by the codec's
//! compiled verdict program ([`VerdictProgram::resolve`] of the file's writer schema against the
//! embedded one), the hot-path decoder of the pipeline, so the backtest reads what the pipeline
//! would. Codecs: `null` and `deflate` (the two every Avro implementation writes); others are a
//! clear error.

use std::borrow::Cow;
use std::io::Read;

use crate::codec::{CodecError, RecordType, VerdictProgram, VerdictRef};
use crate::policy::VerdictKind;

/// The largest container block read (compressed, and decompressed): 16 MiB. Writers use blocks
/// of 16 kB to 1 MB; a larger one is a corrupt size or an allocation bomb.
pub const MAX_BLOCK_BYTES: usize = 16 << 20;

/// The largest metadata entry count, and the largest schema, of a container header.
const MAX_META_ENTRIES: i64 = 1024;
const MAX_META_BYTES: usize = 1 << 20;

/// Why a container file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OcfError {
    /// Not an Avro object container file (no `Obj\x01` magic).
    #[error("not an Avro object container file (no Obj\\x01 magic)")]
    NotAContainer,
    /// The header or a block is malformed or truncated.
    #[error("corrupt container at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset in the file where it was noticed.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A compression codec other than `null` and `deflate`.
    #[error("container codec `{0}` is not supported (use null or deflate)")]
    Codec(String),
    /// The writer schema is not one a verdict can be read with.
    #[error("the container's schema cannot be read as OutboundVerdict: {0}")]
    Schema(String),
    /// A body in a block does not decode (the block's remaining bodies cannot be found: they
    /// have no lengths).
    #[error("record {record} (block at byte {offset}): {error}")]
    Record {
        /// 0-based index of the record in the file.
        record: u64,
        /// Byte offset of its block.
        offset: u64,
        /// The codec's reason.
        error: CodecError,
    },
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A streaming reader of an Avro object container file of verdicts.
pub struct OcfReader<R: Read> {
    input: R,
    /// Bytes consumed so far (for errors and progress).
    offset: u64,
    sync: [u8; 16],
    deflate: bool,
    program: VerdictProgram,
    /// The current block's bodies (decompressed).
    block: Vec<u8>,
    /// Compressed bytes of the current block.
    raw: Vec<u8>,
    records: u64,
}

impl<R: Read> OcfReader<R> {
    /// Reads the header: magic, metadata (`avro.schema`, `avro.codec`) and sync marker.
    pub fn new(mut input: R) -> Result<Self, OcfError> {
        let mut magic = [0u8; 4];
        read_exact_or(&mut input, &mut magic, 0, OcfError::NotAContainer)?;
        if &magic != b"Obj\x01" {
            return Err(OcfError::NotAContainer);
        }
        let mut offset = 4u64;
        let mut schema = None;
        let mut codec = None;
        loop {
            let mut n = read_long(&mut input, &mut offset)?;
            if n == 0 {
                break;
            }
            if n < 0 {
                n = n
                    .checked_neg()
                    .ok_or_else(|| corrupt(offset, "metadata count"))?;
                read_long(&mut input, &mut offset)?; // the block's byte size
            }
            if n > MAX_META_ENTRIES {
                return Err(corrupt(offset, "too many metadata entries"));
            }
            for _ in 0..n {
                let key = read_bytes(&mut input, &mut offset)?;
                let value = read_bytes(&mut input, &mut offset)?;
                match key.as_slice() {
                    b"avro.schema" => schema = Some(value),
                    b"avro.codec" => codec = Some(value),
                    _ => {}
                }
            }
        }
        let mut sync = [0u8; 16];
        read_exact_or(
            &mut input,
            &mut sync,
            offset,
            corrupt(offset, "no sync marker"),
        )?;
        offset += 16;
        let deflate = match codec.as_deref() {
            None | Some(b"null") => false,
            Some(b"deflate") => true,
            Some(other) => return Err(OcfError::Codec(String::from_utf8_lossy(other).into())),
        };
        let schema =
            schema.ok_or_else(|| OcfError::Schema("no avro.schema in the header".into()))?;
        let schema = std::str::from_utf8(&schema)
            .map_err(|_| OcfError::Schema("avro.schema is not UTF-8".into()))?;
        let writer =
            apache_avro::Schema::parse_str(schema).map_err(|e| OcfError::Schema(e.to_string()))?;
        let program = VerdictProgram::resolve(&writer, RecordType::OutboundVerdict.schema())
            .map_err(|e| OcfError::Schema(e.to_string()))?;
        Ok(OcfReader {
            input,
            offset,
            sync,
            deflate,
            program,
            block: Vec::new(),
            raw: Vec::new(),
            records: 0,
        })
    }

    /// Bytes of the file read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next block and calls `f` with each of its verdicts; `Ok(false)` at the end of
    /// the file. A body that does not decode ends the block with an error: the container has no
    /// record lengths, so the rest of the block cannot be found (earlier records were given).
    pub fn next_block(&mut self, mut f: impl FnMut(VerdictRef<'_>)) -> Result<bool, OcfError> {
        let start = self.offset;
        let Some(count) = read_long_or_eof(&mut self.input, &mut self.offset)? else {
            return Ok(false);
        };
        let size = read_long(&mut self.input, &mut self.offset)?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_BLOCK_BYTES)
            .ok_or_else(|| corrupt(start, format!("block size {size}")))?;
        if count < 0 {
            return Err(corrupt(start, format!("block count {count}")));
        }
        self.raw.clear();
        (&mut self.input)
            .take(size as u64)
            .read_to_end(&mut self.raw)?;
        if self.raw.len() != size {
            return Err(corrupt(start, "truncated block"));
        }
        self.offset += size as u64;
        let mut sync = [0u8; 16];
        read_exact_or(
            &mut self.input,
            &mut sync,
            self.offset,
            corrupt(self.offset, "truncated sync marker"),
        )?;
        if sync != self.sync {
            return Err(corrupt(
                self.offset,
                "sync marker does not match the header's",
            ));
        }
        self.offset += 16;
        let data: &[u8] = if self.deflate {
            self.block =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&self.raw, MAX_BLOCK_BYTES)
                    .map_err(|e| corrupt(start, format!("deflate: {e}")))?;
            &self.block
        } else {
            &self.raw
        };
        let mut rest = data;
        for _ in 0..count {
            match self.program.decode_prefix(rest) {
                Ok((v, used)) => {
                    rest = &rest[used..];
                    self.records += 1;
                    f(v);
                }
                Err(error) => {
                    return Err(OcfError::Record {
                        record: self.records,
                        offset: start,
                        error,
                    })
                }
            }
        }
        if !rest.is_empty() {
            return Err(corrupt(
                start,
                format!("{} bytes after the block's {count} records", rest.len()),
            ));
        }
        Ok(true)
    }
}

fn corrupt(offset: u64, reason: impl Into<String>) -> OcfError {
    OcfError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

fn read_exact_or(
    input: &mut impl Read,
    buf: &mut [u8],
    _offset: u64,
    e: OcfError,
) -> Result<(), OcfError> {
    match input.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Err(e),
        Err(io) => Err(io.into()),
    }
}

/// A zig-zag varint long; `None` at a clean end of input (before its first byte).
fn read_long_or_eof(input: &mut impl Read, offset: &mut u64) -> Result<Option<i64>, OcfError> {
    let mut value = 0u64;
    for i in 0..10u32 {
        let mut b = [0u8; 1];
        let n = loop {
            match input.read(&mut b) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(corrupt(*offset, "truncated varint"))
            };
        }
        *offset += 1;
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] < 0x80 {
            return Ok(Some(((value >> 1) as i64) ^ -((value & 1) as i64)));
        }
    }
    Err(corrupt(*offset, "varint longer than 10 bytes"))
}

fn read_long(input: &mut impl Read, offset: &mut u64) -> Result<i64, OcfError> {
    read_long_or_eof(input, offset)?.ok_or_else(|| corrupt(*offset, "truncated header"))
}

fn read_bytes(input: &mut impl Read, offset: &mut u64) -> Result<Vec<u8>, OcfError> {
    let at = *offset;
    let n = read_long(input, offset)?;
    let n = usize::try_from(n)
        .ok()
        .filter(|n| *n <= MAX_META_BYTES)
        .ok_or_else(|| corrupt(at, format!("metadata length {n}")))?;
    let mut v = Vec::with_capacity(n);
    input.take(n as u64).read_to_end(&mut v)?;
    if v.len() != n {
        return Err(corrupt(at, "truncated metadata"));
    }
    *offset += n as u64;
    Ok(v)
}

/// One JSON line of a verdict as `mailguard produce` takes it (its informational fields
/// `recipient_count` and `gateway_id` accepted and ignored), strings borrowed where they have
/// no escapes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    message_id: Cow<'a, str>,
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
    #[serde(borrow)]
    mailbox: Cow<'a, str>,
    sent_at: i64,
    #[serde(borrow)]
    verdict: Cow<'a, str>,
    #[serde(default)]
    recipient_count: Option<i32>,
    #[serde(default, borrow)]
    gateway_id: Option<Cow<'a, str>>,
}

/// A verdict read from a JSON line, its strings borrowed from the line where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonVerdict<'a> {
    /// Gateway message id.
    pub message_id: Cow<'a, str>,
    /// Tenant.
    pub tenant_id: Cow<'a, str>,
    /// Mailbox, as written.
    pub mailbox: Cow<'a, str>,
    /// Event time.
    pub sent_at: i64,
    /// The verdict.
    pub verdict: VerdictKind,
}

impl JsonVerdict<'_> {
    /// The view the backtest steps.
    pub fn as_ref(&self) -> VerdictRef<'_> {
        VerdictRef {
            message_id: &self.message_id,
            tenant_id: &self.tenant_id,
            mailbox: &self.mailbox,
            sent_at: self.sent_at,
            verdict: self.verdict,
        }
    }
}

/// One line of a JSON-lines verdict file: `Ok(None)` for a blank or `#` comment line (as
/// `produce`), else the verdict or why not. Stricter than `produce` in one way: `sent_at` is an
/// integer (ms), never a `"now"` placeholder (history has no "now").
pub fn json_line(line: &str) -> Result<Option<JsonVerdict<'_>>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let l: Line<'_> = serde_json::from_str(t).map_err(|e| e.to_string())?;
    let _ = (l.recipient_count, l.gateway_id);
    for (field, v) in [
        ("message_id", &l.message_id),
        ("tenant_id", &l.tenant_id),
        ("mailbox", &l.mailbox),
    ] {
        if v.is_empty() {
            return Err(format!("{field} is empty"));
        }
    }
    let verdict = match &*l.verdict {
        "CLEAN" => VerdictKind::Clean,
        "SPAM" => VerdictKind::Spam,
        "VIRUS" => VerdictKind::Virus,
        other => return Err(format!("verdict `{other}` is not CLEAN, SPAM or VIRUS")),
    };
    Ok(Some(JsonVerdict {
        message_id: l.message_id,
        tenant_id: l.tenant_id,
        mailbox: l.mailbox,
        sent_at: l.sent_at,
        verdict,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::{Record, Value};

    fn verdicts(codec: apache_avro::Codec, n: usize) -> Vec<u8> {
        let schema = RecordType::OutboundVerdict.schema();
        let mut w = apache_avro::Writer::with_codec(schema, Vec::new(), codec);
        for i in 0..n {
            let mut r = Record::new(schema).unwrap();
            r.put("message_id", format!("m-{i}"));
            r.put("tenant_id", "t");
            r.put("mailbox", format!("User{}@Example.com", i % 7));
            r.put("sent_at", Value::TimestampMillis(1_000 + i as i64));
            r.put("verdict", Value::Enum(1, "SPAM".into()));
            r.put("recipient_count", Value::Union(1, Box::new(Value::Int(2))));
            r.put("gateway_id", Value::Union(0, Box::new(Value::Null)));
            w.append(r).unwrap();
            if i % 1000 == 999 {
                w.flush().unwrap();
            }
        }
        w.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, String, i64)>, OcfError> {
        let mut r = OcfReader::new(bytes)?;
        let mut out = Vec::new();
        while r
            .next_block(|v| out.push((v.message_id.to_owned(), v.mailbox.to_owned(), v.sent_at)))?
        {
        }
        Ok(out)
    }

    #[test]
    fn reads_what_apache_avro_writes_with_either_codec() {
        for codec in [
            apache_avro::Codec::Null,
            apache_avro::Codec::Deflate(Default::default()),
        ] {
            let got = read_all(&verdicts(codec, 2500)).unwrap();
            assert_eq!(got.len(), 2500);
            assert_eq!(got[0], ("m-0".into(), "User0@Example.com".into(), 1000));
            assert_eq!(got[2499].2, 3499);
        }
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        assert!(matches!(
            read_all(b"PK\x03\x04"),
            Err(OcfError::NotAContainer)
        ));
        let good = verdicts(apache_avro::Codec::Null, 10);
        // Truncated inside the block.
        let e = read_all(&good[..good.len() - 20]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // A flipped sync marker byte at the very end.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = read_all(&bad).unwrap_err();
        assert!(e.to_string().contains("sync marker"), "{e}");
    }

    #[test]
    fn another_record_type_is_refused() {
        let schema = RecordType::AdminCommand.schema();
        let w = apache_avro::Writer::new(schema, Vec::new());
        let e = read_all(&w.into_inner().unwrap()).err().unwrap();
        assert!(matches!(e, OcfError::Schema(_)), "{e}");
    }

    #[test]
    fn json_lines_as_produce_takes_them() {
        let v = json_line(r#"{"message_id":"m\u0031","tenant_id":"t","mailbox":"A@B.c","sent_at":5,"verdict":"VIRUS","gateway_id":"g"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (&*v.message_id, &*v.mailbox, v.sent_at, v.verdict),
            ("m1", "A@B.c", 5, VerdictKind::Virus)
        );
        assert_eq!(json_line("  # a comment").unwrap(), None);
        assert_eq!(json_line("").unwrap(), None);
        let bad = [
            (
                r#"{"message_id":"","tenant_id":"t","mailbox":"a","sent_at":1,"verdict":"SPAM"}"#,
                "message_id is empty",
            ),
            (
                r#"{"message_id":"m","tenant_id":"t","mailbox":"a","sent_at":"now","verdict":"SPAM"}"#,
                "invalid type",
            ),
            (
                r#"{"message_id":"m","tenant_id":"t","mailbox":"a","sent_at":1,"verdict":"HAM"}"#,
                "HAM",
            ),
            (
                r#"{"message_id":"m","tenant_id":"t","mailbox":"a","sent_at":1,"verdict":"SPAM","x":1}"#,
                "unknown field",
            ),
        ];
        for (line, why) in bad {
            let e = json_line(line).unwrap_err();
            assert!(e.contains(why), "{line}: {e}");
        }
    }
}
