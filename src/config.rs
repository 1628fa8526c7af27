//! The one typed configuration of mailguard.
//!
//! Loaded from a TOML file, then overridden by `MAILGUARD_<SECTION>__<FIELD>` environment
//! variables (double underscore between section and field, because field names contain single
//! underscores), then validated. Every error names the offending field (`policy.threshold: ...`),
//! because a platform team reads these in a crash-looping pod's log, not in a debugger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{Limits, Policy, PolicyOverrides, TenantSettings};

pub mod secrets;

/// Configuration errors; Display always names the field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error.
    #[error("config file {path}: {message}")]
    Syntax {
        /// Path as given.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// Unknown field, wrong type, missing field.
    #[error("config field `{field}`: {message}")]
    Field {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but is not allowed.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Top-level configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka connection, group and transactions.
    pub kafka: KafkaConfig,
    /// Topic names and how to create them.
    pub topics: TopicsConfig,
    /// Local state (RocksDB).
    pub state: StateConfig,
    /// Policy numbers (SPEC §1 defaults).
    pub policy: Policy,
    /// Size limits on input fields and outputs.
    pub limits: Limits,
    /// Settings used for tenants absent from `tenant.settings`.
    pub tenant_defaults: TenantDefaults,
    /// HTTP endpoints (/metrics, /healthz, /readyz).
    pub http: HttpConfig,
    /// Wire format.
    pub codec: CodecConfig,
    /// Confluent-compatible schema registry (off unless `registry.url` is set).
    pub registry: RegistryConfig,
    /// Logging.
    pub log: LogConfig,
    /// The admin and query API under `/v1` (off unless `api.enabled`).
    pub api: ApiConfig,
}

/// The admin and query API (`/v1` on the `http.listen` server).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve `/v1` and build the queryable view (a reader of the changelog, blocks, events and
    /// tenant topics).
    pub enabled: bool,
    /// The callers: bearer tokens stored as SHA-256 hashes.
    pub tokens: Vec<ApiToken>,
}

/// One API caller (`[[api.tokens]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Lower-case hex SHA-256 of the bearer token (`mailguard admin issue-token` prints it);
    /// `${file:…}` / `${env:…}` references are resolved at start.
    pub sha256: String,
    /// Who the caller is: written into every command it issues (and so into the events topic).
    pub principal: String,
    /// What the caller may do.
    pub role: ApiRole,
    /// The one tenant the caller may see; required but for `SUPPORT` (absent = every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Role of an API caller: the roles `AdminCommand.actor_role` carries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiRole {
    /// Reads a tenant's mailbox states and blocked list.
    Viewer,
    /// Also reads incidents, command outcomes and the tenant's settings.
    Admin,
    /// Also lifts permanent blocks (`support-unblock`).
    Support,
}

impl ApiRole {
    /// Upper-case name, as in the configuration and `AdminCommand`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "VIEWER",
            ApiRole::Admin => "ADMIN",
            ApiRole::Support => "SUPPORT",
        }
    }
}

/// Kafka client settings. `Debug` redacts secret client properties.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group of all mailguard instances.
    pub group_id: String,
    /// Stable id of this instance; the transactional id is `<transactional_id_prefix>-<instance_id>`.
    /// Must be unique per running instance and stable across its restarts (a StatefulSet ordinal).
    pub instance_id: String,
    /// Prefix of the transactional id.
    pub transactional_id_prefix: String,
    /// How often the open transaction is committed (outputs + state + offsets), in ms.
    pub commit_interval_ms: u64,
    /// Upper bound of records per transaction, so a backlog does not make one huge transaction.
    pub max_batch_records: usize,
    /// `transaction.timeout.ms` of the producer.
    pub transaction_timeout_ms: u64,
    /// `session.timeout.ms` of the consumer.
    pub session_timeout_ms: u64,
    /// Extra librdkafka properties for every client (e.g. security settings). A value that is
    /// exactly `${file:/path}` or `${env:NAME}` is read from there at start.
    pub client_properties: BTreeMap<String, String>,
    /// A Java-style properties file of further librdkafka properties (e.g. a mounted Secret);
    /// `client_properties` wins where both set a key.
    pub client_properties_file: Option<PathBuf>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("instance_id", &self.instance_id)
            .field("transactional_id_prefix", &self.transactional_id_prefix)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("max_batch_records", &self.max_batch_records)
            .field("transaction_timeout_ms", &self.transaction_timeout_ms)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field(
                "client_properties",
                &secrets::redact_properties(&self.client_properties),
            )
            .field("client_properties_file", &self.client_properties_file)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "mailguard".into(),
            instance_id: "0".into(),
            transactional_id_prefix: "mailguard".into(),
            commit_interval_ms: 100,
            max_batch_records: 100_000,
            transaction_timeout_ms: 60_000,
            session_timeout_ms: 10_000,
            client_properties: BTreeMap::new(),
            client_properties_file: None,
        }
    }
}

