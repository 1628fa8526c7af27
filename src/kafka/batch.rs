//! Batch consumption for the group consumer: fetched records are routed to a queue of our own
//! and taken from it many at a time with `rd_kafka_consume_batch_queue`, which rust-rdkafka does
//! not wrap (its `poll` takes one record per call, with two clock reads and an allocation each).
//!
//! How it fits librdkafka (2.12, read in its source):
//!
//! - rust-rdkafka's `BaseConsumer` turns on the event API for rebalances, statistics and errors
//!   and reads them from the consumer queue with `poll`. That queue must not be batch-consumed:
//!   `rd_kafka_consume_batch_queue` would serve a rebalance op without a rebalance callback by
//!   unassigning everything. So only the partitions' fetch queues are forwarded here
//!   ([`FetchQueue::route`]); rebalances, statistics and errors stay on the consumer queue, which
//!   the session still polls (with a zero timeout) between batches.
//! - A fetch queue is forwarded here *before* its partition is assigned (from `pre_rebalance`).
//!   An application forward marks the queue (`RD_KAFKA_Q_F_FWD_APP`), so starting the fetcher
//!   does not re-forward it to the consumer queue; stopping it (revocation) clears the forward,
//!   so every assignment routes again.
//! - Records fetched before a revocation or seek carry an older op version and are discarded by
//!   librdkafka when served, so a batch never holds a record of a partition given up before it
//!   was taken. Control records (transaction markers) are skipped by librdkafka too.
//! - A message in a batch holds a reference into the client: every one is destroyed
//!   ([`Batch::clear`], also on drop) before the next batch is taken, and the session drops its
//!   batch and this queue before the consumer.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka_sys as rdsys;

use super::KafkaError;

/// The queue the group consumer's assigned partitions deliver their records to.
pub struct FetchQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are thread-safe (every operation takes the queue's lock); the handle
// is only destroyed in `Drop`, which needs exclusive ownership.
unsafe impl Send for FetchQueue {}
// SAFETY: as above: `route` and `fetch` only call librdkafka's locked queue operations.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new, empty queue of `consumer`'s client. It must be dropped before the consumer.
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Result<FetchQueue, KafkaError> {
        // SAFETY: the client pointer is valid while `consumer` lives; the queue is owned by the
        // returned handle and destroyed in `Drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        NonNull::new(queue)
            .map(|queue| FetchQueue { queue })
            .ok_or_else(|| KafkaError::Topic {
                topic: String::new(),
                reason: "librdkafka could not create a fetch queue".into(),
            })
    }

    /// Route the records of `topic` / `partition` here. Call it for every partition about to be
    /// assigned, before `assign` (the `pre_rebalance` callback): then its fetcher starts with
    /// the forward in place and no record of it ever reaches the consumer queue.
    pub fn route<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Result<(), KafkaError> {
        let unroutable = |reason: &str| KafkaError::Topic {
            topic: format!("{topic} [{partition}]"),
            reason: reason.into(),
        };
        let name = std::ffi::CString::new(topic).map_err(|_| unroutable("NUL in topic name"))?;
        // SAFETY: the client pointer is valid while `consumer` lives and `name` is a valid C
        // string for the call. librdkafka creates the partition's handle if it has none yet; the
        // returned queue handle is a new reference, released below.
        let part = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            )
        };
        let part = NonNull::new(part).ok_or_else(|| unroutable("no fetch queue for partition"))?;
        // SAFETY: both handles are valid. The forward keeps its own reference to our queue, and
        // destroying the partition's (non-owner) handle only drops the reference `get_partition`
        // took; the partition's fetch queue itself lives on in librdkafka.
        unsafe {
            rdsys::rd_kafka_queue_forward(part.as_ptr(), self.queue.as_ptr());
            rdsys::rd_kafka_queue_destroy(part.as_ptr());
        }
        Ok(())
    }

    /// Wait up to `wait` for a first record, then take whatever else is ready without waiting,
    /// up to `batch`'s capacity. `batch` is cleared first. Returns the number of entries taken.
    pub fn fetch(&self, wait: Duration, batch: &mut Batch) -> usize {
        batch.clear();
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // librdkafka waits until the array is full or the timeout passes, so a single call with a
        // timeout would hold back a partial batch: the first entry is awaited alone, the rest
        // taken at once (timeout 0).
        self.take(batch, 1, wait_ms);
        if !batch.is_empty() {
            self.take(batch, batch.capacity - 1, 0);
        }
        batch.len()
    }

    fn take(&self, batch: &mut Batch, n: usize, timeout_ms: i32) {
        let start = batch.msgs.len();
        batch.msgs.reserve(n);
        // SAFETY: the spare capacity holds at least `n` pointers; librdkafka writes at most `n`
        // of them and returns how many (or -1 on error, when it writes none). Each one it
        // returns is a message we own until `rd_kafka_message_destroy` (in `Batch::clear`).
        let got = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                batch.msgs.as_mut_ptr().add(start),
                n,
            )
        };
        if got > 0 {
            // SAFETY: librdkafka initialised exactly `got` (≤ n) pointers after `start`.
            unsafe { batch.msgs.set_len(start + got as usize) };
        }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: we own the queue (created by `rd_kafka_queue_new`); destroying it purges what
        // it still holds. Partitions still forwarded here hold their own reference, so a late
        // record finds a disabled queue and is dropped, never a freed one.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Messages taken by one [`FetchQueue::fetch`], owned until cleared (or dropped).
