//! Client of a Confluent-compatible schema registry (Confluent Schema Registry, Apicurio's
//! `ccompat` API, Karapace, Redpanda): the REST calls mailguard needs and nothing more.
//!
//! - `GET /schemas/ids/{id}`: the writer schema of a Confluent-framed record whose id the codec
//!   has not seen. Called from the session thread on a cache miss only (the codec keeps every
//!   schema it resolved), so a blocking client with a bounded timeout is the simple, right tool.
//! - `POST /subjects/{subject}/versions`: register an output schema at start (`auto_register`);
//!   the registry answers with the id to frame outputs with, or 409 if its compatibility rule
//!   rejects the schema.
//! - `POST /subjects/{subject}`: look up the id of an already-registered schema
//!   (`auto_register = false`, for registries where only CI may register).
//!
//! Errors say which registry, which call and why, never a credential. Whether an error is worth
//! retrying ([`RegistryError::is_transient`]) decides whether a record waits for the registry or
//! goes to the DLQ: a registry that is down must never turn good input into dead letters.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::codec::{SchemaSource, SourceError};
use crate::config::RegistryConfig;

/// The content type the Confluent API speaks.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A failed registry call. `Display` names the registry URL and the call.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The settings cannot make a client (e.g. an unreadable CA file).
    #[error("schema registry: {0}")]
    Config(String),
    /// No answer: connection refused, DNS, TLS handshake, timeout.
    #[error("schema registry {url}: {call}: {reason}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// What was asked.
        call: String,
        /// Transport error.
        reason: String,
    },
    /// 401 or 403: wrong or missing credentials, or not allowed.
    #[error("schema registry {url}: {call}: HTTP {status}: not authorised (check registry.username / registry.password)")]
    Unauthorised {
        /// Base URL.
        url: String,
        /// What was asked.
        call: String,
        /// HTTP status.
        status: u16,
    },
    /// 409: the subject's compatibility rule rejects the schema.
    #[error(
        "schema registry {url}: subject {subject} rejects the schema as incompatible: {message}"
    )]
    Incompatible {
        /// Base URL.
        url: String,
        /// The subject.
        subject: String,
        /// The registry's message.
        message: String,
    },
    /// Any other non-success answer.
    #[error("schema registry {url}: {call}: HTTP {status}: {message}")]
    Http {
        /// Base URL.
        url: String,
        /// What was asked.
        call: String,
        /// HTTP status.
        status: u16,
        /// The registry's message (its `message` field when it sent JSON).
        message: String,
    },
}

impl RegistryError {
    /// Worth retrying later: the registry did not answer, or answered 5xx / 429.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A blocking client of one registry. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    authorization: Option<Arc<str>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("authenticated", &self.authorization.is_some())
            .finish()
    }
}