/// Topic names (SPEC §2) and creation settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Gateway verdicts (input, keyed by mailbox).
    pub verdicts: String,
    /// Directory: mailbox → owner (compacted table).
    pub mailboxes: String,
    /// Directory: owner → devices (compacted table).
    pub devices: String,
    /// Tenant settings (compacted table).
    pub tenants: String,
    /// Admin commands (input, keyed by mailbox, co-partitioned with verdicts).
    pub commands: String,
    /// Block state (output, compacted).
    pub blocks: String,
    /// Scan requests (output, keyed by device id).
    pub scan_requests: String,
    /// Alerts (output, keyed by tenant id).
    pub alerts: String,
    /// Event log (output, keyed by mailbox).
    pub events: String,
    /// Dead letters (original key and bytes, reason in headers).
    pub dlq: String,
    /// State changelog (compacted, keyed by mailbox, partition = input partition).
    pub changelog: String,
    /// Partitions of topics that `mailguard topics` creates.
    pub partitions: i32,
    /// Replication factor of topics that `mailguard topics` creates.
    pub replication_factor: i32,
    /// Create missing topics at start-up (local and test setups; production uses `mailguard topics`).
    pub create_missing: bool,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            verdicts: "mail.outbound.verdicts".into(),
            mailboxes: "directory.mailboxes".into(),
            devices: "directory.devices".into(),
            tenants: "tenant.settings".into(),
            commands: "mailguard.commands".into(),
            blocks: "mailguard.blocks".into(),
            scan_requests: "mailguard.scan-requests".into(),
            alerts: "mailguard.alerts".into(),
            events: "mailguard.events".into(),
            dlq: "mailguard.dlq".into(),
            changelog: "mailguard.state-changelog".into(),
            partitions: 4,
            replication_factor: 1,
            create_missing: false,
        }
    }
}

impl TopicsConfig {
    /// Every topic with its cleanup policy, in SPEC §2 order plus the changelog.
    pub fn all(&self) -> Vec<(&str, Cleanup)> {
        vec![
            (&self.verdicts, Cleanup::Delete),
            (&self.mailboxes, Cleanup::Compact),
            (&self.devices, Cleanup::Compact),
            (&self.tenants, Cleanup::Compact),
            (&self.commands, Cleanup::Delete),
            (&self.blocks, Cleanup::Compact),
            (&self.scan_requests, Cleanup::Delete),
            (&self.alerts, Cleanup::Delete),
            (&self.events, Cleanup::Delete),
            (&self.dlq, Cleanup::Delete),
            (&self.changelog, Cleanup::Compact),
        ]
        .into_iter()
        .map(|(t, c)| (t.as_str(), c))
        .collect()
    }
}

/// `cleanup.policy` of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Time/size retention.
    Delete,
    /// Log compaction (latest value per key).
    Compact,
}

impl Cleanup {
    /// The Kafka config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

/// Local state settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// RocksDB directory. It is a cache of the changelog: deleting it costs a restore, nothing else.
    pub dir: PathBuf,
    /// Wall-clock timer resolution for block expiry, in ms (SPEC §5: unblock within 2 s).
    pub tick_interval_ms: u64,
    /// How often (processor time, ms) idle states are swept out of local state and the changelog
    /// (`policy.state_idle_ttl_ms` says which are idle). A sweep walks a few thousand states per
    /// tick, so it never holds up processing.
    pub sweep_interval_ms: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("data/state"),
            tick_interval_ms: 250,
            sweep_interval_ms: 60_000,
        }
    }
}

/// Defaults for tenants that `tenant.settings` does not (yet) know.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantDefaults {
    /// Synchronized Security on.
    pub sync_security_enabled: bool,
    /// Endpoint licence present.
    pub endpoint_licence: bool,
}

impl Default for TenantDefaults {
    fn default() -> Self {
        TenantDefaults {
            sync_security_enabled: true,
            endpoint_licence: true,
        }
    }
}

