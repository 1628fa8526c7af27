//! The one typed configuration of mailguard.
//!
//! Loaded from a TOML file, then overridden by `MAILGUARD_<SECTION>__<FIELD>` environment
//! variables ([`env`](self::env): a string field takes the value literally), then its secret
//! references resolved ([`secrets`]), then validated section by section
//! ([`validate`](self::validate): every problem at once). Every error names the offending field
//! (`policy.threshold: ...`), because a platform team reads these in a crash-looping pod's log,
//! not in a debugger — and none shows a secret's value or the source text around it.
//!
//! The types of each section live here (`HttpConfig` among them); their checks in `validate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{Limits, Millis, Policy, PolicyOverrides, TenantMode, TenantSettings};

mod env;
pub mod secrets;
mod validate;

/// One field at fault: its dotted path and what is wrong, never the value of a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config field `{field}`: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`api.tokens[0].principal`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Configuration errors; Display always names the field or file at fault, and never shows the
/// source text or a secret's value (a syntax error on a line holding a password must not print it).
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
    /// TOML syntax error: where, and the parser's short message (never the offending line).
    #[error("config file {path}, line {line}, column {column}: {message}")]
    Syntax {
        /// Path as given.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The parser's message (`invalid table header`, `expected `]``…), without source text.
        message: String,
    },
    /// Unknown field, wrong type, missing field, an unresolvable secret reference.
    #[error("{0}")]
    Field(FieldError),
    /// Values that parse but are not allowed: every one found, one per line.
    #[error("{}", display_all(.0))]
    Invalid(Vec<FieldError>),
}

fn display_all(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} errors:", many.len());
            for e in many {
                s.push_str("\n  ");
                s.push_str(&e.to_string());
            }
            s
        }
    }
}

impl ConfigError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Field(FieldError::new(field, message))
    }

    /// The field errors this error carries (empty for read and syntax errors).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            ConfigError::Field(e) => std::slice::from_ref(e),
            ConfigError::Invalid(v) => v,
            _ => &[],
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
    /// Endpoint scans and the incidents they end.
    pub scan: ScanConfig,
    /// The shadow policy evaluated beside `[policy]` (off unless `shadow.enabled`).
    pub shadow: ShadowConfig,
}

/// The shadow policy (`[shadow]`, SPEC §1.13): a candidate evaluated on the same verdicts beside
/// `[policy]` that only reports (`SHADOW_TRIP` events, `mailguard_shadow_trips_total`). Each
/// number left out is `[policy]`'s, so `enabled = true` with `threshold = 3` is "the live
/// policy with a threshold of 3". `max_future_skew_ms` and `state_idle_ttl_ms` are not among
/// them: a verdict is clamped once for both, and the idle TTL bounds the one state both live in.
/// Tenants override the candidate with `TenantSettings.shadow`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// Evaluate the shadow policy. Default false.
    pub enabled: bool,
    /// Offending messages that trip the shadow.
    pub threshold: Option<u32>,
    /// The shadow's window in ms.
    pub window_ms: Option<i64>,
    /// The shadow's allowed lateness in ms.
    pub allowed_lateness_ms: Option<i64>,
    /// Duration in ms of the shadow's first would-be block (doubled per strike).
    pub base_block_ms: Option<i64>,
    /// The shadow's permanent strike.
    pub permanent_strike: Option<u32>,
    /// The shadow's strike decay in ms; 0 turns off a decay `[policy]` has.
    pub strike_decay_ms: Option<i64>,
}

impl ShadowConfig {
    /// The shadow policy: `live` with the numbers set here (`None` when not enabled).
    pub fn policy(&self, live: &Policy) -> Option<Policy> {
        if !self.enabled {
            return None;
        }
        let mut p = Policy {
            shadow: None,
            ..live.clone()
        };
        p.threshold = self.threshold.unwrap_or(p.threshold);
        p.window_ms = self.window_ms.unwrap_or(p.window_ms);
        p.allowed_lateness_ms = self.allowed_lateness_ms.unwrap_or(p.allowed_lateness_ms);
        p.base_block_ms = self.base_block_ms.unwrap_or(p.base_block_ms);
        p.permanent_strike = self.permanent_strike.unwrap_or(p.permanent_strike);
        if let Some(d) = self.strike_decay_ms {
            p.strike_decay_ms = (d != 0).then_some(d);
        }
        Some(p)
    }
}

