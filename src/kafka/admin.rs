//! Topic creation and metadata checks.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::kafka::{client, KafkaError};

/// Create every topic of the configuration that does not exist yet (SPEC §2 cleanup policies).
/// Existing topics are left alone. Returns the names created.
pub async fn ensure_topics(cfg: &Config) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client::admin(&cfg.kafka).create()?;
    let topics = cfg.topics.all();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, cleanup)| {
            NewTopic::new(
                name,
                cfg.topics.partitions,
                TopicReplication::Fixed(cfg.topics.replication_factor),
            )
            .set("cleanup.policy", cleanup.as_str())
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new.iter(), &opts).await?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => {
                info!(topic = %name, "created topic");
                created.push(name);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Topic {
                    topic: name,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(created)
}

/// How long a topic may be missing from the broker's metadata before that is an error. In KRaft
/// a CreateTopics response can arrive before the broker has applied the new topic to its
/// metadata cache, so a topic created a moment ago (by us, a test or an operator) briefly looks
/// unknown.
pub const TOPIC_GRACE: Duration = Duration::from_secs(10);

/// How long a metadata request may keep failing in the client (a dropped connection, a broker
/// that does not answer) before that is an error: Kafka's own clients' `default.api.timeout.ms`.
/// One attempt may itself take 10 s (librdkafka's request timeout), so a grace as short as
/// [`TOPIC_GRACE`] let a single stall of a loaded broker stop mailguard at start (seen in the
/// chaos tests: `ApiVersionRequest` timed out after 10 s, and the instance exited).
pub const BROKER_GRACE: Duration = Duration::from_secs(60);

/// Partition count of `topic`, or an error naming the topic when it is still missing (or
/// unusable) after [`TOPIC_GRACE`], or when the metadata request keeps failing for
/// [`BROKER_GRACE`].
pub fn partition_count(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    topic: &str,
) -> Result<i32, KafkaError> {
    let started = Instant::now();
    loop {
        match partition_count_once(consumer, topic) {
            Err(KafkaError::Topic { reason, .. }) if started.elapsed() < TOPIC_GRACE => {
                debug!(topic, %reason, "topic not in metadata yet; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            // A dropped connection or a slow broker: the same request again is the remedy.
            Err(KafkaError::Client(e)) if started.elapsed() < BROKER_GRACE => {
                warn!(topic, error = %e, "metadata request failed; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn partition_count_once(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    topic: &str,
) -> Result<i32, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| KafkaError::Topic {
            topic: topic.into(),
            reason: "not in metadata".into(),
        })?;
    if let Some(err) = t.error() {
        return Err(KafkaError::Topic {
            topic: topic.into(),
            reason: format!("{err:?}"),
        });
    }
    if t.partitions().is_empty() {
        return Err(KafkaError::Topic {
            topic: topic.into(),
            reason: "does not exist".into(),
        });
    }
    Ok(t.partitions().len() as i32)
}
