//! librdkafka client configurations, in one place so every client agrees on the essentials.
//!
//! [`build`] is the only place that applies the user's `kafka.client_properties`, for every
//! [`Role`]: first the role's tuning (which the user may change), then the user's properties,
//! then the role's essentials — the settings exactly-once, co-partitioning and the readers'
//! end-of-partition detection rest on. The essentials are [`REFUSED`] at config validation, so a
//! user who sets one learns it at start; applying them last also keeps an unvalidated
//! configuration from overriding them.

use rdkafka::ClientConfig;

use crate::config::{GroupProtocol, KafkaConfig};

/// The kinds of client mailguard creates.
#[derive(Debug, Clone, Copy)]
pub enum Role<'a> {
    /// The group consumer of the input topics.
    GroupConsumer,
    /// The transactional producer with this transactional id.
    TransactionalProducer(&'a str),
    /// A group-less reader of assigned partitions (restore, tables, the API view, `tail`).
    Reader(&'a str),
    /// A plain idempotent producer (CLI `produce`, the tables' DLQ, API commands).
    PlainProducer(&'a str),
    /// The admin client.
    Admin,
}

/// Properties the user may not set, each with the reason (and the field to use instead). Every
/// key a role sets among its essentials is here (a test checks it), plus librdkafka's aliases of
/// them and the settings whose default mailguard relies on:
/// - the connection and identities have their own fields, from which mailguard derives what
///   each client needs (the readers' group, the static member id, the transactional id);
/// - `isolation.level`: read_committed, so restore, the tables and the API view never see an
///   aborted transaction's writes (a crashed instance's half-written blocks);
/// - auto commit / offset store: offsets are committed only inside the transaction, with the
///   outputs they produced; `auto.offset.reset`: earliest, so a new group reads from the start
///   and loses nothing;
/// - `enable.idempotence` and `partitioner`: exactly-once writes, and the Java client's
///   murmur2 placement that co-partitioning with other producers relies on;
/// - `group.protocol` (from `kafka.group_protocol`) and the `range` assignment of either
///   protocol (`partition.assignment.strategy`, KIP-848's `group.remote.assignor`): partition p
///   of verdicts and of commands go to the same member;
/// - `enable.partition.eof`: how the readers know a restore or table load is complete.
pub const REFUSED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use kafka.bootstrap_servers"),
    ("metadata.broker.list", "use kafka.bootstrap_servers"),
    (
        "group.id",
        "use kafka.group_id (readers derive theirs from it)",
    ),
    (
        "group.instance.id",
        "derived from kafka.instance_id when kafka.static_membership is on",
    ),
    (
        "transactional.id",
        "derived from kafka.transactional_id_prefix and kafka.instance_id",
    ),
    ("transaction.timeout.ms", "use kafka.transaction_timeout_ms"),
    ("session.timeout.ms", "use kafka.session_timeout_ms"),
    (
        "isolation.level",
        "read_committed is what keeps aborted writes out of restore, the tables and the API view",
    ),
    (
        "enable.auto.commit",
        "offsets are committed only inside the transaction",
    ),
    (
        "auto.commit.enable",
        "offsets are committed only inside the transaction",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only inside the transaction",
    ),
    (
        "auto.offset.reset",
        "earliest, so a new group or reader loses no record",
    ),
    (
        "enable.idempotence",
        "exactly-once writes need the idempotent producer",
    ),
    (
        "partitioner",
        "murmur2_random places keys as Java producers do (co-partitioning)",
    ),
    (
        "partition.assignment.strategy",
        "range assignment keeps verdicts and commands co-partitioned",
    ),
    ("group.protocol", "use kafka.group_protocol"),
    (
        "group.remote.assignor",
        "the broker's range assignor keeps verdicts and commands co-partitioned",
    ),
    (
        "enable.partition.eof",
        "the readers detect a complete load by it",
    ),
];

/// Why `key` may not be set in `kafka.client_properties`, or `None` if it may.
pub fn refused(key: &str) -> Option<String> {
    let k = key.trim().to_ascii_lowercase();
    REFUSED
        .iter()
        .find(|(r, _)| *r == k)
        .map(|(r, why)| format!("mailguard sets `{r}` itself and refuses it here: {why}"))
}

/// The configuration of a client of `role`: the role's tuning, then the user's properties (but
/// the refused ones), then the role's essentials.
pub fn build(cfg: &KafkaConfig, role: Role<'_>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in tuning(cfg, role) {
        c.set(k, v);
    }
    for (k, v) in &cfg.client_properties {
        if refused(k).is_none() {
            c.set(k, v);
        }
    }
    for (k, v) in essentials(cfg, role) {
        c.set(k, v);
    }
    c
}