/// Endpoint scans (`[scan]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Processor time a device has to report its scan result; an incident with a device silent
    /// for longer needs attention (`SCAN_OVERDUE`). Default 14 400 000 (4 h).
    pub result_timeout_ms: i64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            result_timeout_ms: Policy::default().scan_result_timeout_ms,
        }
    }
}

impl Config {
    /// The policy the core runs: `[policy]` with `scan.result_timeout_ms` and, when enabled,
    /// the `[shadow]` policy beside it.
    pub fn core_policy(&self) -> Policy {
        Policy {
            scan_result_timeout_ms: self.scan.result_timeout_ms,
            shadow: self.shadow.policy(&self.policy).map(std::sync::Arc::new),
            ..self.policy.clone()
        }
    }
}

/// The admin and query API (`/v1` on the `http.listen` server).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve `/v1` and build the queryable view (a reader of the changelog, blocks, events and
    /// tenant topics).
    pub enabled: bool,
    /// The callers: bearer tokens stored as SHA-256 hashes.
    pub tokens: Vec<ApiToken>,
    /// The view's local RocksDB: emptied at start and rebuilt from the topics (a cache of
    /// them, like `state.dir`; one per instance). Default: beside the state, `<state.dir>-view`.
    pub view_dir: Option<PathBuf>,
    /// How long (processor time, ms) events and alerts stay in the events report; the topics
    /// keep what their own retention says. Default 30 days.
    pub view_retention_ms: Millis,
}

impl ApiConfig {
    /// Where the view's store lives: `view_dir`, else `<state.dir>-view`.
    pub fn view_dir(&self, state: &StateConfig) -> PathBuf {
        self.view_dir.clone().unwrap_or_else(|| {
            // Components drop a trailing `/`, which would put the view inside the state.
            let mut name = state.dir.components().collect::<PathBuf>().into_os_string();
            name.push("-view");
            PathBuf::from(name)
        })
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: false,
            tokens: Vec::new(),
            view_dir: None,
            view_retention_ms: 30 * 86_400_000,
        }
    }
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
    /// A transaction holding a block or unblock commits as soon as it is staged, rather than at
    /// the end of `commit_interval_ms`, but no sooner than this after the previous commit ended
    /// (so a burst of trips shares commits), in ms; or the previous commit's duration (four times
    /// it while the pipeline is behind its input) if that is longer. At least
    /// `commit_interval_ms` turns early commits off.
    pub trip_commit_gap_ms: u64,
    /// `transaction.timeout.ms` of the producer: how long the broker keeps a transaction of an
    /// instance that died open before aborting it. While it is open, `read_committed` readers of
    /// the partitions it wrote to see nothing after it — the survivors' new blocks included. 10 s
    /// (Kafka Streams' default under exactly-once too): a transaction lives one commit interval
    /// plus a commit of milliseconds, and one that outlives this is aborted and redone.
    pub transaction_timeout_ms: u64,
    /// `session.timeout.ms` of the consumer (classic protocol only; with `consumer` the broker's
    /// `group.consumer.session.timeout.ms` decides). 8 s: a dead instance's partitions move
    /// within 10 s (session, then a heartbeat and the rebalance).
    pub session_timeout_ms: u64,
    /// The consumer group protocol: `classic` (JoinGroup/SyncGroup, client-side range
    /// assignment) or `consumer` (KIP-848, broker-side range assignment; Kafka >= 4.0).
    pub group_protocol: GroupProtocol,
    /// Static membership (`group.instance.id` = `mailguard-<instance_id>`): a restart within the
    /// session timeout keeps the partitions without a rebalance, but a member that stops hands
    /// its partitions over only when its session times out (no LeaveGroup; with KIP-848 it
    /// leaves with epoch -2, which keeps them too). Off by default: a planned stop then hands
    /// over in about a second (docs/PERFORMANCE.md, "Hand-over and failover").
    pub static_membership: bool,
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
            .field("trip_commit_gap_ms", &self.trip_commit_gap_ms)
            .field("transaction_timeout_ms", &self.transaction_timeout_ms)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("group_protocol", &self.group_protocol)
            .field("static_membership", &self.static_membership)
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
            trip_commit_gap_ms: 5,
            transaction_timeout_ms: 10_000,
            session_timeout_ms: 8_000,
            group_protocol: GroupProtocol::Classic,
            static_membership: false,
            client_properties: BTreeMap::new(),
            client_properties_file: None,
        }
    }
}

