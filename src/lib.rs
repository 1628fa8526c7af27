//! mailguard: finds compromised mailboxes by the spam and viruses they send, and locks them out.
//!
//! An outbound mail gateway publishes a verdict for every sent message; mailguard keeps, per
//! mailbox, an exact sliding window of offending messages and a lockout ladder, and on a trip
//! publishes a block, scan requests for the owner's devices, an alert and event-log records —
//! exactly once, across crashes, restarts and rebalances.
//!
//! # Layout
//!
//! - [`policy`] — the pure core: window, de-duplication, lateness, lockout ladder, commands, the
//!   one mailbox normalisation and the size limits. Deterministic; takes time as an argument; no
//!   I/O of any kind.
//! - [`codec`] — Avro records of `schemas/` ⇄ policy types; single-object and Confluent framing.
//! - [`store`] — RocksDB cache of state and tables (never ahead of Kafka).
//! - [`kafka`] — client configurations, topic admin, the Java-compatible partitioner.
//! - [`pipeline`] — where the adapters meet: tables, restore, the exactly-once session.
//! - [`timers`] — the wall clock and the index of blocks waiting to expire.
//! - [`http`] — `/metrics`, `/healthz`, `/readyz`, and the [`api`] under `/v1`.
//! - [`api`] — the admin and query API: roles, tenant scopes, the queryable view.
//! - [`telemetry`] — every metric name, and logging set-up.
//! - [`config`] — the one validated configuration; secrets from files or the environment.
//! - [`registry`] — client of a Confluent-compatible schema registry.
//! - [`wiring`] — the codec of a configuration: schema ids from the config or the registry.
//! - [`backtest`] — `mailguard backtest`: the core over a history of verdicts, for the live
//!   and candidate policies; JSON and HTML reports.
//! - [`cli`] — `mailguard produce` / `tail`: the codec for people; `mailguard admin`: the API's
//!   client.
//!
//! Everything but `policy` and `codec` is behind the default `runtime` feature: without it the
//! crate is the pure core alone, which is what the fuzz targets (`fuzz/`) build.

#[cfg(feature = "runtime")]
pub mod api;
pub mod backtest;
#[cfg(feature = "runtime")]
pub mod cli;
pub mod codec;
#[cfg(feature = "runtime")]
pub mod config;
// Bodies of the fuzz targets (fuzz/), shared with tests/fuzz_replay.rs; not an API.
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "runtime")]
pub mod http;
#[cfg(feature = "runtime")]
pub mod kafka;
#[cfg(feature = "runtime")]
pub mod pipeline;
pub mod policy;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod telemetry;
#[cfg(feature = "runtime")]
pub mod timers;
#[cfg(feature = "runtime")]
pub mod wiring;
