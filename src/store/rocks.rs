//! RocksDB implementation of the local state cache (layout in the module doc of `store`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use super::StoreError;

const CF_STATE: &str = "state";
const CF_META: &str = "meta";
const CF_OWNERS: &str = "owners";
const CF_DEVICES: &str = "devices";
const CF_TENANTS: &str = "tenants";
const CF_EXEMPTIONS: &str = "exemptions";

/// A table cached in RocksDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `directory.mailboxes`: mailbox → MailboxOwner.
    Owners,
    /// `directory.devices`: owner id → OwnerDevices.
    Devices,
    /// `tenant.settings`: tenant id → TenantSettings.
    Tenants,
    /// `mailguard.exemptions`: `tenant/pattern` → Exemption.
    Exemptions,
}

impl Table {
    fn cf(self) -> &'static str {
        match self {
            Table::Owners => CF_OWNERS,
            Table::Devices => CF_DEVICES,
            Table::Tenants => CF_TENANTS,
            Table::Exemptions => CF_EXEMPTIONS,
        }
    }

    /// The id a record key of this table stores its entity under: the key itself, for
    /// `directory.mailboxes` normalised as every mailbox is ([`crate::policy::Mailbox`]).
    pub fn id_of_key(self, key: &str) -> String {
        match self {
            Table::Owners => crate::policy::Mailbox::new(key).into_string(),
            Table::Devices | Table::Tenants | Table::Exemptions => key.to_string(),
        }
    }

    /// Short name for metrics and logs.
    pub fn name(self) -> &'static str {
        self.cf()
    }
}

/// Handle to the local store; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
}

fn state_key(partition: i32, mailbox: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + mailbox.len());
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k.extend_from_slice(mailbox.as_bytes());
    k
}

fn changelog_key(partition: i32) -> Vec<u8> {
    let mut k = b"changelog/".to_vec();
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

fn table_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = format!("table/{topic}/").into_bytes();
    k.extend_from_slice(&(partition as u32).to_be_bytes());
    k
}

fn decode_offset(v: &[u8]) -> Result<i64, StoreError> {
    let arr: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt {
        what: "offset",
        reason: format!("{} bytes, want 8", v.len()),
    })?;
    Ok(i64::from_be_bytes(arr))
}

/// Writes that become visible together (one RocksDB write batch).
#[derive(Default)]
pub struct Batch {
    inner: WriteBatch,
    ops: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of operations staged.
    pub fn len(&self) -> usize {
        self.ops
    }
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }
}

