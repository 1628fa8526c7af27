//! `mailguard produce` and `mailguard tail`: the codec for people, so the pipeline can be seen
//! and driven by hand with JSON lines. `mailguard admin`: the admin API's client.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use serde_json::{json, Value};

use crate::codec::{Codec, RecordType};
use crate::config::Config;
use crate::kafka::reader::{Read, ReadError, Start, TopicReader};
use crate::kafka::{client, KafkaError};
use crate::timers::Clock;
use crate::wiring::codec_for;

/// Errors of the CLI tools; Display names the line or topic.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input line.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The topic's record type cannot be inferred.
    #[error("topic `{0}` is not a mailguard topic; pass --type")]
    UnknownTopic(String),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The wire format could not be set up (schema registry, writer schemas).
    #[error("{0}")]
    Wire(String),
    /// I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<rdkafka::error::KafkaError> for CliError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        CliError::Kafka(e.to_string())
    }
}

/// Arguments of `mailguard produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic (default: the verdicts topic).
    #[arg(long)]
    pub topic: Option<String>,
    /// Record type (default: inferred from the topic).
    #[arg(long = "type")]
    pub record_type: Option<String>,
}

/// Arguments of `mailguard tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Record type (default: inferred from the topic; the DLQ prints raw records).
    #[arg(long = "type")]
    pub record_type: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Stop after this many seconds without a record (default: follow forever).
    #[arg(long)]
    pub idle_timeout: Option<f64>,
}

/// The record type that lives on a configured topic.
pub fn record_type_for_topic(cfg: &Config, topic: &str) -> Option<RecordType> {
    let t = &cfg.topics;
    Some(match topic {
        x if x == t.verdicts => RecordType::OutboundVerdict,
        x if x == t.mailboxes => RecordType::MailboxOwner,
        x if x == t.devices => RecordType::OwnerDevices,
        x if x == t.tenants => RecordType::TenantSettings,
        x if x == t.commands => RecordType::AdminCommand,
        x if x == t.blocks => RecordType::MailboxBlock,
        x if x == t.scan_requests => RecordType::ScanRequest,
        x if x == t.alerts => RecordType::Alert,
        x if x == t.events => RecordType::EventLogEntry,
        x if x == t.exemptions => RecordType::Exemption,
        x if x == t.scan_results || x == t.scan_results_routed => RecordType::ScanResult,
        _ => return None,
    })
}

/// The key field of a record type (SPEC §2 keys).
fn key_field(rt: RecordType) -> &'static str {
    match rt {
        RecordType::OutboundVerdict
        | RecordType::MailboxOwner
        | RecordType::AdminCommand
        | RecordType::MailboxBlock
        | RecordType::EventLogEntry => "mailbox",
        RecordType::OwnerDevices => "owner_id",
        RecordType::TenantSettings | RecordType::Alert => "tenant_id",
        RecordType::ScanRequest | RecordType::ScanResult => "device_id",
        RecordType::Exemption => "pattern",
    }
}

fn resolve_type(cfg: &Config, topic: &str, given: Option<&str>) -> Result<RecordType, CliError> {
    match given {
        Some(name) => name
            .parse()
            .map_err(|_| CliError::UnknownTopic(format!("{topic} (type {name})"))),
        None => record_type_for_topic(cfg, topic)
            .ok_or_else(|| CliError::UnknownTopic(topic.to_string())),
    }
}

/// Replace `"now"` / `"now-<ms>"` / `"now+<ms>"` in the timestamp fields with epoch ms, so a
/// person can write a sample burst without computing times.
fn fill_now(v: &mut Value, now: i64) {
    if let Value::Object(map) = v {
        for field in ["sent_at", "issued_at"] {
            if let Some(Value::String(s)) = map.get(field) {
                let t = if s == "now" {
                    Some(now)
                } else if let Some(d) = s.strip_prefix("now-") {
                    d.parse::<i64>().ok().map(|d| now - d)
                } else if let Some(d) = s.strip_prefix("now+") {
                    d.parse::<i64>().ok().map(|d| now + d)
                } else {
                    None
                };
                if let Some(t) = t {
                    map.insert(field.to_string(), json!(t));
                }
            }
        }
    }
}

