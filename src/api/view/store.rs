//! The view's local RocksDB: what the view read from mailguard's topics, laid out for the
//! queries. It is a cache of those topics and nothing else: the directory is emptied when opened
//! and rebuilt from the topics' beginnings, so it never needs a migration, and no write is
//! logged (a crash loses nothing the topics do not still hold).
//!
//! Memory is bounded by RocksDB's settings, not by the history: one LRU block cache, two write
//! buffers, a bounded number of open files (each holding its index and bloom filter). The history on
//! disk is bounded by the retention (`api.view_retention_ms`) and the per-mailbox incident bound.
//!
//! Keys start with one byte naming the kind of entry; every string in a key but the last is
//! length-prefixed (u32 big-endian), so no tenant or mailbox name — whatever bytes a producer put
//! in it — can make one tenant's range overlap another's; the last part is raw, so lists keyed by
//! name (the blocked list) are in name order. Times in keys sort newest first ([`desc`]).
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `S` | mailbox | the changelog's state bytes |
//! | `B` | tenant, mailbox | — (the tenant's mailboxes whose state holds a block) |
//! | `X` | tenant, key | — (the keys whose state holds an exemption of the tenant) |
//! | `I` | incident id | [`IncidentHead`] (JSON) |
//! | `J` | incident id, event id | event (see below) |
//! | `R` | mailbox, incident id | — (the incidents of a mailbox) |
//! | `N` | tenant, desc(when), incident id | — (the tenant's incidents, newest first) |
//! | `E` | tenant, desc(at), event id | report item (see below) |
//! | `M` | tenant, mailbox, desc(at), event id | report item (the events report by mailbox) |
//! | `A` | tenant, desc(at), alert id | alert (single-object Avro) |
//! | `T` | asc(at), the `E` or `A` key | the `M` key or nothing (what retention deletes, oldest first) |
//!
//! An event value is its kind's name (length-prefixed) followed by, in `E` and `M`, the JSON item
//! the events report serves, and in `J` the event in single-object Avro of this build's schema;
//! a kind filter compares bytes before reading anything else.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, Options, ReadOptions, WriteBatch, WriteOptions, DB};

use crate::codec::Codec;
use crate::policy::{Alert, Effect, EventLogEntry, Millis};
use crate::store::StoreError;

/// Block cache of the view (data, index and filter blocks).
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// One write buffer; two at most.
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// A key kind (the first byte of every key).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Kind {
    State = b'S',
    Blocked = b'B',
    Exempt = b'X',
    Incident = b'I',
    IncidentEvent = b'J',
    Recent = b'R',
    TenantIncident = b'N',
    Event = b'E',
    MailboxEvent = b'M',
    Alert = b'A',
    Expiry = b'T',
}