impl TenantDefaults {
    /// As the core's tenant settings, without overrides.
    pub fn to_settings(&self) -> TenantSettings {
        TenantSettings {
            sync_security_enabled: self.sync_security_enabled,
            endpoint_licence: self.endpoint_licence,
            overrides: PolicyOverrides::default(),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of /metrics, /healthz, /readyz.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// Wire-format settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CodecConfig {
    /// Schema-registry ids by record name (e.g. `MailboxBlock = 17`). A record type listed here
    /// is written with the Confluent framing; all others with Avro single-object encoding.
    /// With a registry configured, the ids come from the registry instead.
    pub confluent_schema_ids: BTreeMap<String, u32>,
    /// A directory of `.avsc` writer schemas that producers use (e.g. a gateway's newer
    /// `OutboundVerdict`), so single-object records written with them are resolved, not
    /// dead-lettered as "unknown fingerprint".
    pub writer_schemas_dir: Option<PathBuf>,
}

/// Confluent-compatible schema registry settings. `Debug` redacts the password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base URL of the registry's Confluent API, e.g. `http://registry:8081`. Empty: no registry.
    pub url: String,
    /// Basic-auth user (empty: no authentication).
    pub username: String,
    /// Basic-auth password; `${file:/path}` / `${env:NAME}` references are resolved at start.
    pub password: String,
    /// PEM file of the CA that signed the registry's certificate (default: the system roots).
    pub ca_location: Option<PathBuf>,
    /// How a topic's value subject is named.
    pub subject_strategy: SubjectStrategy,
    /// Register mailguard's output schemas at start (otherwise they must be registered already).
    pub auto_register: bool,
    /// Timeout of one registry request, in ms.
    pub timeout_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: String::new(),
            username: String::new(),
            password: String::new(),
            ca_location: None,
            subject_strategy: SubjectStrategy::Topic,
            auto_register: true,
            timeout_ms: 5_000,
        }
    }
}

impl RegistryConfig {
    /// Whether a registry is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let password = if self.password.is_empty() {
            ""
        } else {
            secrets::REDACTED
        };
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &password)
            .field("ca_location", &self.ca_location)
            .field("subject_strategy", &self.subject_strategy)
            .field("auto_register", &self.auto_register)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Subject naming, as Confluent's serializers name them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's default, `TopicNameStrategy`).
    Topic,
    /// `<record full name>` (`RecordNameStrategy`).
    Record,
    /// `<topic>-<record full name>` (`TopicRecordNameStrategy`).
    TopicRecord,
}

impl SubjectStrategy {
    /// The value subject of `topic` carrying records named `full_name`.
    pub fn subject(self, topic: &str, full_name: &str) -> String {
        match self {
            SubjectStrategy::Topic => format!("{topic}-value"),
            SubjectStrategy::Record => full_name.to_string(),
            SubjectStrategy::TopicRecord => format!("{topic}-{full_name}"),
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// Default filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "MAILGUARD_";

impl Config {
    /// Load `path` (if given), apply `MAILGUARD_…` overrides from the process environment, validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<defaults>"));
        Self::from_sources(&text, &origin, std::env::vars())
    }

    /// Parse TOML `text`, apply the given environment overrides, validate. Pure, for tests.
    pub fn from_sources(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut root: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_path_buf(),
                    message: e.to_string(),
                })?;
        apply_env(&mut root, env.iter().cloned())?;
        let de = toml::Value::Table(root);
        let mut config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Field {
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        config.resolve_secrets(&lookup)?;
        config.validate()?;
        Ok(config)
    }

    /// Merges `kafka.client_properties_file` under `kafka.client_properties` and resolves every
    /// `${file:…}` / `${env:…}` reference (see [`secrets`]).
    fn resolve_secrets(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let k = &mut self.kafka;
        if let Some(path) = &k.client_properties_file {
            let file = secrets::read_properties("kafka.client_properties_file", path)?;
            for (key, value) in file {
                k.client_properties.entry(key).or_insert(value);
            }
        }
        for (key, value) in k.client_properties.iter_mut() {
            *value = secrets::resolve(&format!("kafka.client_properties.{key}"), value, env)?;
        }
        let r = &mut self.registry;
        r.username = secrets::resolve("registry.username", &r.username, env)?;
        r.password = secrets::resolve("registry.password", &r.password, env)?;
        for (i, t) in self.api.tokens.iter_mut().enumerate() {
            t.sha256 = secrets::resolve(&format!("api.tokens[{i}].sha256"), &t.sha256, env)?
                .trim()
                .to_ascii_lowercase();
        }
        Ok(())
    }

    /// A copy fit for printing: every secret replaced by `[redacted]`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.kafka.client_properties = secrets::redact_properties(&c.kafka.client_properties);
        if !c.registry.password.is_empty() {
            c.registry.password = secrets::REDACTED.to_string();
        }
        c
    }