impl RegistryClient {
    /// A client for `cfg` (whose `url` must be set). Reads `ca_location` now, so a bad path is a
    /// start-up error.
    pub fn new(cfg: &RegistryConfig) -> Result<Self, RegistryError> {
        let roots = match &cfg.ca_location {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    RegistryError::Config(format!("registry.ca_location {}: {e}", path.display()))
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    RegistryError::Config(format!(
                        "registry.ca_location {}: not a PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                RootCerts::from([cert])
            }
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms)))
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("mailguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let authorization = (!cfg.username.is_empty()).then(|| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", cfg.username, cfg.password));
            Arc::from(format!("Basic {token}"))
        });
        Ok(RegistryClient {
            agent,
            base: cfg.url.trim().trim_end_matches('/').to_string(),
            authorization,
        })
    }

    /// The base URL (for messages).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema text of `id`; `Ok(None)` when the registry does not know the id.
    pub fn schema_by_id(&self, id: u32) -> Result<Option<String>, RegistryError> {
        let call = format!("GET /schemas/ids/{id}");
        match self.call(&call, &format!("/schemas/ids/{id}"), None)? {
            Answer::NotFound => Ok(None),
            Answer::Ok(body) => {
                let schema = body
                    .get("schema")
                    .and_then(|s| s.as_str())
                    .ok_or_else(|| self.malformed(&call, "no `schema` string in the answer"))?;
                if let Some(kind) = body.get("schemaType").and_then(|t| t.as_str()) {
                    if !kind.eq_ignore_ascii_case("AVRO") {
                        return Err(RegistryError::Http {
                            url: self.base.clone(),
                            call,
                            status: 200,
                            message: format!("schema {id} is of type {kind}, not AVRO"),
                        });
                    }
                }
                Ok(Some(schema.to_string()))
            }
        }
    }

    /// Registers `schema` (Avro JSON) under `subject` and returns its id. Registering a schema
    /// that is already there is a no-op that returns the existing id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let call = format!("POST /subjects/{subject}/versions");
        let body = json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{}/versions", encode_path(subject));
        match self.call(&call, &path, Some(&body)) {
            Ok(Answer::Ok(v)) => self.id_of(&call, &v),
            Ok(Answer::NotFound) => Err(RegistryError::Http {
                url: self.base.clone(),
                call,
                status: 404,
                message: "not found".into(),
            }),
            Err(RegistryError::Http {
                status: 409,
                message,
                ..
            }) => Err(RegistryError::Incompatible {
                url: self.base.clone(),
                subject: subject.to_string(),
                message,
            }),
            Err(e) => Err(e),
        }
    }

    /// The id of `schema` under `subject`, if it is registered there.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<Option<u32>, RegistryError> {
        let call = format!("POST /subjects/{subject}");
        let body = json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{}", encode_path(subject));
        match self.call(&call, &path, Some(&body))? {
            Answer::Ok(v) => self.id_of(&call, &v).map(Some),
            Answer::NotFound => Ok(None),
        }
    }

    fn id_of(&self, call: &str, v: &serde_json::Value) -> Result<u32, RegistryError> {
        v.get("id")
            .and_then(|id| id.as_u64())
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.malformed(call, "no 32-bit `id` in the answer"))
    }

    fn malformed(&self, call: &str, why: &str) -> RegistryError {
        RegistryError::Http {
            url: self.base.clone(),
            call: call.to_string(),
            status: 200,
            message: why.to_string(),
        }
    }

    fn call(&self, call: &str, path: &str, body: Option<&str>) -> Result<Answer, RegistryError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| RegistryError::Unreachable {
            url: self.base.clone(),
            call: call.to_string(),
            reason: e.to_string(),
        };
        let mut response = match body {
            None => {
                let mut req = self.agent.get(&url).header("Accept", CONTENT_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", &**a);
                }
                req.call()
            }
            Some(body) => {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Accept", CONTENT_TYPE)
                    .header("Content-Type", CONTENT_TYPE);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", &**a);
                }
                req.send(body)
            }
        }
        .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(unreachable)?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        match status {
            200..=299 => json
                .map(Answer::Ok)
                .ok_or_else(|| self.malformed(call, "answer is not JSON")),
            404 => Ok(Answer::NotFound),
            401 | 403 => Err(RegistryError::Unauthorised {
                url: self.base.clone(),
                call: call.to_string(),
                status,
            }),
            _ => {
                let message = json
                    .as_ref()
                    .and_then(|j| j.get("message"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect());
                Err(RegistryError::Http {
                    url: self.base.clone(),
                    call: call.to_string(),
                    status,
                    message,
                })
            }
        }
    }
}

impl SchemaSource for RegistryClient {
    fn schema_by_id(&self, id: u32) -> Result<Option<String>, SourceError> {
        RegistryClient::schema_by_id(self, id).map_err(|e| SourceError {
            transient: e.is_transient(),
            message: e.to_string(),
        })
    }
}

enum Answer {
    Ok(serde_json::Value),
    NotFound,
}

/// Percent-encodes a subject for a URL path segment (subjects may contain `/`, `:` …).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_path_encoded() {
        assert_eq!(
            encode_path("mailguard.blocks-value"),
            "mailguard.blocks-value"
        );
        assert_eq!(encode_path("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn an_unreachable_registry_is_transient_and_named() {
        // A port nothing listens on: bind one, then drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = RegistryConfig {
            url: format!("http://127.0.0.1:{port}"),
            timeout_ms: 2_000,
            ..RegistryConfig::default()
        };
        let e = RegistryClient::new(&cfg)
            .unwrap()
            .schema_by_id(1)
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        let s = e.to_string();
        assert!(
            s.contains(&format!("127.0.0.1:{port}")) && s.contains("/schemas/ids/1"),
            "{s}"
        );
    }

    #[test]
    fn credentials_never_appear_in_debug_output() {
        let cfg = RegistryConfig {
            url: "http://127.0.0.1:1".into(),
            username: "u".into(),
            password: "hunter2".into(),
            ..RegistryConfig::default()
        };
        let c = RegistryClient::new(&cfg).unwrap();
        let d = format!("{c:?} {cfg:?}");
        assert!(!d.contains("hunter2"), "{d}");
    }
}
