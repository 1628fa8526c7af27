//! Values that parse but make no sense: one function per section, each recording every problem
//! it finds, so a configuration with three mistakes fails once with three lines, each naming its
//! field, instead of three restarts of a crash-looping pod.

use std::collections::HashSet;

use super::{
    ApiConfig, ApiRole, CodecConfig, Config, ConfigError, FieldError, GroupProtocol, HttpConfig,
    KafkaConfig, RegistryConfig, StateConfig, TopicsConfig,
};
use crate::policy::{Limits, Policy};

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records `message` against `field` unless `ok`.
    fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.add(field, message);
        }
    }
}

impl Config {
    /// Checks values that parse but make no sense; the error lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Every problem of the configuration, section by section (none: it is valid).
    pub fn problems(&self) -> Vec<FieldError> {
        let mut p = Problems::default();
        kafka(&self.kafka, &mut p);
        topics(&self.topics, &mut p);
        state(&self.state, &mut p);
        http(&self.http, &mut p);
        registry(&self.registry, &mut p);
        codec(&self.codec, &mut p);
        api(&self.api, &self.limits, &mut p);
        view(&self.api, &self.state, &mut p);
        policy(&self.policy, &self.limits, &mut p);
        shadow(self, &mut p);
        limits(&self.limits, &mut p);
        if self.scan.result_timeout_ms <= 0 {
            p.add("scan.result_timeout_ms", "must be > 0".to_string());
        }
        p.0
    }
}

fn kafka(k: &KafkaConfig, p: &mut Problems) {
    for (value, field) in [
        (&k.bootstrap_servers, "kafka.bootstrap_servers"),
        (&k.group_id, "kafka.group_id"),
        (&k.instance_id, "kafka.instance_id"),
    ] {
        p.check(!value.trim().is_empty(), field, "must not be empty");
    }
    p.check(
        (1..=60_000).contains(&k.commit_interval_ms),
        "kafka.commit_interval_ms",
        "must be in 1..=60000",
    );
    p.check(
        k.trip_commit_gap_ms <= 60_000,
        "kafka.trip_commit_gap_ms",
        "must be in 0..=60000",
    );
    p.check(
        k.max_batch_records >= 1,
        "kafka.max_batch_records",
        "must be >= 1",
    );
    p.check(
        k.transaction_timeout_ms >= k.commit_interval_ms.saturating_mul(10),
        "kafka.transaction_timeout_ms",
        "must be at least 10 x kafka.commit_interval_ms",
    );
    for key in k.client_properties.keys() {
        if let Some(why) = crate::kafka::client::refused(key) {
            p.add(&format!("kafka.client_properties.{key}"), why);
        }
    }
    group_protocol(k, p);
}

/// What the group protocol decides: the classic session timeout within librdkafka's range
/// (and above the heartbeat mailguard derives from it); with KIP-848 the broker sets the
/// heartbeat, and librdkafka refuses to start with the classic-only properties.
fn group_protocol(k: &KafkaConfig, p: &mut Problems) {
    match k.group_protocol {
        GroupProtocol::Classic => p.check(
            (1_000..=3_600_000).contains(&k.session_timeout_ms),
            "kafka.session_timeout_ms",
            "must be in 1000..=3600000 (and within the broker's group.min/max.session.timeout.ms)",
        ),
        GroupProtocol::Consumer => {
            for key in ["heartbeat.interval.ms", "group.protocol.type"] {
                if k.client_properties
                    .keys()
                    .any(|k| k.trim().eq_ignore_ascii_case(key))
                {
                    p.add(
                        &format!("kafka.client_properties.{key}"),
                        "not supported with kafka.group_protocol = \"consumer\": the broker's \
                         group.consumer.* settings decide",
                    );
                }
            }
        }
    }
}

fn topics(t: &TopicsConfig, p: &mut Problems) {
    let mut seen = HashSet::new();
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
        (&t.exemptions, "topics.exemptions"),
        (&t.scan_results, "topics.scan_results"),
        (&t.scan_results_routed, "topics.scan_results_routed"),
    ] {
        let valid = !name.is_empty()
            && name.len() <= 249
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            p.add(field, format!("`{name}` is not a valid Kafka topic name"));
        } else if !seen.insert(name.as_str()) {
            p.add(field, format!("topic `{name}` is used twice"));
        }
    }
    p.check(t.partitions >= 1, "topics.partitions", "must be >= 1");
    p.check(
        t.replication_factor >= 1,
        "topics.replication_factor",
        "must be >= 1",
    );
}

fn state(s: &StateConfig, p: &mut Problems) {
    p.check(
        (1..=1_000).contains(&s.tick_interval_ms),
        "state.tick_interval_ms",
        "must be in 1..=1000 (unblocks are due within 2 s)",
    );
}

