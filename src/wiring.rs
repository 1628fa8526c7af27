//! Wiring of the codec for this configuration: the embedded schemas, the writer-schema
//! directory, the static Confluent ids, and — with a registry — the output schemas registered
//! (or looked up) under their subjects and unknown input ids fetched through the registry client.
//!
//! Kept apart from `codec` (the pure core, which knows no configuration and no network; it reads
//! schemas through the `SchemaSource` trait) and from `registry` (the REST client alone).

use std::sync::Arc;

use crate::codec::{Codec, CodecError, RecordType};
use crate::config::Config;
use crate::registry::{RegistryClient, RegistryError};

/// Why the wire format of this process could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// `auto_register` is off and a schema mailguard writes is not registered.
    #[error("schema registry {url}: the {rt} schema is not registered under subject {subject}, and registry.auto_register is off: register schemas/{rt}.avsc there first")]
    NotRegistered {
        /// Base URL.
        url: String,
        /// The record type.
        rt: RecordType,
        /// Its subject.
        subject: String,
    },
    /// The writer-schema directory or an id could not be used.
    #[error("{0}")]
    Codec(#[from] CodecError),
}

/// The codec of this configuration, for a process that writes `writes` (topic, record type):
///
/// - the embedded reader schemas, and the writer schemas of `codec.writer_schemas_dir`;
/// - without a registry, the static `codec.confluent_schema_ids`;
/// - with one, each written type's schema registered (or, with `auto_register` off, looked up)
///   under its subject, its id used to frame outputs, and unknown ids of inputs fetched from
///   the registry when first seen.
pub fn codec_for(cfg: &Config, writes: &[(&str, RecordType)]) -> Result<Codec, WireError> {
    let ids = cfg
        .codec
        .confluent_schema_ids
        .iter()
        .filter_map(|(name, id)| name.parse::<RecordType>().ok().map(|rt| (rt, *id)))
        .collect();
    let codec = Codec::new(ids);
    if let Some(dir) = &cfg.codec.writer_schemas_dir {
        let loaded = codec.load_writer_schemas(dir)?;
        tracing::info!(dir = %dir.display(), schemas = loaded.len(), "writer schemas loaded");
    }
    let r = &cfg.registry;
    if !r.enabled() {
        return Ok(codec);
    }
    let client = RegistryClient::new(r)?;
    for (topic, rt) in writes {
        let subject = r.subject_strategy.subject(topic, &rt.full_name());
        let schema = rt.schema_json();
        let id = if r.auto_register {
            client.register(&subject, schema)?
        } else {
            client
                .lookup(&subject, schema)?
                .ok_or_else(|| WireError::NotRegistered {
                    url: client.url().to_string(),
                    rt: *rt,
                    subject: subject.clone(),
                })?
        };
        codec.set_schema_id(*rt, id)?;
        tracing::info!(%subject, id, record = %rt, "output schema registered");
    }
    codec.set_schema_source(Arc::new(client));
    Ok(codec)
}