/// Builds a key: the kind, then length-prefixed strings and fixed-width parts.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    /// A key of `kind`.
    pub fn new(kind: Kind) -> Key {
        Key(vec![kind as u8])
    }

    /// Appends a string, length-prefixed.
    pub fn s(mut self, s: &str) -> Key {
        self.0.extend_from_slice(&(s.len() as u32).to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends raw bytes (the last part of a key, or a fixed-width one).
    pub fn raw(mut self, b: &[u8]) -> Key {
        self.0.extend_from_slice(b);
        self
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Into the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A time that sorts newest first.
pub fn desc(at: Millis) -> [u8; 8] {
    (!((at as u64) ^ (1 << 63))).to_be_bytes()
}

/// A time that sorts oldest first.
pub fn asc(at: Millis) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time of [`desc`] bytes.
pub fn undesc(b: &[u8]) -> Option<Millis> {
    let b: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((!u64::from_be_bytes(b) ^ (1 << 63)) as Millis)
}

/// The time of [`asc`] bytes.
pub fn unasc(b: &[u8]) -> Option<Millis> {
    let b: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as Millis)
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Splits a length-prefixed string off the front of `b`.
pub fn take_str(b: &[u8]) -> Option<(&str, &[u8])> {
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = std::str::from_utf8(b.get(4..4 + n)?).ok()?;
    Some((s, &b[4 + n..]))
}

/// The view's RocksDB. Cheap to clone; `Send + Sync` (RocksDB serialises its own access).
#[derive(Clone)]
pub struct ViewStore {
    db: Arc<DB>,
    codec: Codec,
}

impl ViewStore {
    /// Empties `dir` and opens a new view store in it.
    pub fn open_empty(dir: &Path) -> Result<ViewStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(256);
        opts.increase_parallelism(2);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
        // Index and filter blocks stay with their table readers (about 1.3 bytes per key, and
        // at most 256 files open), outside the cache: in a cache this small a load evicts and
        // re-reads them on every lookup.
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
        let io = |e: std::io::Error| StoreError::Corrupt {
            what: "view directory",
            reason: format!("{}: {e}", dir.display()),
        };
        if dir.exists() {
            // Removes the view's files only (and fails while another process has them open).
            DB::destroy(&opts, dir)?;
            // Anything else there is someone else's: never deleted, and no place for the view.
            if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
                return Err(StoreError::Corrupt {
                    what: "view directory",
                    reason: format!(
                        "{} holds files that are not the view's; give the view a directory of its own",
                        dir.display()
                    ),
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let db = DB::open(&opts, dir)?;
        Ok(ViewStore {
            db: Arc::new(db),
            codec: Codec::default(),
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key.bytes())?)
    }

    /// Applies a batch (not logged: the topics are the log).
    pub fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut wo = WriteOptions::default();
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Calls `f` with each key (after `prefix`) and value starting with `prefix`, from `start`
    /// (a full key, inclusive; `None`: the prefix's first), in key order, until `f` returns false.
    pub fn scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut ro = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            ro.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_opt(ro);
        match start {
            Some(s) if s > prefix => it.seek(s),
            _ => it.seek(prefix),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) || !f(&k[prefix.len()..], v) {
                break;
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// An event as stored: its kind's name, then the event.
    pub fn encode_event(&self, e: &EventLogEntry) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::new();
        self.codec
            .encode_effect(&Effect::Event(e.clone()), &mut body)
            .map_err(|err| corrupt("event", err))?;
        Ok(with_kind(e.kind.as_str(), &body))
    }

    /// The kind name of a stored event or report item, without decoding it.
    pub fn event_kind(v: &[u8]) -> Option<&str> {
        take_str(v).map(|(k, _)| k)
    }

    /// The body of a report item (after its kind).
    pub fn item_body(v: &[u8]) -> Option<&[u8]> {
        take_str(v).map(|(_, b)| b)
    }

    /// A stored event.
    pub fn decode_event(&self, v: &[u8]) -> Result<EventLogEntry, StoreError> {
        let (_, body) = take_str(v).ok_or_else(|| corrupt("event", "no kind"))?;
        match self.codec.decode_effect(body) {
            Ok(Effect::Event(e)) => Ok(e),
            Ok(_) => Err(corrupt("event", "not an event")),
            Err(err) => Err(corrupt("event", err)),
        }
    }

    /// An alert as stored.
    pub fn encode_alert(&self, a: &Alert) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        self.codec
            .encode_effect(&Effect::Alert(a.clone()), &mut out)
            .map_err(|err| corrupt("alert", err))?;
        Ok(out)
    }

    /// A stored alert.
    pub fn decode_alert(&self, v: &[u8]) -> Result<Alert, StoreError> {
        match self.codec.decode_effect(v) {
            Ok(Effect::Alert(a)) => Ok(a),
            Ok(_) => Err(corrupt("alert", "not an alert")),
            Err(err) => Err(corrupt("alert", err)),
        }
    }
}

/// `body` after its kind's name (length-prefixed), so a kind filter compares bytes first.
pub fn with_kind(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Key(Vec::new()).s(kind).into_bytes();
    out.extend_from_slice(body);
    out
}

fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_both_ways_and_round_trip() {
        let ts = [i64::MIN, -5, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            assert!(asc(w[0]) < asc(w[1]));
            assert!(desc(w[0]) > desc(w[1]));
        }
        for t in ts {
            assert_eq!(unasc(&asc(t)), Some(t));
            assert_eq!(undesc(&desc(t)), Some(t));
        }
    }

    #[test]
    fn length_prefixed_parts_keep_tenants_apart() {
        // A tenant whose name runs on into another's key is still another tenant's prefix.
        let a = Key::new(Kind::Event).s("a").into_bytes();
        let ab = Key::new(Kind::Event)
            .s("a\0\0\0\x01b")
            .raw(&desc(5))
            .into_bytes();
        assert!(!ab.starts_with(&a));
        let (s, rest) = take_str(&ab[1..]).unwrap();
        assert_eq!((s, rest.len()), ("a\0\0\0\x01b", 8));
        assert_eq!(prefix_end(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn scans_stay_in_their_prefix_from_a_start_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = ViewStore::open_empty(&dir.path().join("v")).unwrap();
        let mut b = WriteBatch::default();
        for (t, n) in [("a", 1), ("a", 2), ("a", 3), ("b", 1)] {
            b.put(Key::new(Kind::Event).s(t).raw(&desc(n)).bytes(), [n as u8]);
        }
        s.write(b).unwrap();
        let p = Key::new(Kind::Event).s("a").into_bytes();
        let mut seen = Vec::new();
        s.scan(&p, None, |k, v| {
            seen.push((undesc(k).unwrap(), v[0]));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            [(3, 3), (2, 2), (1, 1)],
            "newest first, only tenant a"
        );
        let from = Key::new(Kind::Event).s("a").raw(&desc(2)).into_bytes();
        let mut seen = Vec::new();
        s.scan(&p, Some(&from), |k, _| {
            seen.push(undesc(k).unwrap());
            true
        })
        .unwrap();
        assert_eq!(seen, [2, 1]);
        // A directory holding anything else is refused, and left alone.
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), "mine").unwrap();
        assert!(ViewStore::open_empty(&other).is_err());
        assert!(other.join("notes.txt").exists());
        // Reopening empties it: the view is rebuilt from the topics.
        drop(s);
        let s = ViewStore::open_empty(&dir.path().join("v")).unwrap();
        let mut n = 0;
        s.scan(b"E", None, |_, _| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 0);
    }
}