pub struct Batch {
    msgs: Vec<*mut rdsys::rd_kafka_message_t>,
    capacity: usize,
}

// SAFETY: the messages are plain heap objects of librdkafka, destroyable from any thread.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch of at most `capacity` (≥ 1) records.
    pub fn with_capacity(capacity: usize) -> Batch {
        let capacity = capacity.max(1);
        Batch {
            msgs: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The entries, in the order librdkafka returned them (per partition, offset order).
    pub fn iter(&self) -> impl Iterator<Item = Result<Fetched<'_>, RdError>> {
        self.msgs.iter().map(|&m| {
            // SAFETY: every pointer is a live message owned by this batch (destroyed only in
            // `clear`, which needs `&mut self`, so never while this borrow lives).
            let m = unsafe { &*m };
            if m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(RdError::MessageConsumption(RDKafkaErrorCode::from(m.err)));
            }
            Ok(Fetched { m })
        })
    }

    /// Destroy every message held.
    pub fn clear(&mut self) {
        for m in self.msgs.drain(..) {
            // SAFETY: each pointer came from `rd_kafka_consume_batch_queue` and is destroyed
            // exactly once (drained from the vector here).
            unsafe { rdsys::rd_kafka_message_destroy(m) }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One fetched record, borrowed from its [`Batch`].
pub struct Fetched<'b> {
    m: &'b rdsys::rd_kafka_message_t,
}

impl<'b> Fetched<'b> {
    /// The topic's name as bytes (no UTF-8 check: callers compare it with their own names).
    pub fn topic(&self) -> &'b [u8] {
        // SAFETY: a fetched message has its topic handle, alive while the message is; the name
        // is a NUL-terminated string owned by it.
        unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(self.m.rkt)) }.to_bytes()
    }

    /// Partition.
    pub fn partition(&self) -> i32 {
        self.m.partition
    }

    /// Offset.
    pub fn offset(&self) -> i64 {
        self.m.offset
    }

    /// Key, if any.
    pub fn key(&self) -> Option<&'b [u8]> {
        // SAFETY: librdkafka's key pointer and length describe one buffer owned by the message.
        (!self.m.key.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(self.m.key as *const u8, self.m.key_len) })
    }

    /// Value, if any (a tombstone has none).
    pub fn payload(&self) -> Option<&'b [u8]> {
        // SAFETY: as for the key.
        (!self.m.payload.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(self.m.payload as *const u8, self.m.len) })
    }

    /// The record's timestamp (epoch ms), if it has one.
    pub fn timestamp(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live; librdkafka writes the type through the pointer.
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.m, &mut kind) };
        (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0)
            .then_some(ts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

    use super::*;

    fn produce(bootstrap: &str, topic: &str, partition: i32, from: usize, n: usize) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        for i in from..from + n {
            let key = format!("p{partition}-k{i}");
            let value = format!("v{i}");
            p.send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            )
            .unwrap();
        }
        p.flush(Duration::from_secs(10)).unwrap();
    }

    /// Routes what is about to be assigned, as the session does.
    #[derive(Default)]
    struct Routing {
        fetch: Mutex<Option<Arc<FetchQueue>>>,
    }
    impl ClientContext for Routing {}
    impl ConsumerContext for Routing {
        fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
            if let Rebalance::Assign(tpl) = rebalance {
                let fetch = self.fetch.lock().unwrap().clone().expect("fetch queue set");
                for e in tpl.elements() {
                    fetch.route(consumer, e.topic(), e.partition()).unwrap();
                }
            }
        }
    }

    fn consumer(bootstrap: &str, group: Option<&str>) -> BaseConsumer<Routing> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        c.set("group.id", group.unwrap_or("batch-test-manual"));
        c.create_with_context(Routing::default()).unwrap()
    }

    /// (partition, offset, key, value) of what `fetch` returns until `n` records are read;
    /// also checks nothing arrives on the consumer queue. Returns the largest batch seen.
    fn read(
        c: &BaseConsumer<Routing>,
        q: &FetchQueue,
        batch: &mut Batch,
        n: usize,
        out: &mut Vec<(i32, i64, String, String)>,
    ) -> usize {
        let mut largest = 0;
        for _ in 0..500 {
            if out.len() >= n {
                return largest;
            }
            assert!(
                c.poll(Duration::ZERO).is_none_or(|r| r.is_err()),
                "a record reached the consumer queue"
            );
            largest = largest.max(q.fetch(Duration::from_millis(20), batch));
            for f in batch.iter() {
                let f = f.expect("no error entries");
                assert_eq!(f.topic(), b"t");
                assert!(f.timestamp().is_some());
                let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
                out.push((f.partition(), f.offset(), text(f.key()), text(f.payload())));
            }
        }
        panic!("read {} of {n} records", out.len());
    }

    #[test]
    fn a_group_member_reads_every_record_once_in_order_in_batches() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 2, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        produce(&bootstrap, "t", 0, 0, 300);
        produce(&bootstrap, "t", 1, 0, 200);
        let c = consumer(&bootstrap, Some("batch-test-group"));
        let q = Arc::new(FetchQueue::new(&c).unwrap());
        *c.context().fetch.lock().unwrap() = Some(q.clone());
        c.subscribe(&["t"]).unwrap();
        let mut batch = Batch::with_capacity(64);
        let mut got = Vec::new();
        let largest = read(&c, &q, &mut batch, 500, &mut got);
        assert!(largest > 1 && largest <= 64, "batches of {largest}");
        for p in 0..2 {
            let mine: Vec<_> = got.iter().filter(|r| r.0 == p).collect();
            assert_eq!(mine.len(), [300, 200][p as usize]);
            for (i, r) in mine.iter().enumerate() {
                assert_eq!(r.1, i as i64, "partition {p} in offset order, once each");
                assert_eq!(
                    (r.2.as_str(), r.3.as_str()),
                    (&*format!("p{p}-k{i}"), &*format!("v{i}"))
                );
            }
        }
        drop(batch);
        c.context().fetch.lock().unwrap().take();
        drop(q);
    }

    #[test]
    fn every_assignment_routes_again_and_nothing_from_before_it_is_returned() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        produce(&bootstrap, "t", 0, 0, 100);
        let c = consumer(&bootstrap, None);
        let q = FetchQueue::new(&c).unwrap();
        let assign_at = |offset: i64| {
            q.route(&c, "t", 0).unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("t", 0, Offset::Offset(offset))
                .unwrap();
            c.assign(&tpl).unwrap();
        };
        let mut batch = Batch::with_capacity(16);
        assign_at(0);
        let mut got = Vec::new();
        read(&c, &q, &mut batch, 20, &mut got);
        // Give the partition up with records still prefetched, then take it again further on.
        c.assign(&TopicPartitionList::new()).unwrap();
        produce(&bootstrap, "t", 0, 100, 10);
        assign_at(90);
        let mut again = Vec::new();
        read(&c, &q, &mut batch, 20, &mut again);
        let offsets: Vec<i64> = again.iter().map(|r| r.1).collect();
        assert_eq!(
            offsets,
            (90..110).collect::<Vec<_>>(),
            "only what follows the new start"
        );
        drop(batch);
        drop(q);
    }
}