/// The consumer group protocol (`kafka.group_protocol`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The classic protocol: JoinGroup/SyncGroup, range assignment by the group leader.
    #[default]
    Classic,
    /// KIP-848 (`group.protocol=consumer`): the broker assigns (its `range` assignor) and
    /// hands partitions over incrementally; the broker's `group.consumer.*` settings decide the
    /// session timeout and heartbeat interval.
    Consumer,
}

impl GroupProtocol {
    /// The value of librdkafka's `group.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
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
    /// Exemptions in force (output and table, compacted, keyed by `tenant/pattern`).
    pub exemptions: String,
    /// Endpoints' scan results (input, keyed by device id; any partition count).
    pub scan_results: String,
    /// Scan results re-keyed by mailbox (mailguard's own; written and read by mailguard,
    /// co-partitioned with verdicts).
    pub scan_results_routed: String,
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
            exemptions: "mailguard.exemptions".into(),
            scan_results: "endpoint.scan-results".into(),
            scan_results_routed: "mailguard.scan-results".into(),
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
            (&self.exemptions, Cleanup::Compact),
            (&self.scan_results, Cleanup::Delete),
            (&self.scan_results_routed, Cleanup::Delete),
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
    /// `ENFORCE` (default) or `ALERT_ONLY`.
    pub mode: TenantMode,
}