fn http(h: &HttpConfig, p: &mut Problems) {
    if h.listen.parse::<std::net::SocketAddr>().is_err() {
        p.add("http.listen", format!("`{}` is not host:port", h.listen));
    }
}

fn registry(r: &RegistryConfig, p: &mut Problems) {
    if !r.enabled() {
        return;
    }
    let url = r.url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        p.add(
            "registry.url",
            format!("`{url}` is not an http:// or https:// URL"),
        );
    }
    p.check(
        (1..=120_000).contains(&r.timeout_ms),
        "registry.timeout_ms",
        "must be in 1..=120000",
    );
    p.check(
        r.password.is_empty() == r.username.is_empty(),
        "registry.password",
        "registry.username and registry.password go together",
    );
}

fn codec(c: &CodecConfig, p: &mut Problems) {
    for name in c.confluent_schema_ids.keys() {
        if name.parse::<crate::codec::RecordType>().is_err() {
            p.add(
                &format!("codec.confluent_schema_ids.{name}"),
                "not a record name of schemas/ (e.g. OutboundVerdict, MailboxBlock)",
            );
        }
    }
}

/// The view's directory is emptied at every start: it must not be, hold or sit inside the
/// pipeline's state directory.
fn view(a: &ApiConfig, s: &StateConfig, p: &mut Problems) {
    let (v, st) = (&a.view_dir(s), &s.dir);
    p.check(
        !(v.as_os_str().is_empty() || v.starts_with(st) || st.starts_with(v)),
        "api.view_dir",
        "must be a directory of its own, apart from state.dir (it is emptied at every start)",
    );
    p.check(
        (3_600_000..=10 * 365 * 86_400_000).contains(&a.view_retention_ms),
        "api.view_retention_ms",
        "must be between 1 h (3600000) and 10 years",
    );
}

/// The tokens; a principal and a tenant scope travel into every command the token issues
/// (`actor`, `tenant_id`), so they are held to the limits the pipeline applies to commands: a
/// longer one would have every command dead-lettered while the API answers 202.
fn api(a: &ApiConfig, limits: &Limits, p: &mut Problems) {
    let mut hashes = HashSet::new();
    for (i, t) in a.tokens.iter().enumerate() {
        let field = |name: &str| format!("api.tokens[{i}].{name}");
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            p.add(
                &field("sha256"),
                "must be 64 hex digits (the SHA-256 of the token, not the token)",
            );
        } else if !hashes.insert(t.sha256.as_str()) {
            p.add(&field("sha256"), "the same token hash is listed twice");
        }
        if t.principal.trim().is_empty() {
            p.add(&field("principal"), "must not be empty");
        }
        check_length(
            p,
            &field("principal"),
            &t.principal,
            "max_text_bytes",
            limits.max_text_bytes,
        );
        match (&t.tenant, t.role) {
            (None, ApiRole::Support) => {}
            (None, _) => p.add(
                &field("tenant"),
                "required for VIEWER and ADMIN (only SUPPORT may be global)",
            ),
            (Some(x), _) if x.trim().is_empty() => p.add(&field("tenant"), "must not be empty"),
            (Some(x), _) => {
                check_length(p, &field("tenant"), x, "max_id_bytes", limits.max_id_bytes)
            }
        }
    }
}

fn check_length(p: &mut Problems, field: &str, value: &str, setting: &str, limit: usize) {
    if value.len() > limit {
        p.add(
            field,
            format!(
                "is {} bytes, over limits.{setting} ({limit}): every command it issued would be \
                 dead-lettered",
                value.len()
            ),
        );
    }
}

fn policy(policy: &Policy, limits: &Limits, p: &mut Problems) {
    // The policy's own error names the field (`policy.threshold must be >= 1`).
    if let Err(e) = policy.validate() {
        p.add("policy", e.to_string());
    }
    if policy.threshold > limits.max_threshold {
        p.add(
            "policy.threshold",
            format!("must be <= limits.max_threshold ({})", limits.max_threshold),
        );
    }
}

