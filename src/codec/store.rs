//! The writer schemas mailguard can read, by the key a record's header carries, each compiled
//! once against the reader schema (the embedded one) of its record type.
//!
//! Why a store: producers evolve their schemas independently of mailguard (a gateway adds a
//! field, a registry hands out a new id), and Avro can only read a record with the schema that
//! wrote it. The header names that schema by fingerprint (single-object) or registry id
//! (Confluent); the store maps the key to the writer schema and to what was compiled from it
//! (a structural validator over the writer schema, the verdict field program), or to the reason
//! it cannot be read, so that every later record with that key costs one lookup.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use apache_avro::Schema;

use super::fast::VerdictProgram;
use super::wire::{self, CompileError, Validator};
use super::{canonical, resolve, CodecError, RecordType};

/// What a record header says wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriterKey {
    /// Single-object encoding: CRC-64-AVRO fingerprint of the writer schema's Parsing
    /// Canonical Form (the little-endian u64 of the 8 header bytes).
    Fingerprint(u64),
    /// Confluent framing: schema registry id.
    SchemaId(u32),
}

impl fmt::Display for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriterKey::Fingerprint(fp) => write!(f, "schema fingerprint 0x{fp:016x}"),
            WriterKey::SchemaId(id) => write!(f, "schema id {id}"),
        }
    }
}

/// Why a [`SchemaSource`] could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// What went wrong (goes into the DLQ reason or the log).
    pub message: String,
    /// `true` if asking again later may succeed (registry unreachable, timeout, 5xx): the
    /// record is then retried rather than dead-lettered.
    pub transient: bool,
}

impl SourceError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            transient: true,
        }
    }

    /// A failure that asking again will not fix (e.g. refused credentials).
    pub fn permanent(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            transient: false,
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}

/// Where writer schemas unknown to the store are looked up by Confluent id: a schema registry.
/// Called on the decoding thread, once per id (answers, including "not found", are cached;
/// errors are not).
pub trait SchemaSource: Send + Sync {
    /// The schema JSON registered under `id`; `Ok(None)` if the registry says there is none.
    fn schema_by_id(&self, id: u32) -> Result<Option<String>, SourceError>;
}

/// A writer schema compiled against the reader schema of its record type.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) rt: RecordType,
    /// The writer schema *is* the embedded one (same canonical form): no resolution.
    pub(crate) embedded: bool,
    pub(crate) schema: Schema,
    /// Structural check over the writer schema.
    pub(crate) validator: Validator,
    /// The verdict field program, for `OutboundVerdict` writers.
    pub(crate) verdict: Option<VerdictProgram>,
}

/// The embedded schema of each record type as a writer.
pub(crate) static EMBEDDED_WRITERS: LazyLock<[Arc<Writer>; super::schema::COUNT]> =
    LazyLock::new(|| {
        RecordType::ALL.map(|rt| {
            Arc::new(Writer {
                rt,
                embedded: true,
                schema: rt.schema().clone(),
                validator: wire::validator(rt).clone(),
                verdict: (rt == RecordType::OutboundVerdict)
                    .then(VerdictProgram::for_outbound_verdict),
            })
        })
    });

#[derive(Debug, Clone)]
enum Outcome {
    Ok(Arc<Writer>),
    /// A record that is not one of mailguard's (full name).
    Foreign(Arc<str>),
    /// Cannot be read (does not parse, incompatible, unknown id): the DLQ reason.
    Failed(CodecError),
}

#[derive(Debug, Clone)]
struct Entry {
    /// Reference fingerprint of the schema bound to the key (None: none, or unparseable).
    fingerprint: Option<u64>,
    outcome: Outcome,
}

/// Lock-free slots for the writers in use (normally one or two per topic), so that a record
/// of a non-embedded writer does not take the lock. Filled in order, never replaced.
const HOT: usize = 8;
/// At most this many "not in the registry" answers are cached (garbage ids must not grow the
/// map without bound); beyond it the source is asked each time.
const MAX_UNKNOWN: usize = 1024;

pub(crate) struct SchemaStore {
    entries: RwLock<HashMap<WriterKey, Entry>>,
    hot: [OnceLock<(WriterKey, Arc<Writer>)>; HOT],
    source: RwLock<Option<Arc<dyn SchemaSource>>>,
    unknown: AtomicUsize,
}