impl Default for TenantDefaults {
    fn default() -> Self {
        TenantDefaults {
            sync_security_enabled: true,
            endpoint_licence: true,
            mode: TenantMode::Enforce,
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
            mode: self.mode,
            shadow: None,
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

/// Confluent-compatible schema registry settings. `Debug` redacts the username and password.
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
        let hide = |s: &str| if s.is_empty() { "" } else { secrets::REDACTED };
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &hide(&self.username))
            .field("password", &hide(&self.password))
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
        let mut root: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax_error(origin, text, &e))?;
        env::apply(&mut root, &env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(root))
            .map_err(|e| {
                let field = e.path().to_string();
                ConfigError::Field(FieldError::new(
                    &field,
                    secrets::field_message(&field, e.inner().message()),
                ))
            })?;
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut errors = config.resolve_secrets(&lookup);
        // A field whose reference failed is not judged again on its unresolved text.
        let unresolved: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
        errors.extend(
            config
                .problems()
                .into_iter()
                .filter(|e| !unresolved.contains(&e.field)),
        );
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// Merges `kafka.client_properties_file` under `kafka.client_properties` and resolves every
    /// `${file:…}` / `${env:…}` reference (see [`secrets`]); returns every failure.
    fn resolve_secrets(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let k = &mut self.kafka;
        if let Some(path) = &k.client_properties_file {
            let field = "kafka.client_properties_file";
            match secrets::read_properties(field, path) {
                Ok(file) => {
                    for (key, value) in file {
                        // Refused here, where the file is known, so the error can name it.
                        if let Some(why) = crate::kafka::client::refused(&key) {
                            errors.push(FieldError::new(
                                field,
                                format!("{} sets `{key}`: {why}", path.display()),
                            ));
                        } else {
                            k.client_properties.entry(key).or_insert(value);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let mut resolve =
            |field: String, value: &mut String| match secrets::resolve(&field, value, env) {
                Ok(v) => *value = v,
                Err(e) => errors.push(e),
            };
        for (key, value) in k.client_properties.iter_mut() {
            resolve(format!("kafka.client_properties.{key}"), value);
        }
        let r = &mut self.registry;
        resolve("registry.username".into(), &mut r.username);
        resolve("registry.password".into(), &mut r.password);
        for (i, t) in self.api.tokens.iter_mut().enumerate() {
            resolve(format!("api.tokens[{i}].sha256"), &mut t.sha256);
            t.sha256 = t.sha256.trim().to_ascii_lowercase();
        }
        errors
    }

    /// A copy fit for printing: every secret replaced by `[redacted]`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.kafka.client_properties = secrets::redact_properties(&c.kafka.client_properties);
        for secret in [&mut c.registry.username, &mut c.registry.password] {
            if !secret.is_empty() {
                *secret = secrets::REDACTED.to_string();
            }
        }
        c
    }

    /// The transactional id of this instance.
    pub fn transactional_id(&self) -> String {
        format!(
            "{}-{}",
            self.kafka.transactional_id_prefix, self.kafka.instance_id
        )
    }
}

/// A syntax error as file, line, column and the parser's short message. The parser's own
/// Display quotes the offending line, which may be a one-line `client_properties` holding a
/// password: it is never used.
fn syntax_error(origin: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(text.len(), |s| s.start).min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    ConfigError::Syntax {
        path: origin.to_path_buf(),
        line,
        column,
        message: e.message().to_string(),
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

    /// `[shadow]`: off by default; each number left out is `[policy]`'s; bad ones are named
    /// `shadow.<field>`; the environment overrides it like any section.
    #[test]
    fn the_shadow_section() {
        assert_eq!(load("", &[]).unwrap().core_policy().shadow, None);
        let c = load(
            "[policy]\nwindow_ms = 120000\nstrike_decay_ms = 5000\n[shadow]\nenabled = true\nthreshold = 3\nstrike_decay_ms = 0\n",
            &[("MAILGUARD_SHADOW__BASE_BLOCK_MS", "60000")],
        )
        .unwrap();
        let core = c.core_policy();
        let s = core.shadow.as_deref().unwrap();
        assert_eq!(
            (s.threshold, s.window_ms, s.base_block_ms, s.strike_decay_ms),
            (3, 120_000, 60_000, None)
        );
        assert_eq!((core.threshold, core.strike_decay_ms), (5, Some(5_000)));
        assert_eq!(s.scan_result_timeout_ms, core.scan_result_timeout_ms);
        let off = load("[shadow]\nthreshold = 3\n", &[]).unwrap();
        assert_eq!(off.core_policy().shadow, None, "not enabled");
        for (text, field) in [
            ("threshold = 0", "shadow.threshold"),
            ("threshold = 101", "shadow.threshold"),
            ("window_ms = 90000000", "shadow.window_ms"),
            ("strike_decay_ms = -1", "shadow.strike_decay_ms"),
        ] {
            let err = load(&format!("[shadow]\nenabled = true\n{text}\n"), &[]).unwrap_err();
            let fields: Vec<&str> = err.fields().iter().map(|f| f.field.as_str()).collect();
            assert_eq!(fields, [field], "{text}: {err}");
            assert!(!err.to_string().contains("policy.threshold"), "{err}");
        }
        let err = load("[shadow]\nmax_future_skew_ms = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_future_skew_ms"), "{err}");
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
    fn syntax_error_gives_position_and_message_but_never_the_line() {
        let text = "[kafka]\nclient_properties = { \"sasl.password\" = \"hunter2\" = }\n";
        let err = load(text, &[]).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("config file test.toml, line 2, column ")
                && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn type_errors_on_secret_fields_do_not_quote_the_value() {
        let err = load(
            "[registry]\nurl = \"http://r:1\"\nusername = \"u\"\npassword = 123456\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("registry.password")
                && err.contains("expected a string")
                && !err.contains("123456"),
            "{err}"
        );
        // In the environment the same value is the password itself.
        let c = load(
            "[registry]\nurl = \"http://r:1\"\nusername = \"u\"\n",
            &[("MAILGUARD_REGISTRY__PASSWORD", "123456")],
        )
        .unwrap();
        assert_eq!(c.registry.password, "123456");
        assert!(!format!("{:?}", c.registry).contains("123456"));
        assert_eq!(c.redacted().registry.username, secrets::REDACTED);
    }

    #[test]
    fn a_refused_property_in_the_file_names_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.properties");
        std::fs::write(&p, "enable.idempotence=false\nlinger.ms=7\n").unwrap();
        let text = format!(
            "[kafka]\nclient_properties_file = {:?}\n[policy]\nthreshold = 0\n",
            p.display().to_string()
        );
        let err = load(&text, &[]).unwrap_err();
        let fields: Vec<&str> = err.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["kafka.client_properties_file", "policy"], "{err}");
        assert!(
            err.to_string().contains("sets `enable.idempotence`"),
            "{err}"
        );
    }

    #[test]
    fn shipped_local_config_is_valid() {
        let text = include_str!("../config/local.toml");
        load(text, &[]).unwrap();
    }
}