/// One JSON line of `produce` as the Avro record of `rt` in `buf` (`now` placeholders filled
/// from `clock`), and its key; `None` for a blank or `#` comment line.
fn encode_line(
    codec: &Codec,
    rt: RecordType,
    line: &str,
    clock: &dyn Clock,
    buf: &mut Vec<u8>,
) -> Result<Option<String>, String> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let mut v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    fill_now(&mut v, clock.now_ms());
    let key = v
        .get(key_field(rt))
        .and_then(Value::as_str)
        .map(|k| {
            if key_field(rt) == "mailbox" {
                crate::policy::Mailbox::new(k).into_string()
            } else {
                k.to_string()
            }
        })
        .ok_or_else(|| format!("missing string field `{}`", key_field(rt)))?;
    buf.clear();
    codec.json_to_avro(rt, &v, buf).map_err(|e| e.to_string())?;
    Ok(Some(key))
}

/// `mailguard produce`: JSON lines on stdin → Avro records keyed by the record's key field;
/// `now` placeholders are filled from `clock`.
pub fn produce(cfg: &Config, args: &ProduceArgs, clock: &dyn Clock) -> Result<(), CliError> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| cfg.topics.verdicts.clone());
    let rt = resolve_type(cfg, &topic, args.record_type.as_deref())?;
    // With a registry, the record type is registered under the topic's subject, as any
    // Confluent serializer would do.
    let codec =
        codec_for(cfg, &[(topic.as_str(), rt)]).map_err(|e| CliError::Wire(e.to_string()))?;
    let producer: BaseProducer = client::plain_producer(&cfg.kafka, "cli").create()?;
    let stdin = std::io::stdin();
    let mut n = 0usize;
    let mut buf = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line?;
        let key = match encode_line(&codec, rt, &line, clock, &mut buf) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(reason) => {
                return Err(CliError::Line {
                    line: i + 1,
                    reason,
                })
            }
        };
        let mut rec = BaseRecord::<str, [u8]>::to(&topic)
            .key(key.as_str())
            .payload(&buf);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        n += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    eprintln!("produced {n} {} record(s) to {topic}", rt.name());
    Ok(())
}

/// `mailguard tail`: a topic's records (read_committed) → JSON lines on stdout.
pub fn tail(cfg: &Config, args: &TailArgs) -> Result<(), CliError> {
    let raw = args.topic == cfg.topics.dlq || args.topic == cfg.topics.changelog;
    let rt = if raw {
        None
    } else {
        Some(resolve_type(cfg, &args.topic, args.record_type.as_deref())?)
    };
    let codec: Codec = codec_for(cfg, &[]).map_err(|e| CliError::Wire(e.to_string()))?;
    let mut reader = TopicReader::new(&cfg.kafka, "tail", &args.topic, "`mailguard tail` reads it")
        .map_err(|e| CliError::Kafka(e.to_string()))?;
    reader
        .assign_all(|_| Ok::<_, KafkaError>(Start::Beginning))
        .map_err(|e| CliError::Kafka(e.to_string()))?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut n = 0usize;
    let mut last = Instant::now();
    loop {
        if args.max.is_some_and(|m| n >= m) {
            break;
        }
        if args
            .idle_timeout
            .is_some_and(|t| last.elapsed().as_secs_f64() >= t)
        {
            break;
        }
        let msg = match reader.poll(Duration::from_millis(200)) {
            Ok(Some(Read::Record(m))) => m,
            Ok(_) => continue,
            Err(e @ ReadError::NotAuthorised(_)) => return Err(CliError::Kafka(e.to_string())),
            // librdkafka retries the rest (a broker restarting); --idle-timeout bounds the wait.
            Err(e) => {
                eprintln!("tail: {e}");
                continue;
            }
        };
        last = Instant::now();
        let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
        let value = match (rt, msg.payload()) {
            (_, None) => Value::Null,
            (Some(rt), Some(bytes)) => match codec.avro_to_json(rt, bytes) {
                Ok(v) => v,
                Err(e) => json!({ "undecodable": e.to_string() }),
            },
            (None, Some(bytes)) => {
                json!({ "bytes": bytes.len(), "utf8_lossy": String::from_utf8_lossy(bytes) })
            }
        };
        let mut line = json!({
            "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(), "key": key, "value": value,
        });
        if let Some(h) = msg.headers() {
            let headers: serde_json::Map<String, Value> = h
                .iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        json!(x.value.map(|v| String::from_utf8_lossy(v).into_owned())),
                    )
                })
                .collect();
            line["headers"] = Value::Object(headers);
        }
        writeln!(out, "{line}")?;
        out.flush()?;
        n += 1;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// `mailguard admin`: the API's client, for support staff and scripts.