/// Settings chosen for speed or visibility; the user's properties override them.
fn tuning(cfg: &KafkaConfig, role: Role<'_>) -> Vec<(&'static str, String)> {
    let client_id = match role {
        Role::GroupConsumer => format!("mailguard-{}", cfg.instance_id),
        Role::TransactionalProducer(_) => format!("mailguard-{}-tx", cfg.instance_id),
        Role::Reader(purpose) => format!("mailguard-{}-{purpose}", cfg.instance_id),
        Role::PlainProducer(purpose) => format!("mailguard-{purpose}"),
        Role::Admin => "mailguard-admin".into(),
    };
    let mut t = vec![
        ("client.id", client_id),
        // Fail a dead broker fast in logs, but keep retrying: Kafka outages are expected.
        ("socket.keepalive.enable", "true".into()),
    ];
    let more: &[(&'static str, &str)] = match role {
        // When the local queue holds `queued.min.messages`, librdkafka pauses fetching for
        // `fetch.queue.backoff.ms` (default 1 s). mailguard drains 100 000 records in well
        // under a second, so the default left it idle most of the time (measured: 0.29 of
        // the raw consumer's throughput, CPU 80 % idle). Statistics every 5 s are the source
        // of `mailguard_consumer_lag`. The prefetch is bounded to 8 MiB of records (default
        // 64 MiB): a queued record costs librdkafka about 250 bytes besides its own, so with
        // small verdicts the default held over 200 MB, a tenth of a second's worth of input is
        // all the batches need.
        Role::GroupConsumer => {
            if cfg.group_protocol == GroupProtocol::Classic {
                t.push((
                    "heartbeat.interval.ms",
                    classic_heartbeat_ms(cfg).to_string(),
                ));
            }
            &[
                ("fetch.queue.backoff.ms", "10"),
                ("statistics.interval.ms", "5000"),
                ("queued.max.messages.kbytes", "8192"),
                ("queued.min.messages", "20000"),
            ]
        }
        Role::TransactionalProducer(_) => &[
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "1000000"),
        ],
        // End of partition is known only when a fetch at the end returns empty, after
        // `fetch.wait.max.ms` (default 500 ms): that wait was most of a small partition's restore.
        Role::Reader(_) => &[
            ("fetch.wait.max.ms", "50"),
            ("fetch.queue.backoff.ms", "10"),
        ],
        Role::PlainProducer(_) => &[("linger.ms", "5")],
        Role::Admin => &[],
    };
    t.extend(owned(more));
    t
}

