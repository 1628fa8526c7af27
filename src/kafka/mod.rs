//! Kafka adapters: client configurations, topic administration, the Java-compatible
//! partitioner, and the readers that restore state and load tables.

pub mod admin;
pub mod client;
pub mod partitioner;

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