/// Arguments of `mailguard admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Base URL of a mailguard instance (any instance answers for any mailbox).
    #[arg(
        long,
        env = "MAILGUARD_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// File holding the bearer token (else MAILGUARD_API_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `mailguard admin exempt` subcommands. A pattern is one mailbox (`local@domain`) or every
/// mailbox of one domain (`*@domain`, not its subdomains).
#[derive(Debug, clap::Subcommand)]
pub enum ExemptAction {
    /// Add (or replace) an exemption; waits for the pipeline's decision like `unblock`.
    Add {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Why (for the audit trail).
        #[arg(long)]
        reason: String,
        /// When it ends, ms since the Unix epoch (default: never).
        #[arg(long)]
        expires_at: Option<i64>,
        /// Mailbox or `*@domain`.
        pattern: String,
        /// Seconds to wait for the outcome (0: print the command id and return).
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// Remove an exemption; waits for the pipeline's decision like `unblock`.
    Remove {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Mailbox or `*@domain`.
        pattern: String,
        /// Seconds to wait for the outcome (0: print the command id and return).
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// The tenant's exemptions in force.
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
    },
}

/// The time range of `admin events` and `admin incidents`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListRange {
    /// Earliest time included, ms since the Unix epoch.
    #[arg(long)]
    pub from: Option<i64>,
    /// Earliest time no longer included, ms since the Unix epoch.
    #[arg(long)]
    pub to: Option<i64>,
    /// Stop after this many entries (default: all of them).
    #[arg(long)]
    pub max: Option<usize>,
}

/// `mailguard admin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// A mailbox's state, strikes, window and recent incidents.
    Status {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Mailbox.
        mailbox: String,
    },
    /// A tenant's blocked mailboxes (every page).
    Blocked {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// BLOCKED or PERMANENTLY_BLOCKED.
        #[arg(long)]
        state: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 500)]
        limit: usize,
    },
    /// An incident's evidence and timeline.
    Incident {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Incident id.
        incident_id: String,
    },
    /// A tenant's events report, newest first, every page: one JSON object per line, or CSV
    /// (role ADMIN or SUPPORT).
    Events {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        range: ListRange,
        /// Only these kinds (comma-separated, e.g. MAILBOX_BLOCKED,SCAN_COMPLETED).
        #[arg(long)]
        kind: Option<String>,
        /// Only this mailbox.
        #[arg(long)]
        mailbox: Option<String>,
        /// CSV (the API's export, header row once) instead of JSON lines.
        #[arg(long)]
        csv: bool,
    },
    /// A tenant's incidents, newest first, every page: one JSON object per line (role ADMIN or
    /// SUPPORT).
    Incidents {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        range: ListRange,
        /// OPEN, REMEDIATED, NEEDS_ATTENTION or NO_SCAN.
        #[arg(long)]
        state: Option<String>,
    },
    /// Lift a permanent block (role SUPPORT); waits for the pipeline's decision.
    Unblock {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Support ticket reference.
        #[arg(long)]
        ticket: String,
        /// Mailbox.
        mailbox: String,
        /// Seconds to wait for the outcome (0: print the command id and return). Exits 0 when
        /// ACCEPTED, non-zero when REJECTED or when still PENDING at the end of the wait.
        #[arg(long, default_value_t = 30.0)]
        wait: f64,
    },
    /// A tenant's exemptions (role ADMIN or SUPPORT to change them, VIEWER to list them).
    Exempt {
        /// Add, remove or list.
        #[command(subcommand)]
        action: ExemptAction,
    },
    /// A new random token: prints the token (once) and the `[[api.tokens]]` entry to configure.
    IssueToken {
        /// Principal name (written into every command the token issues).
        #[arg(long)]
        principal: String,
        /// VIEWER, ADMIN or SUPPORT.
        #[arg(long)]
        role: String,
        /// Tenant scope (required but for SUPPORT).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The SHA-256 (hex) of a token read from stdin, for `[[api.tokens]] sha256`.
    HashToken,
}