impl fmt::Debug for SchemaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.read().map_or(0, |e| e.len());
        f.debug_struct("SchemaStore")
            .field("entries", &n)
            .field(
                "source",
                &self.source.read().map(|s| s.is_some()).unwrap_or(false),
            )
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock leaves a consistent map (inserts are single calls).
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Compiles `json` as the writer schema bound to `key`.
fn compile(key: WriterKey, json: &str) -> Entry {
    let failed = |fingerprint, e| Entry {
        fingerprint,
        outcome: Outcome::Failed(e),
    };
    let bad = |reason: String| CodecError::BadWriterSchema { key, reason };
    let fp = match canonical::fingerprint(json) {
        Ok(fp) => fp,
        Err(e) => return failed(None, bad(e)),
    };
    let schema = match Schema::parse_str(json) {
        Ok(s) => s,
        Err(e) => return failed(Some(fp), bad(e.to_string())),
    };
    let Schema::Record(r) = &schema else {
        return failed(Some(fp), bad("not a record schema".into()));
    };
    let full = r.name.fullname(None);
    let Some(rt) = RecordType::ALL
        .into_iter()
        .find(|rt| rt.full_name() == full)
    else {
        return Entry {
            fingerprint: Some(fp),
            outcome: Outcome::Foreign(full.into()),
        };
    };
    if fp == rt.fingerprint() {
        // Same canonical form as the embedded schema: same bytes on the wire.
        return Entry {
            fingerprint: Some(fp),
            outcome: Outcome::Ok(EMBEDDED_WRITERS[rt as usize].clone()),
        };
    }
    let incompatible = |reason: String| CodecError::IncompatibleSchema {
        key,
        record: rt,
        reason,
    };
    let compiled = resolve::check(&schema, rt.schema())
        .map_err(CompileError::from)
        .and_then(|()| Validator::compile(&schema))
        .and_then(|validator| {
            let verdict = (rt == RecordType::OutboundVerdict)
                .then(|| VerdictProgram::resolve(&schema, rt.schema()))
                .transpose()?;
            Ok((validator, verdict))
        });
    match compiled {
        Ok((validator, verdict)) => Entry {
            fingerprint: Some(fp),
            outcome: Outcome::Ok(Arc::new(Writer {
                rt,
                embedded: false,
                schema,
                validator,
                verdict,
            })),
        },
        Err(reason) => failed(Some(fp), incompatible(reason.to_string())),
    }
}

