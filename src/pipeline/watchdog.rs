//! Notices a librdkafka call that has outlived its own timeout.
//!
//! librdkafka's transactional calls take a timeout, but not every path honours it:
//! `send_offsets_to_transaction` waits forever when the group coordinator cannot be reached
//! (librdkafka issues 5456 and 5511, open in 2.12.1; the unit test below reproduces it on the
//! mock cluster). Seen under load in our own tests: a broker stalled for ten seconds and the
//! session thread never returned from that call, so the instance stopped processing for good
//! while its process looked alive.
//!
//! Such a call cannot be cancelled, and the producer stays unusable while it runs. The session
//! thread therefore wraps each such call in [`Watchdog::guard`]; the pipeline's supervisor
//! checks [`Watchdog::overdue`] once a second and, when a call is overdue, reports the instance
//! failed and returns an error, so the process exits and is restarted. A restart is a crash as
//! far as Kafka is concerned, which exactly-once processing survives by design (the next
//! `init_transactions` fences the stuck producer and aborts its transaction).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long past its own timeout a call may run before it counts as stuck. Generous: a
/// librdkafka call normally returns at its timeout or a little after it, and a false alarm
/// costs a restart.
pub const OVERRUN_GRACE: Duration = Duration::from_secs(30);

/// The guarded call in progress, if any, and when it is overdue.
#[derive(Debug)]
pub struct Watchdog {
    grace: Duration,
    current: Mutex<Option<Call>>,
}

#[derive(Debug, Clone, Copy)]
struct Call {
    what: &'static str,
    overdue_at: Instant,
}

/// A call that has run past its timeout and the grace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// The librdkafka call.
    pub what: &'static str,
    /// How long past the point where it counts as stuck.
    pub by: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Watchdog::new(OVERRUN_GRACE)
    }
}

impl Watchdog {
    /// A watchdog that allows calls `grace` beyond their timeout.
    pub fn new(grace: Duration) -> Self {
        Watchdog {
            grace,
            current: Mutex::new(None),
        }
    }

    /// Run `call`, which should return within `timeout`, under watch. Calls do not nest: the
    /// session thread makes one at a time.
    pub fn guard<T>(&self, what: &'static str, timeout: Duration, call: impl FnOnce() -> T) -> T {
        self.enter(what, timeout, Instant::now());
        let result = call();
        *self.current.lock().expect("watchdog lock") = None;
        result
    }

    pub(crate) fn enter(&self, what: &'static str, timeout: Duration, now: Instant) {
        *self.current.lock().expect("watchdog lock") = Some(Call {
            what,
            overdue_at: now + timeout + self.grace,
        });
    }

    /// The call in progress, if it is overdue at `now`.
    pub fn overdue(&self, now: Instant) -> Option<Overdue> {
        let call = (*self.current.lock().expect("watchdog lock"))?;
        (now > call.overdue_at).then(|| Overdue {
            what: call.what,
            by: now - call.overdue_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_overdue_only_past_its_timeout_and_the_grace_and_only_while_it_runs() {
        let w = Watchdog::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(
            w.overdue(t0 + Duration::from_secs(3600)),
            None,
            "nothing running"
        );
        w.enter("commit_transaction", Duration::from_secs(10), t0);
        assert_eq!(
            w.overdue(t0 + Duration::from_secs(40)),
            None,
            "at the limit"
        );
        assert_eq!(
            w.overdue(t0 + Duration::from_secs(45)),
            Some(Overdue {
                what: "commit_transaction",
                by: Duration::from_secs(5)
            })
        );
        let r = w.guard("abort_transaction", Duration::from_secs(1), || 7);
        assert_eq!(r, 7);
        assert_eq!(w.overdue(t0 + Duration::from_secs(3600)), None, "returned");
    }

    /// The defect this module exists for, on librdkafka's mock cluster: with the group
    /// coordinator down, `send_offsets_to_transaction` with a 1 s timeout does not return, and
    /// the watchdog says so. If a librdkafka upgrade fixes it, the call returns an error instead
    /// and this test fails: then the watchdog is a safety net only, and this test should assert
    /// the timeout is honoured.
    #[test]
    fn catches_send_offsets_to_transaction_ignoring_its_timeout() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::mocking::{MockCluster, MockCoordinator};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        use rdkafka::ClientConfig;
        use std::sync::Arc;

        let mock = MockCluster::new(3).expect("mock cluster");
        mock.create_topic("in", 1, 3).unwrap();
        mock.create_topic("out", 1, 3).unwrap();
        let client = |k: &str, v: &str| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", mock.bootstrap_servers())
                .set("log_level", "0")
                .set(k, v);
            c
        };
        let producer: BaseProducer = client("transactional.id", "stuck").create().unwrap();
        let t = Duration::from_secs(10);
        producer.init_transactions(t).unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(BaseRecord::to("out").key("k").payload("v"))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(t).unwrap();
        let consumer: BaseConsumer = client("group.id", "g").create().unwrap();
        mock.coordinator(MockCoordinator::Group("g".into()), 3)
            .unwrap();
        mock.broker_down(3).unwrap();
        let mut offsets = rdkafka::TopicPartitionList::new();
        offsets
            .add_partition_offset("in", 0, rdkafka::Offset::Offset(1))
            .unwrap();
        let cgm = consumer.group_metadata().unwrap();

        let w = Arc::new(Watchdog::new(Duration::from_secs(1)));
        let (tx, returned) = std::sync::mpsc::channel();
        let session = w.clone();
        std::thread::spawn(move || {
            let r = session.guard(
                "send_offsets_to_transaction",
                Duration::from_secs(1),
                || producer.send_offsets_to_transaction(&offsets, &cgm, Duration::from_secs(1)),
            );
            let _ = tx.send(format!("{r:?}"));
            // Never reached while the defect exists; the thread and the clients are leaked.
            std::mem::forget(producer);
        });
        // The call's timeout and the grace are 2 s; a second more and it is overdue.
        if let Ok(r) = returned.recv_timeout(Duration::from_secs(3)) {
            panic!(
                "send_offsets_to_transaction returned ({r}): librdkafka honours its timeout now"
            );
        }
        let overdue = w
            .overdue(Instant::now())
            .expect("the watchdog reports the stuck call");
        assert_eq!(overdue.what, "send_offsets_to_transaction");
        // Dropping the mock cluster or the consumer would wait on the stuck call.
        std::mem::forget(consumer);
        std::mem::forget(mock);
    }
}