    /// Check values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.bootstrap_servers",
                "must not be empty",
            ));
        }
        if k.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
        }
        if k.instance_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.instance_id",
                "must not be empty",
            ));
        }
        if k.commit_interval_ms == 0 || k.commit_interval_ms > 60_000 {
            return Err(ConfigError::invalid(
                "kafka.commit_interval_ms",
                "must be in 1..=60000",
            ));
        }
        if k.max_batch_records == 0 {
            return Err(ConfigError::invalid(
                "kafka.max_batch_records",
                "must be >= 1",
            ));
        }
        if k.transaction_timeout_ms < k.commit_interval_ms * 10 {
            return Err(ConfigError::invalid(
                "kafka.transaction_timeout_ms",
                "must be at least 10 x kafka.commit_interval_ms",
            ));
        }
        let t = &self.topics;
        let mut seen = std::collections::HashSet::new();
        for (name, field) in [
            (&t.verdicts, "topics.verdicts"),
            (&t.mailboxes, "topics.mailboxes"),
            (&t.devices, "topics.devices"),
            (&t.tenants, "topics.tenants"),
            (&t.commands, "topics.commands"),
            (&t.blocks, "topics.blocks"),
            (&t.scan_requests, "topics.scan_requests"),
            (&t.alerts, "topics.alerts"),
            (&t.events, "topics.events"),
            (&t.dlq, "topics.dlq"),
            (&t.changelog, "topics.changelog"),
        ] {
            if name.is_empty()
                || name.len() > 249
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::invalid(
                    field,
                    format!("`{name}` is not a valid Kafka topic name"),
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(ConfigError::invalid(
                    field,
                    format!("topic `{name}` is used twice"),
                ));
            }
        }
        if t.partitions < 1 {
            return Err(ConfigError::invalid("topics.partitions", "must be >= 1"));
        }
        if t.replication_factor < 1 {
            return Err(ConfigError::invalid(
                "topics.replication_factor",
                "must be >= 1",
            ));
        }
        if self.state.tick_interval_ms == 0 || self.state.tick_interval_ms > 1_000 {
            return Err(ConfigError::invalid(
                "state.tick_interval_ms",
                "must be in 1..=1000 (unblocks are due within 2 s)",
            ));
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "http.listen",
                format!("`{}` is not host:port", self.http.listen),
            ));
        }
        let r = &self.registry;
        if r.enabled() {
            let url = r.url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "registry.url",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
            if r.timeout_ms == 0 || r.timeout_ms > 120_000 {
                return Err(ConfigError::invalid(
                    "registry.timeout_ms",
                    "must be in 1..=120000",
                ));
            }
            if r.password.is_empty() != r.username.is_empty() {
                return Err(ConfigError::invalid(
                    "registry.password",
                    "registry.username and registry.password go together",
                ));
            }
        }
        for name in self.codec.confluent_schema_ids.keys() {
            if name.parse::<crate::codec::RecordType>().is_err() {
                return Err(ConfigError::invalid(
                    &format!("codec.confluent_schema_ids.{name}"),
                    "not a record name of schemas/ (e.g. OutboundVerdict, MailboxBlock)",
                ));
            }
        }
        let mut hashes = std::collections::HashSet::new();
        for (i, t) in self.api.tokens.iter().enumerate() {
            let field = format!("api.tokens[{i}]");
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::invalid(
                    &format!("{field}.sha256"),
                    "must be 64 hex digits (the SHA-256 of the token, not the token)",
                ));
            }
            if !hashes.insert(t.sha256.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("{field}.sha256"),
                    "the same token hash is listed twice",
                ));
            }
            if t.principal.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &format!("{field}.principal"),
                    "must not be empty",
                ));
            }
            match (&t.tenant, t.role) {
                (None, ApiRole::Support) => {}
                (None, _) => {
                    return Err(ConfigError::invalid(
                        &format!("{field}.tenant"),
                        "required for VIEWER and ADMIN (only SUPPORT may be global)",
                    ))
                }
                (Some(x), _) if x.trim().is_empty() => {
                    return Err(ConfigError::invalid(
                        &format!("{field}.tenant"),
                        "must not be empty",
                    ))
                }
                _ => {}
            }
        }
        // The policy's own error names the field (`policy.threshold must be >= 1`).
        self.policy
            .validate()
            .map_err(|e| ConfigError::invalid("policy", e.to_string()))?;
        self.limits
            .validate()
            .map_err(|(setting, why)| ConfigError::invalid(&format!("limits.{setting}"), why))?;
        if self.policy.threshold > self.limits.max_threshold {
            return Err(ConfigError::invalid(
                "policy.threshold",
                format!(
                    "must be <= limits.max_threshold ({})",
                    self.limits.max_threshold
                ),
            ));
        }
        Ok(())
    }

    /// The transactional id of this instance.
    pub fn transactional_id(&self) -> String {
        format!(
            "{}-{}",
            self.kafka.transactional_id_prefix, self.kafka.instance_id
        )
    }
}