fn owned(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// What correctness rests on; every key is in [`REFUSED`].
fn essentials(cfg: &KafkaConfig, role: Role<'_>) -> Vec<(&'static str, String)> {
    let mut e = vec![("bootstrap.servers", cfg.bootstrap_servers.clone())];
    let never_auto_commit = [
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("isolation.level", "read_committed"),
    ];
    match role {
        // Offsets are never auto-committed: they travel inside the producer's transaction
        // (`send_offsets_to_transaction`).
        Role::GroupConsumer => {
            e.push(("group.id", cfg.group_id.clone()));
            e.extend(group_membership(cfg));
            e.extend(owned(&never_auto_commit));
            e.push(("enable.partition.eof", "false".into()));
        }
        // `murmur2_random` is the Java client's partitioner, so any producer in any language
        // agrees on where a key lives.
        Role::TransactionalProducer(transactional_id) => {
            e.push(("transactional.id", transactional_id.to_string()));
            e.push((
                "transaction.timeout.ms",
                cfg.transaction_timeout_ms.to_string(),
            ));
            e.extend(owned(&[
                ("enable.idempotence", "true"),
                ("partitioner", "murmur2_random"),
            ]));
        }
        // A group id is required by librdkafka even for assign(); nothing is committed under
        // it, but librdkafka looks up its coordinator (ACL: Describe on the group).
        // read_committed, so an aborted write is never restored.
        Role::Reader(purpose) => {
            e.push(("group.id", reader_group(cfg, purpose)));
            e.extend(owned(&never_auto_commit));
            e.extend(owned(&[("enable.partition.eof", "true")]));
        }
        Role::PlainProducer(_) => e.extend(owned(&[
            ("enable.idempotence", "true"),
            ("partitioner", "murmur2_random"),
        ])),
        Role::Admin => {}
    }
    e
}

/// How the group consumer takes part in the group (`kafka.group_protocol`,
/// `kafka.static_membership`). Both protocols assign by `range`, which gives partition p of
/// verdicts, commands and routed scan results to the same member (co-partitioning): the
/// classic protocol in the client (`partition.assignment.strategy`), KIP-848 on the broker
/// (`group.remote.assignor`). With KIP-848 the broker's `group.consumer.session.timeout.ms` and
/// `group.consumer.heartbeat.interval.ms` replace the client's session timeout and heartbeat
/// (librdkafka refuses them there). A static member (`group.instance.id`) that restarts within
/// the session timeout keeps its partitions; one that stops keeps them until it times out.
fn group_membership(cfg: &KafkaConfig) -> Vec<(&'static str, String)> {
    let mut e = vec![("group.protocol", cfg.group_protocol.as_str().to_string())];
    if cfg.static_membership {
        e.push((
            "group.instance.id",
            format!("mailguard-{}", cfg.instance_id),
        ));
    }
    match cfg.group_protocol {
        GroupProtocol::Classic => {
            e.push(("session.timeout.ms", cfg.session_timeout_ms.to_string()));
            e.push(("partition.assignment.strategy", "range".into()));
        }
        GroupProtocol::Consumer => e.push(("group.remote.assignor", "range".into())),
    }
    e
}

/// The classic protocol's heartbeat: a tenth of the session timeout (librdkafka's default is
/// 3 s), within 100 ms..=3 s. A member learns of a rebalance (another member left or joined)
/// only from a heartbeat's answer, so this bounds how long a planned hand-over waits before
/// it starts.
fn classic_heartbeat_ms(cfg: &KafkaConfig) -> u64 {
    (cfg.session_timeout_ms / 10).clamp(100, 3_000)
}

/// The group consumer of the input topics ([`Role::GroupConsumer`]).
pub fn group_consumer(cfg: &KafkaConfig) -> ClientConfig {
    build(cfg, Role::GroupConsumer)
}

/// The transactional producer of all outputs, the changelog and the DLQ
/// ([`Role::TransactionalProducer`]).
pub fn transactional_producer(cfg: &KafkaConfig, transactional_id: &str) -> ClientConfig {
    build(cfg, Role::TransactionalProducer(transactional_id))
}

/// A consumer without a group, reading assigned partitions to their end: state restore and
/// tables ([`Role::Reader`]). read_committed, so an aborted write is never restored.
pub fn reader(cfg: &KafkaConfig, purpose: &str) -> ClientConfig {
    build(cfg, Role::Reader(purpose))
}

/// The group id of a [`reader`]: `<group_id>.reader.<instance_id>.<purpose>`. Derived from the
/// group id, so one prefixed ACL (`<group_id>.reader.`) covers every reader.
pub fn reader_group(cfg: &KafkaConfig, purpose: &str) -> String {
    format!("{}.reader.{}.{purpose}", cfg.group_id, cfg.instance_id)
}

/// A plain idempotent producer (CLI `produce`, table DLQ) ([`Role::PlainProducer`]).
pub fn plain_producer(cfg: &KafkaConfig, purpose: &str) -> ClientConfig {
    build(cfg, Role::PlainProducer(purpose))
}

/// The admin client ([`Role::Admin`]).
pub fn admin(cfg: &KafkaConfig) -> ClientConfig {
    build(cfg, Role::Admin)
}

/// Context of the readers: end-of-partition is how they know a restore or a table load is
/// complete, not an error, so librdkafka's "global error" log line for it is suppressed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReaderContext;

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!(%error, %reason, "librdkafka error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Role<'static>; 5] = [
        Role::GroupConsumer,
        Role::TransactionalProducer("mailguard-0"),
        Role::Reader("restore"),
        Role::PlainProducer("cli"),
        Role::Admin,
    ];

    #[test]
    fn every_essential_is_refused_and_wins_over_the_users_properties() {
        let mut cfg = KafkaConfig::default();
        for (key, _) in REFUSED {
            cfg.client_properties.insert(key.to_string(), "user".into());
        }
        cfg.client_properties
            .insert("linger.ms".into(), "50".into());
        cfg.client_properties
            .insert("security.protocol".into(), "SSL".into());
        for role in ROLES {
            let built = build(&cfg, role);
            for (key, value) in essentials(&cfg, role) {
                assert!(refused(key).is_some(), "{role:?}: {key} is not refused");
                assert_eq!(built.get(key), Some(value.as_str()), "{role:?}: {key}");
            }
            for (key, _) in REFUSED {
                assert_ne!(built.get(key), Some("user"), "{role:?}: {key}");
            }
            assert_eq!(built.get("security.protocol"), Some("SSL"), "{role:?}");
        }
        // Tuning is the user's to change.
        assert_eq!(
            build(&cfg, Role::PlainProducer("x")).get("linger.ms"),
            Some("50")
        );
        let g = group_consumer(&cfg);
        assert_eq!(g.get("isolation.level"), Some("read_committed"));
        assert_eq!(g.get("group.id"), Some("mailguard"));
        assert_eq!(
            g.get("group.instance.id"),
            None,
            "dynamic membership by default"
        );
        let r = reader(&cfg, "restore");
        assert_eq!(r.get("group.id"), Some("mailguard.reader.0.restore"));
        assert_eq!(r.get("enable.partition.eof"), Some("true"));
        let t = transactional_producer(&cfg, "mailguard-0");
        assert_eq!(t.get("transactional.id"), Some("mailguard-0"));
        assert_eq!(plain_producer(&cfg, "cli").get("transactional.id"), None);
    }

    #[test]
    fn refusal_names_the_key_and_the_reason() {
        let why = refused(" Isolation.Level").unwrap();
        assert!(
            why.contains("`isolation.level`") && why.contains("read_committed"),
            "{why}"
        );
        assert!(refused("bootstrap.servers")
            .unwrap()
            .contains("kafka.bootstrap_servers"));
        assert_eq!(refused("sasl.password"), None);
        assert_eq!(refused("linger.ms"), None);
    }

    #[test]
    fn each_group_protocol_gets_only_the_settings_librdkafka_accepts_for_it() {
        let mut cfg = KafkaConfig {
            group_protocol: GroupProtocol::Classic,
            static_membership: true,
            ..KafkaConfig::default()
        };
        let g = group_consumer(&cfg);
        assert_eq!(g.get("group.protocol"), Some("classic"));
        assert_eq!(g.get("group.instance.id"), Some("mailguard-0"));
        assert_eq!(g.get("session.timeout.ms"), Some("8000"));
        assert_eq!(g.get("heartbeat.interval.ms"), Some("800"));
        assert_eq!(g.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(g.get("group.remote.assignor"), None);

        cfg.group_protocol = GroupProtocol::Consumer;
        cfg.static_membership = false;
        let g = group_consumer(&cfg);
        assert_eq!(g.get("group.protocol"), Some("consumer"));
        assert_eq!(g.get("group.remote.assignor"), Some("range"));
        for classic_only in [
            "group.instance.id",
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "partition.assignment.strategy",
        ] {
            assert_eq!(g.get(classic_only), None, "{classic_only}");
        }
        // librdkafka itself accepts the result (it refuses classic-only keys with KIP-848).
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = g.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