impl SchemaStore {
    /// A store that knows the embedded schemas under their reference fingerprints and under
    /// the fingerprints mailguard wrote before (apache-avro's; see `canonical.rs`).
    pub(crate) fn new() -> Self {
        let mut entries = HashMap::new();
        for rt in RecordType::ALL {
            for fp in [rt.fingerprint(), rt.legacy_fingerprint()] {
                entries.insert(
                    WriterKey::Fingerprint(fp),
                    Entry {
                        fingerprint: Some(rt.fingerprint()),
                        outcome: Outcome::Ok(EMBEDDED_WRITERS[rt as usize].clone()),
                    },
                );
            }
        }
        SchemaStore {
            entries: RwLock::new(entries),
            hot: Default::default(),
            source: RwLock::new(None),
            unknown: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_source(&self, source: Option<Arc<dyn SchemaSource>>) {
        *write(&self.source) = source;
    }

    /// Binds `key` to `entry` unless it is bound to another schema already (registry ids and
    /// fingerprints never change meaning). A failed entry or an unknown-id answer can be
    /// replaced.
    fn bind(&self, key: WriterKey, entry: Entry) -> Result<Entry, CodecError> {
        let mut map = write(&self.entries);
        if let Some(old) = map.get(&key) {
            let replaceable = matches!(old.outcome, Outcome::Failed(_));
            if !replaceable {
                if old.fingerprint == entry.fingerprint {
                    return Ok(old.clone());
                }
                return Err(CodecError::BadWriterSchema {
                    key,
                    reason: format!(
                        "already bound to another schema (fingerprint 0x{:016x})",
                        old.fingerprint.unwrap_or_default()
                    ),
                });
            }
            if let Outcome::Failed(CodecError::UnknownSchemaId { .. }) = old.outcome {
                self.unknown.fetch_sub(1, Ordering::Relaxed);
            }
        }
        map.insert(key, entry.clone());
        Ok(entry)
    }

    /// Binds `key` to the embedded schema of `rt` (a registry id the schema was registered
    /// under).
    pub(crate) fn bind_embedded(&self, key: WriterKey, rt: RecordType) -> Result<(), CodecError> {
        self.bind(
            key,
            Entry {
                fingerprint: Some(rt.fingerprint()),
                outcome: Outcome::Ok(EMBEDDED_WRITERS[rt as usize].clone()),
            },
        )
        .map(drop)
    }

    /// Compiles and binds a writer schema; the outcome is cached either way.
    pub(crate) fn add(&self, key: WriterKey, json: &str) -> Result<RecordType, CodecError> {
        let entry = self.bind(key, compile(key, json))?;
        match entry.outcome {
            Outcome::Ok(w) => Ok(w.rt),
            Outcome::Foreign(name) => Err(CodecError::BadWriterSchema {
                key,
                reason: format!("{name} is not a mailguard record"),
            }),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// Adds every `*.avsc` of `dir` under its reference fingerprint, in name order.
    pub(crate) fn load_dir(&self, dir: &Path) -> Result<Vec<(PathBuf, RecordType)>, CodecError> {
        let file_err = |path: &Path, reason: String| CodecError::SchemaFile {
            path: path.display().to_string(),
            reason,
        };
        let mut paths = std::fs::read_dir(dir)
            .map_err(|e| file_err(dir, e.to_string()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err(dir, e.to_string()))?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "avsc") && p.is_file());
        paths.sort();
        let mut loaded = Vec::with_capacity(paths.len());
        for path in paths {
            let json =
                std::fs::read_to_string(&path).map_err(|e| file_err(&path, e.to_string()))?;
            let fp = canonical::fingerprint(&json).map_err(|e| file_err(&path, e))?;
            let rt = self
                .add(WriterKey::Fingerprint(fp), &json)
                .map_err(|e| file_err(&path, e.to_string()))?;
            loaded.push((path, rt));
        }
        Ok(loaded)
    }

    /// The entry of `key`, asking the source on a registry-id miss.
    fn entry(&self, key: WriterKey) -> Result<Entry, CodecError> {
        if let Some(e) = read(&self.entries).get(&key) {
            return Ok(e.clone());
        }
        let id = match key {
            WriterKey::Fingerprint(fingerprint) => {
                return Err(CodecError::UnknownFingerprint { fingerprint })
            }
            WriterKey::SchemaId(id) => id,
        };
        // No lock is held while the source works (it may do network I/O).
        let source = read(&self.source).clone();
        let Some(source) = source else {
            return Err(CodecError::UnknownSchemaId {
                id,
                registry: false,
            });
        };
        match source.schema_by_id(id) {
            Ok(Some(json)) => self.bind(key, compile(key, &json)),
            Ok(None) => {
                let e = CodecError::UnknownSchemaId { id, registry: true };
                if self.unknown.load(Ordering::Relaxed) < MAX_UNKNOWN {
                    let mut map = write(&self.entries);
                    if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(key) {
                        self.unknown.fetch_add(1, Ordering::Relaxed);
                        slot.insert(Entry {
                            fingerprint: None,
                            outcome: Outcome::Failed(e.clone()),
                        });
                    }
                }
                Err(e)
            }
            Err(e) => Err(CodecError::SchemaSource {
                id,
                message: e.message,
                transient: e.transient,
            }),
        }
    }

    fn promote(&self, key: WriterKey, w: &Arc<Writer>) {
        for slot in &self.hot {
            let (k, _) = slot.get_or_init(|| (key, w.clone()));
            if *k == key {
                return;
            }
        }
    }

    /// Runs `f` on the writer of `key`, which must write `expected`.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        key: WriterKey,
        expected: RecordType,
        f: impl FnOnce(&Writer) -> Result<R, CodecError>,
    ) -> Result<R, CodecError> {
        for slot in &self.hot {
            match slot.get() {
                Some((k, w)) if *k == key => {
                    return if w.rt == expected {
                        f(w.as_ref())
                    } else {
                        Err(wrong_type(key, w.rt.full_name(), expected))
                    };
                }
                Some(_) => {}
                None => break,
            }
        }
        self.with_slow(key, expected, f)
    }

    #[inline(never)]
    fn with_slow<R>(
        &self,
        key: WriterKey,
        expected: RecordType,
        f: impl FnOnce(&Writer) -> Result<R, CodecError>,
    ) -> Result<R, CodecError> {
        match self.entry(key)?.outcome {
            Outcome::Ok(w) => {
                self.promote(key, &w);
                if w.rt == expected {
                    f(w.as_ref())
                } else {
                    Err(wrong_type(key, w.rt.full_name(), expected))
                }
            }
            Outcome::Foreign(name) => Err(wrong_type(key, name.to_string(), expected)),
            Outcome::Failed(e) => Err(e),
        }
    }

    /// The record type `key` writes (asking the source if needed).
    pub(crate) fn record_type(&self, key: WriterKey) -> Result<RecordType, CodecError> {
        match self.entry(key)?.outcome {
            Outcome::Ok(w) => Ok(w.rt),
            Outcome::Foreign(name) => Err(CodecError::BadWriterSchema {
                key,
                reason: format!("{name} is not a mailguard record"),
            }),
            Outcome::Failed(e) => Err(e),
        }
    }
}

#[cold]
fn wrong_type(key: WriterKey, got: String, expected: RecordType) -> CodecError {
    CodecError::WrongRecordType { key, got, expected }
}