/// Apply `MAILGUARD_<SECTION>__<FIELD>=value` overrides. The value is read as a TOML value when it
/// parses as one (numbers, booleans, inline tables), else as a plain string.
fn apply_env(
    root: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (key, value) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            // MAILGUARD_CONFIG and friends are CLI settings, not config fields.
            continue;
        }
        let parsed = parse_env_value(&value);
        let mut table = &mut *root;
        for section in &path[..path.len() - 1] {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Field {
                        field: path.join("."),
                        message: format!(
                            "environment variable {key}: `{section}` is not a section"
                        ),
                    })
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), parsed);
    }
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    // `x = <value>` parses numbers, booleans, arrays and inline tables; anything else is a string.
    match format!("x = {value}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("x")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(
            text,
            Path::new("test.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn api_tokens_are_validated_and_hashes_may_come_from_the_environment() {
        let hash = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let ok = load(
            "[api]\nenabled = true\n[[api.tokens]]\nsha256 = \"${env:H}\"\nprincipal = \"s\"\nrole = \"SUPPORT\"\n",
            &[("H", hash)],
        )
        .unwrap();
        assert_eq!(ok.api.tokens[0].sha256, hash.to_ascii_lowercase());
        assert_eq!(ok.api.tokens[0].role, ApiRole::Support);
        let no_tenant =
            format!("[[api.tokens]]\nsha256 = \"{hash}\"\nprincipal = \"v\"\nrole = \"VIEWER\"\n");
        assert!(load(&no_tenant, &[])
            .unwrap_err()
            .to_string()
            .contains("api.tokens[0].tenant"));
        let not_a_hash =
            "[[api.tokens]]\nsha256 = \"secret\"\nprincipal = \"a\"\nrole = \"ADMIN\"\ntenant = \"t\"\n";
        let err = load(not_a_hash, &[]).unwrap_err().to_string();
        assert!(
            err.contains("api.tokens[0].sha256") && !err.contains("secret"),
            "{err}"
        );
        assert!(load(
            "[[api.tokens]]\nsha256 = \"x\"\nprincipal = \"a\"\nrole = \"ROOT\"\n",
            &[]
        )
        .is_err());
    }

    #[test]
    fn empty_file_gives_spec_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.topics.verdicts, "mail.outbound.verdicts");
        assert_eq!(c.policy.threshold, 5);
        assert_eq!(c.policy.window_ms, 600_000);
        assert_eq!(c.kafka.commit_interval_ms, 100);
        assert!(c.tenant_defaults.sync_security_enabled && c.tenant_defaults.endpoint_licence);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = load("[policy]\ntreshold = 3\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy") && err.contains("treshold"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = load("[policy]\nthreshold = \"five\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.threshold"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err = load("[policy]\nthreshold = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.threshold"), "{err}");
        let err = load("[kafka]\ncommit_interval_ms = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.commit_interval_ms"), "{err}");
        let err = load("[http]\nlisten = \"nope\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        let err = load("[topics]\nalerts = \"mailguard.events\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("topics.events") || err.contains("topics.alerts"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = load("[policy\n", &[]).unwrap_err().to_string();
        assert!(err.contains("test.toml") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            "[kafka]\nbootstrap_servers = \"a:1\"\n",
            &[
                ("MAILGUARD_KAFKA__BOOTSTRAP_SERVERS", "b:2"),
                ("MAILGUARD_POLICY__THRESHOLD", "7"),
                ("MAILGUARD_TOPICS__SCAN_REQUESTS", "scans"),
                ("MAILGUARD_CONFIG", "ignored.toml"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.bootstrap_servers, "b:2");
        assert_eq!(c.policy.threshold, 7);
        assert_eq!(c.topics.scan_requests, "scans");
    }

    #[test]
    fn env_wrong_type_is_named() {
        let err = load("", &[("MAILGUARD_POLICY__WINDOW_MS", "ten minutes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("policy.window_ms"), "{err}");
        let err = load("", &[("MAILGUARD_KAFKA__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn shipped_local_config_is_valid() {
        let text = include_str!("../config/local.toml");
        load(text, &[]).unwrap();
    }
}