/// Memtables of every column family together (RocksDB flushes the largest beyond it).
const MEMTABLE_BUDGET: usize = 48 << 20;
/// Memtable of the states (two of them at most: one filling, one flushing).
const STATE_WRITE_BUFFER: usize = 16 << 20;
/// Memtable of each table (owners, devices, tenants, exemptions, meta).
const TABLE_WRITE_BUFFER: usize = 4 << 20;
/// Block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 16 << 20;

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // The memory budget, measured with 1 M mailboxes (docs/PERFORMANCE.md): memtables of
        // all column families together at most `MEMTABLE_BUDGET`, one small block cache, and
        // the index and filter blocks with their table readers (about 1.3 bytes a key).
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = [
            CF_STATE,
            CF_META,
            CF_OWNERS,
            CF_DEVICES,
            CF_TENANTS,
            CF_EXEMPTIONS,
        ]
        .map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // The states are written all the time; the tables rarely, in bulk at load.
            let buffer = if name == CF_STATE {
                STATE_WRITE_BUFFER
            } else {
                TABLE_WRITE_BUFFER
            };
            o.set_write_buffer_size(buffer);
            o.set_max_write_buffer_number(2);
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // A verdict of a mailbox without state looks up a key that is not there.
            table.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Store { db: Arc::new(db) })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// Apply a batch atomically. The WAL is kept but not synced: losing the tail of it in a host
    /// crash loses writes *and* the offsets they correspond to together, which a restore repairs.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.ops == 0 {
            return Ok(());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(batch.inner, &wo)?;
        Ok(())
    }

    /// The encoded state of `mailbox` in input partition `partition`.
    pub fn get_state(&self, partition: i32, mailbox: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_STATE), state_key(partition, mailbox))?
            .map(|v| v.to_vec()))
    }

    /// Stage a state write (`None` deletes).
    pub fn stage_state(
        &self,
        batch: &mut Batch,
        partition: i32,
        mailbox: &str,
        value: Option<&[u8]>,
    ) {
        let key = state_key(partition, mailbox);
        match value {
            Some(v) => batch.inner.put_cf(self.cf(CF_STATE), key, v),
            None => batch.inner.delete_cf(self.cf(CF_STATE), key),
        }
        batch.ops += 1;
    }

    /// Stage the next changelog offset to restore from for `partition`.
    pub fn stage_changelog_position(&self, batch: &mut Batch, partition: i32, next_offset: i64) {
        batch.inner.put_cf(
            self.cf(CF_META),
            changelog_key(partition),
            next_offset.to_be_bytes(),
        );
        batch.ops += 1;
    }

    /// The next changelog offset to restore from, if this partition was ever restored here.
    pub fn changelog_position(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(CF_META), changelog_key(partition))?
            .map(|v| decode_offset(&v))
            .transpose()
    }

    /// Forget everything about `partition` (state and restore position), e.g. when the local
    /// copy is found to be ahead of the changelog.
    pub fn clear_partition(&self, partition: i32) -> Result<(), StoreError> {
        let from = (partition as u32).to_be_bytes().to_vec();
        let to = match (partition as u32).checked_add(1) {
            Some(n) => n.to_be_bytes().to_vec(),
            None => vec![0xff; 5],
        };
        let mut b = WriteBatch::default();
        b.delete_range_cf(self.cf(CF_STATE), from, to);
        b.delete_cf(self.cf(CF_META), changelog_key(partition));
        self.db.write(b)?;
        Ok(())
    }

    /// Visit every (mailbox, encoded state) of `partition`.
    pub fn for_each_state(
        &self,
        partition: i32,
        mut f: impl FnMut(&str, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_states(partition, None, |m, v| f(m, v).map(|()| true))
    }

    /// Visit (mailbox, encoded state) of `partition` in mailbox order, starting after `after`
    /// (exclusive), while `f` returns `true`.
    pub fn scan_states(
        &self,
        partition: i32,
        after: Option<&str>,
        mut f: impl FnMut(&str, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let prefix = (partition as u32).to_be_bytes();
        let mut from = prefix.to_vec();
        if let Some(m) = after {
            from.extend_from_slice(m.as_bytes());
        }
        let iter = self.db.iterator_cf(
            self.cf(CF_STATE),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let mailbox = std::str::from_utf8(&k[4..]).map_err(|e| StoreError::Corrupt {
                what: "state key",
                reason: e.to_string(),
            })?;
            if after == Some(mailbox) {
                continue;
            }
            if !f(mailbox, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Stage a table upsert (`None` = tombstone) and the table position it came from.
    pub fn stage_table(&self, batch: &mut Batch, table: Table, key: &str, value: Option<&[u8]>) {
        match value {
            Some(v) => batch.inner.put_cf(self.cf(table.cf()), key.as_bytes(), v),
            None => batch.inner.delete_cf(self.cf(table.cf()), key.as_bytes()),
        }
        batch.ops += 1;
    }

    /// Stage the next offset to read of a table topic partition.
    pub fn stage_table_position(
        &self,
        batch: &mut Batch,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) {
        batch.inner.put_cf(
            self.cf(CF_META),
            table_key(topic, partition),
            next_offset.to_be_bytes(),
        );
        batch.ops += 1;
    }

    /// The next offset to read of a table topic partition.
    pub fn table_position(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(CF_META), table_key(topic, partition))?
            .map(|v| decode_offset(&v))
            .transpose()
    }

    /// A table value.
    pub fn get_table(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(table.cf()), key.as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Visit every entry of a table.
    pub fn for_each_table(
        &self,
        table: Table,
        mut f: impl FnMut(&str, &[u8]),
    ) -> Result<(), StoreError> {
        for item in self
            .db
            .iterator_cf(self.cf(table.cf()), IteratorMode::Start)
        {
            let (k, v) = item?;
            f(&String::from_utf8_lossy(&k), &v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_per_partition_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut b = Batch::new();
        s.stage_state(&mut b, 0, "a@x", Some(b"A0"));
        s.stage_state(&mut b, 1, "a@x", Some(b"A1"));
        s.stage_state(&mut b, 1, "b@x", Some(b"B1"));
        s.stage_changelog_position(&mut b, 1, 42);
        s.write(b).unwrap();
        assert_eq!(s.get_state(0, "a@x").unwrap().as_deref(), Some(&b"A0"[..]));
        assert_eq!(s.changelog_position(1).unwrap(), Some(42));
        assert_eq!(s.changelog_position(0).unwrap(), None);
        let mut seen = vec![];
        s.for_each_state(1, |m, v| {
            seen.push((m.to_string(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("a@x".into(), b"A1".to_vec()),
                ("b@x".into(), b"B1".to_vec())
            ]
        );
        s.clear_partition(1).unwrap();
        assert_eq!(s.get_state(1, "a@x").unwrap(), None);
        assert_eq!(s.changelog_position(1).unwrap(), None);
        assert_eq!(
            s.get_state(0, "a@x").unwrap().as_deref(),
            Some(&b"A0"[..]),
            "other partitions untouched"
        );
        let mut b = Batch::new();
        s.stage_state(&mut b, 0, "a@x", None);
        s.write(b).unwrap();
        assert_eq!(s.get_state(0, "a@x").unwrap(), None);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let mut b = Batch::new();
            s.stage_table(&mut b, Table::Owners, "a@x", Some(b"owner"));
            s.stage_table_position(&mut b, "directory.mailboxes", 2, 7);
            s.write(b).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get_table(Table::Owners, "a@x").unwrap().as_deref(),
            Some(&b"owner"[..])
        );
        assert_eq!(s.table_position("directory.mailboxes", 2).unwrap(), Some(7));
        let mut b = Batch::new();
        s.stage_table(&mut b, Table::Owners, "a@x", None);
        s.write(b).unwrap();
        assert_eq!(s.get_table(Table::Owners, "a@x").unwrap(), None);
    }
}