/// The shadow policy, checked as `[policy]` is, its errors named `shadow.<field>`; a decay
/// below 0 is refused (0 means off).
fn shadow(c: &Config, p: &mut Problems) {
    if c.shadow.strike_decay_ms.is_some_and(|d| d < 0) {
        p.add("shadow.strike_decay_ms", "must be >= 0 (0 = off)");
        return;
    }
    let Some(s) = c.shadow.policy(&c.policy) else {
        return;
    };
    match s.validate() {
        // The idle TTL is [policy]'s: it is the shadow's window that is too long for it.
        Err(e) if e.field == "state_idle_ttl_ms" => p.add(
            "shadow.window_ms",
            format!(
                "plus shadow.allowed_lateness_ms must be <= policy.state_idle_ttl_ms ({})",
                s.state_idle_ttl_ms
            ),
        ),
        Err(e) => p.add(
            &format!("shadow.{}", e.field),
            e.reason.replace("policy.", "shadow."),
        ),
        Ok(()) => {}
    }
    if s.threshold > c.limits.max_threshold {
        p.add(
            "shadow.threshold",
            format!(
                "must be <= limits.max_threshold ({})",
                c.limits.max_threshold
            ),
        );
    }
}

fn limits(l: &Limits, p: &mut Problems) {
    if let Err((setting, why)) = l.validate() {
        p.add(&format!("limits.{setting}"), why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_dir_is_apart_from_the_state_and_its_retention_bounded() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.api.view_dir(&c.state),
            std::path::Path::new("data/state-view")
        );
        c.state.dir = "/var/lib/mailguard/".into();
        assert_eq!(
            c.api.view_dir(&c.state),
            std::path::Path::new("/var/lib/mailguard-view")
        );
        c.state.dir = "data/state".into();
        for dir in ["data/state", "data", "data/state/view", ""] {
            c.api.view_dir = Some(dir.into());
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("api.view_dir"), "{dir}: {e}");
        }
        c.api.view_dir = Some("data/api-view".into());
        c.api.view_retention_ms = 1_000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api.view_retention_ms"));
    }

    #[test]
    fn every_problem_is_reported_at_once_one_per_line() {
        let mut c = Config::default();
        c.kafka.group_id = String::new();
        c.kafka
            .client_properties
            .insert("isolation.level".into(), "read_uncommitted".into());
        c.topics.alerts = c.topics.events.clone();
        c.state.tick_interval_ms = 0;
        c.http.listen = "nope".into();
        c.policy.threshold = 0;
        let err = c.validate().unwrap_err();
        let fields: Vec<&str> = err.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "kafka.group_id",
                "kafka.client_properties.isolation.level",
                "topics.events",
                "state.tick_interval_ms",
                "http.listen",
                "policy",
            ]
        );
        let text = err.to_string();
        assert!(text.starts_with("6 errors:"), "{text}");
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(
            text.lines().skip(1).all(|l| l.contains("config field `")),
            "{text}"
        );
    }

    #[test]
    fn a_principal_or_tenant_over_the_command_limits_is_refused() {
        let mut c = Config::default();
        c.limits.max_text_bytes = 10;
        c.limits.max_id_bytes = 4;
        c.api.tokens.push(super::super::ApiToken {
            sha256: "a".repeat(64),
            principal: "p".repeat(11),
            role: ApiRole::Admin,
            tenant: Some("tenant".into()),
        });
        let err = c.validate().unwrap_err();
        let fields: Vec<&str> = err.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["api.tokens[0].principal", "api.tokens[0].tenant"]);
        let text = err.to_string();
        assert!(
            text.contains("11 bytes, over limits.max_text_bytes (10)")
                && text.contains("6 bytes, over limits.max_id_bytes (4)"),
            "{text}"
        );
        c.api.tokens[0].principal = "p".repeat(10);
        c.api.tokens[0].tenant = Some("t".repeat(4));
        c.validate().unwrap();
    }

    #[test]
    fn the_group_protocol_decides_which_consumer_settings_make_sense() {
        let mut c = Config::default();
        c.kafka.session_timeout_ms = 500;
        c.kafka
            .client_properties
            .insert("heartbeat.interval.ms".into(), "300".into());
        let fields = |c: &Config| -> Vec<String> {
            c.problems()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        // Classic: the session timeout is librdkafka's; a heartbeat of the user's is tuning.
        assert_eq!(fields(&c), ["kafka.session_timeout_ms"]);
        // KIP-848: the broker decides both; librdkafka would refuse to start on the heartbeat.
        c.kafka.group_protocol = GroupProtocol::Consumer;
        assert_eq!(
            fields(&c),
            ["kafka.client_properties.heartbeat.interval.ms"]
        );
        c.kafka.client_properties.clear();
        c.kafka.static_membership = false;
        assert_eq!(fields(&c), Vec::<String>::new());
        let parsed: super::super::KafkaConfig =
            toml::from_str("group_protocol = \"consumer\"\nstatic_membership = false").unwrap();
        assert_eq!(parsed.group_protocol, GroupProtocol::Consumer);
        assert!(
            toml::from_str::<super::super::KafkaConfig>("group_protocol = \"kip848\"").is_err()
        );
    }
}