fn admin_token(args: &AdminArgs) -> Result<String, CliError> {
    let token = match &args.token_file {
        Some(p) => std::fs::read_to_string(p)?,
        None => std::env::var("MAILGUARD_API_TOKEN").map_err(|_| {
            CliError::Wire("no token: pass --token-file or set MAILGUARD_API_TOKEN".into())
        })?,
    };
    Ok(token.trim().to_string())
}

fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

struct ApiClient {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

impl ApiClient {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let (status, v) = self.call_status(method, path, body)?;
        if status >= 400 {
            return Err(http_error(status, &v));
        }
        Ok(v)
    }

    /// The HTTP status and the body, whatever the status.
    fn call_status(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CliError> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .content_type("application/json")
                .send(b.to_string()),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &self.authorization)
                .content_type("application/json")
                .send(b.to_string()),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &self.authorization)
                .call(),
            _ => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .call(),
        };
        let mut resp = result.map_err(|e| CliError::Wire(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| CliError::Wire(format!("{url}: {e}")))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }
}

fn http_error(status: u16, v: &Value) -> CliError {
    let msg = v
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| v.to_string(), str::to_owned);
    CliError::Wire(format!("HTTP {status}: {msg}"))
}

fn print_json(v: &Value) -> Result<(), CliError> {
    let out = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    writeln!(std::io::stdout().lock(), "{out}")?;
    Ok(())
}

/// `mailguard admin`.
pub fn admin(args: &AdminArgs) -> Result<(), CliError> {
    match &args.command {
        AdminCommand::HashToken => return hash_token(),
        AdminCommand::IssueToken {
            principal,
            role,
            tenant,
        } => return issue_token(principal, role, tenant.as_deref()),
        _ => {}
    }
    let client = ApiClient {
        agent: ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into(),
        base: args.url.trim_end_matches('/').to_string(),
        authorization: format!("Bearer {}", admin_token(args)?),
    };
    match &args.command {
        AdminCommand::Status { tenant, mailbox } => print_json(&client.call(
            "GET",
            &format!(
                "/v1/tenants/{}/mailboxes/{}",
                url_part(tenant),
                url_part(mailbox)
            ),
            None,
        )?),
        AdminCommand::Blocked {
            tenant,
            state,
            limit,
        } => blocked(&client, tenant, state.as_deref(), *limit),
        AdminCommand::Incident {
            tenant,
            incident_id,
        } => print_json(&client.call(
            "GET",
            &format!(
                "/v1/tenants/{}/incidents/{}",
                url_part(tenant),
                url_part(incident_id)
            ),
            None,
        )?),
        AdminCommand::Unblock {
            tenant,
            ticket,
            mailbox,
            wait,
        } => unblock(&client, tenant, mailbox, ticket, *wait),
        AdminCommand::Exempt { action } => exempt(&client, action),
        AdminCommand::Events {
            tenant,
            range,
            kind,
            mailbox,
            csv,
        } => {
            let filters = [("kind", kind.as_deref()), ("mailbox", mailbox.as_deref())];
            let list = List::new(tenant, "events", range, &filters);
            if *csv {
                events_csv(&client, &list)
            } else {
                list.print_lines(&client)
            }
        }
        AdminCommand::Incidents {
            tenant,
            range,
            state,
        } => List::new(tenant, "incidents", range, &[("state", state.as_deref())])
            .print_lines(&client),
        AdminCommand::HashToken | AdminCommand::IssueToken { .. } => Ok(()),
    }
}

