//! Kafka adapters: client configurations ([`client`]), topic administration, the start-up
//! preflight, the Java-compatible partitioner, and the one reader of assigned partitions
//! ([`reader`]) that state restore, the tables, the API's view and `tail` share.

pub mod admin;
pub mod batch;
pub mod client;
pub mod partitioner;
pub mod preflight;
pub mod reader;

/// Errors at the Kafka boundary.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka said no.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// A topic is missing or unusable.
    #[error("topic `{topic}`: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The cluster cannot be reached or does not accept this client (authentication, TLS).
    #[error("cannot use Kafka at {bootstrap}: {reason}")]
    Connect {
        /// `bootstrap.servers`.
        bootstrap: String,
        /// librdkafka's last word on the connection (never a credential).
        reason: String,
    },
    /// An ACL is missing.
    #[error("{principal} is not authorised for {operation} on {resource} ({why}); grant it, see README \"Connect to your cluster\"")]
    NotAuthorised {
        /// The principal (e.g. `User:mailguard`).
        principal: String,
        /// The resource, e.g. `Topic:mailguard.alerts`.
        resource: String,
        /// The missing operation, e.g. `WRITE`.
        operation: String,
        /// What mailguard needs it for.
        why: String,
    },
    /// Input topics that must be co-partitioned are not.
    #[error("topics `{a}` ({pa} partitions) and `{b}` ({pb} partitions) must have the same partition count")]
    NotCoPartitioned {
        /// First topic.
        a: String,
        /// Its partitions.
        pa: i32,
        /// Second topic.
        b: String,
        /// Its partitions.
        pb: i32,
    },
}
