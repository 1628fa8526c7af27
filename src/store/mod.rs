//! Local state: a RocksDB cache of what the Kafka changelog and table topics say.
//!
//! Nothing here is the source of truth. The per-mailbox policy state is owned by the compacted
//! changelog topic; the directory and tenant tables by their compacted topics. RocksDB holds a
//! copy, written only *after* the Kafka transaction that produced it committed, together with the
//! changelog offset it corresponds to (one atomic write batch). So the local copy is never ahead
//! of Kafka, and a restart only has to replay the changelog from the recorded offset. Deleting the
//! directory costs a full restore and nothing else.
//!
//! Column families:
//! - `state`: key = input partition (4 bytes, big-endian) ++ mailbox; value = encoded
//!   [`crate::policy::MailboxState`]. The partition prefix lets a partition's state be scanned,
//!   dropped or restored on its own, which is what lets state follow partitions in a group.
//! - `owners`, `devices`, `tenants`: table values as they came from Kafka (Avro bytes), decoded
//!   on the rare lookup (only a trip needs the directory).
//! - `meta`: restore positions: `changelog/<p>` and `table/<topic>/<p>` → next offset (i64 BE).

mod rocks;

pub use rocks::{Batch, Store, Table};

/// Errors at the RocksDB boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value is not what we wrote.
    #[error("corrupt {what} in local state: {reason}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