/// `admin hash-token`: the SHA-256 of a token read from stdin.
fn hash_token() -> Result<(), CliError> {
    let mut token = String::new();
    std::io::stdin().read_line(&mut token)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::Wire("no token on stdin".into()));
    }
    writeln!(std::io::stdout(), "{}", crate::api::auth::hash_token(token))?;
    Ok(())
}

/// `admin issue-token`: a new random token and its `[[api.tokens]]` entry.
fn issue_token(principal: &str, role: &str, tenant: Option<&str>) -> Result<(), CliError> {
    let role = role.to_ascii_uppercase();
    if !matches!(role.as_str(), "VIEWER" | "ADMIN" | "SUPPORT") {
        return Err(CliError::Wire(
            "--role must be VIEWER, ADMIN or SUPPORT".into(),
        ));
    }
    if tenant.is_none() && role != "SUPPORT" {
        return Err(CliError::Wire(
            "--tenant is required but for SUPPORT".into(),
        ));
    }
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).map_err(|e| CliError::Wire(e.to_string()))?;
    use base64::Engine as _;
    let token = format!(
        "mgt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# token (give it to {principal}; it is not stored anywhere):"
    )?;
    writeln!(out, "# {token}")?;
    writeln!(out, "[[api.tokens]]")?;
    writeln!(out, "sha256 = \"{}\"", crate::api::auth::hash_token(&token))?;
    writeln!(out, "principal = {}", Value::String(principal.to_owned()))?;
    writeln!(out, "role = \"{role}\"")?;
    if let Some(t) = tenant {
        writeln!(out, "tenant = {}", Value::String(t.to_owned()))?;
    }
    Ok(())
}

/// A page's `next_cursor`, if there is more.
fn next_cursor(page: &Value) -> Option<String> {
    page.get("next_cursor")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// `admin blocked`: every page of a tenant's blocked list.
fn blocked(
    client: &ApiClient,
    tenant: &str,
    state: Option<&str>,
    limit: usize,
) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    let mut items = Vec::new();
    loop {
        let mut q = format!("limit={limit}");
        if let Some(s) = state {
            q.push_str(&format!("&state={}", url_part(s)));
        }
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={}", url_part(c)));
        }
        let page = client.call(
            "GET",
            &format!("/v1/tenants/{}/blocked?{q}", url_part(tenant)),
            None,
        )?;
        if let Some(a) = page.get("items").and_then(Value::as_array) {
            items.extend(a.iter().cloned());
        }
        cursor = next_cursor(&page);
        if cursor.is_none() {
            break;
        }
    }
    print_json(&json!({ "tenant_id": tenant, "items": items }))
}

/// A time-ordered list of the API (`/v1/tenants/{tenant}/{what}`) and its query.
struct List {
    path: String,
    query: String,
    max: usize,
}

impl List {
    fn new(tenant: &str, what: &str, range: &ListRange, filters: &[(&str, Option<&str>)]) -> List {
        let mut q = Vec::new();
        for (k, v) in [("from", range.from), ("to", range.to)] {
            if let Some(v) = v {
                q.push(format!("{k}={v}"));
            }
        }
        for (k, v) in filters {
            if let Some(v) = v {
                q.push(format!("{k}={}", url_part(v)));
            }
        }
        List {
            path: format!("/v1/tenants/{}/{what}", url_part(tenant)),
            query: q.join("&"),
            max: range.max.unwrap_or(usize::MAX),
        }
    }

    fn page_path(&self, cursor: Option<&str>, extra: &str) -> String {
        let mut q = vec![extra.to_owned()];
        if !self.query.is_empty() {
            q.push(self.query.clone());
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={}", url_part(c)));
        }
        format!("{}?{}", self.path, q.join("&"))
    }

    /// Every entry, one JSON object per line, as the pages arrive.
    fn print_lines(&self, client: &ApiClient) -> Result<(), CliError> {
        let mut cursor: Option<String> = None;
        let mut n = 0;
        let mut out = std::io::stdout().lock();
        while n < self.max {
            let limit = (self.max - n).min(1000);
            let page = client.call(
                "GET",
                &self.page_path(cursor.as_deref(), &format!("limit={limit}")),
                None,
            )?;
            for item in page
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                writeln!(out, "{item}")?;
                n += 1;
            }
            cursor = next_cursor(&page);
            if cursor.is_none() {
                break;
            }
        }
        Ok(())
    }
}

/// `admin events --csv`: the API's CSV pages, the header row once.
fn events_csv(client: &ApiClient, list: &List) -> Result<(), CliError> {
    let mut cursor: Option<String> = None;
    let mut out = std::io::stdout().lock();
    let mut first = true;
    let mut n = 0;
    while n < list.max {
        let limit = (list.max - n).min(10_000);
        let url = format!(
            "{}{}",
            client.base,
            list.page_path(cursor.as_deref(), &format!("limit={limit}&format=csv"))
        );
        let mut resp = client
            .agent
            .get(&url)
            .header("Authorization", &client.authorization)
            .call()
            .map_err(|e| CliError::Wire(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        cursor = resp
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| CliError::Wire(format!("{url}: {e}")))?;
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(http_error(status, &v));
        }
        // Rows end with CRLF; a field can hold a line break only inside quotes, so the header
        // is everything up to the first CRLF.
        let body = match text.split_once("\r\n") {
            Some((_, rest)) if !first => rest,
            _ => text.as_str(),
        };
        n += body.matches("\r\n").count() - usize::from(first);
        out.write_all(body.as_bytes())?;
        first = false;
        if cursor.is_none() {
            break;
        }
    }
    Ok(())
}

/// `admin unblock`: send a support unblock and follow its status for up to `wait` seconds.
fn unblock(
    client: &ApiClient,
    tenant: &str,
    mailbox: &str,
    ticket: &str,
    wait: f64,
) -> Result<(), CliError> {
    let path = format!(
        "/v1/tenants/{}/mailboxes/{}/support-unblock",
        url_part(tenant),
        url_part(mailbox)
    );
    let body = json!({ "ticket": ticket });
    send_and_follow(client, ("POST", &path, Some(&body)), wait)
}

/// `admin exempt`: add and remove follow the command like `unblock`; list prints the list.
fn exempt(client: &ApiClient, action: &ExemptAction) -> Result<(), CliError> {
    let path = |tenant: &str, pattern: &str| {
        format!(
            "/v1/tenants/{}/exemptions/{}",
            url_part(tenant),
            url_part(pattern)
        )
    };
    match action {
        ExemptAction::Add {
            tenant,
            reason,
            expires_at,
            pattern,
            wait,
        } => {
            let body = json!({ "reason": reason, "expires_at": expires_at });
            let path = path(tenant, pattern);
            send_and_follow(client, ("PUT", &path, Some(&body)), *wait)
        }
        ExemptAction::Remove {
            tenant,
            pattern,
            wait,
        } => send_and_follow(client, ("DELETE", &path(tenant, pattern), None), *wait),
        ExemptAction::List { tenant } => print_json(&client.call(
            "GET",
            &format!("/v1/tenants/{}/exemptions", url_part(tenant)),
            None,
        )?),
    }
}

/// Sends a command through the API and follows its status for up to `wait` seconds.
fn send_and_follow(
    client: &ApiClient,
    (method, path, body): (&str, &str, Option<&Value>),
    wait: f64,
) -> Result<(), CliError> {
    let (code, sent) = client.call_status(method, path, body)?;
    // 503 with a status URL: sent, but the broker had not acknowledged it in time; it may still
    // land, so its status is followed like an accepted one's.
    let status_url = sent.get("status_url").and_then(Value::as_str);
    let unacknowledged = code == 503 && status_url.is_some();
    if code >= 400 && !unacknowledged {
        return Err(http_error(code, &sent));
    }
    let Some(status_url) = status_url else {
        return print_json(&sent);
    };
    if unacknowledged {
        eprintln!("sent, not yet acknowledged by the broker; following {status_url}");
    }
    let deadline = Instant::now() + Duration::from_secs_f64(wait.max(0.0));
    loop {
        let (code, st) = client.call_status("GET", status_url, None)?;
        // Until an unacknowledged command lands, the view does not know it (404).
        let st = match code {
            404 if unacknowledged => json!({ "status": "PENDING" }),
            c if c >= 400 => return Err(http_error(c, &st)),
            _ => st,
        };
        let status = st.get("status").and_then(Value::as_str);
        if status != Some("PENDING") || Instant::now() >= deadline {
            print_json(&st)?;
            return unblock_outcome(status, wait, status_url);
        }
        // The outcome appears once the pipeline committed the command's transaction.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit of `admin unblock` once it stopped waiting: success only for ACCEPTED, or for a
/// PENDING command when `--wait 0` asked not to wait; a command still PENDING after a wait has an
/// unknown outcome, which a script must not take for success.
fn unblock_outcome(status: Option<&str>, wait: f64, status_url: &str) -> Result<(), CliError> {
    match status {
        Some("ACCEPTED") => Ok(()),
        Some("PENDING") if wait <= 0.0 => Ok(()),
        Some("REJECTED") => Err(CliError::Wire("command rejected".into())),
        Some("PENDING") => Err(CliError::Wire(format!(
            "outcome unknown: the command is still PENDING after {wait} s (the pipeline has not \
             decided it yet); ask again with GET {status_url}"
        ))),
        other => Err(CliError::Wire(format!(
            "outcome unknown: unexpected status {}",
            other.unwrap_or("(none)")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unblock_succeeds_only_when_accepted_or_not_awaited() {
        let url = "/v1/x/commands/1";
        assert!(unblock_outcome(Some("ACCEPTED"), 30.0, url).is_ok());
        assert!(unblock_outcome(Some("PENDING"), 0.0, url).is_ok());
        let e = unblock_outcome(Some("PENDING"), 2.0, url)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outcome unknown") && e.contains(url), "{e}");
        let e = unblock_outcome(Some("REJECTED"), 2.0, url)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rejected"), "{e}");
        assert!(unblock_outcome(None, 2.0, url).is_err());
    }

    #[test]
    fn now_placeholders_are_filled() {
        let mut v = json!({"sent_at": "now-1000", "issued_at": "now", "other": "now"});
        fill_now(&mut v, 10_000);
        assert_eq!(
            v,
            json!({"sent_at": 9_000, "issued_at": 10_000, "other": "now"})
        );
    }

    #[test]
    fn produced_times_are_the_injected_clocks() {
        let codec = Codec::new(Default::default());
        let clock = crate::timers::ManualClock::frozen(1_700_000_000_000);
        let line = r#"{"message_id": "m-1", "tenant_id": "t-1", "mailbox": "Alice@Example.COM",
            "sent_at": "now-1000", "verdict": "SPAM", "recipient_count": 1, "gateway_id": "g"}"#
            .replace('\n', " ");
        let mut buf = Vec::new();
        let key =
            encode_line(&codec, RecordType::OutboundVerdict, &line, &clock, &mut buf).unwrap();
        assert_eq!(key.as_deref(), Some("alice@example.com"));
        let v = codec.decode_verdict(&buf).unwrap();
        assert_eq!(v.sent_at, 1_699_999_999_000);
        assert_eq!(v.message_id, "m-1");
        let mut buf = Vec::new();
        assert_eq!(
            encode_line(
                &codec,
                RecordType::OutboundVerdict,
                " # a comment",
                &clock,
                &mut buf
            ),
            Ok(None)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn every_input_and_output_topic_has_a_type() {
        let cfg = Config::default();
        for (topic, _) in cfg.topics.all() {
            if topic != cfg.topics.dlq && topic != cfg.topics.changelog {
                assert!(record_type_for_topic(&cfg, topic).is_some(), "{topic}");
            }
        }
    }
}
