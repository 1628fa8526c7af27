//! Start-up checks that turn a misconfigured connection or a missing ACL into one message naming
//! the cause and the resource, before any work starts.
//!
//! Without them, librdkafka retries a wrong password or an untrusted certificate forever (the
//! process looks alive and does nothing), and a missing `WRITE` on an output topic shows only at
//! the first trip, as a failed transaction that is retried until the pipeline gives up — long
//! after the operator who changed the ACLs has gone home. So at start mailguard:
//!
//! 1. asks the cluster to describe every configured topic *with the operations this principal is
//!    authorised for* (KIP-430; `DescribeTopics` with `include_authorized_operations`), and
//!    checks each topic's role: inputs and tables need `READ`, outputs and the DLQ `WRITE`, the
//!    changelog both. A topic the principal may not even describe is reported as such.
//! 2. if that request cannot be answered, reports the last error librdkafka gave the connection
//!    (SASL authentication failed, SSL handshake failed, all brokers down) instead of a timeout.
//!
//! The consumer group and the transactional id are checked where they are first used (joining
//! the group, `init_transactions`), which fail at once and are reported by the session.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka_sys as sys;
use tracing::{debug, info};

use crate::config::Config;
use crate::kafka::{client, KafkaError};

/// What the principal must be allowed to do on a topic, and what for (named in the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The operation.
    pub op: Operation,
    /// Why mailguard needs it, e.g. "mailguard consumes it".
    pub why: &'static str,
}

const CONSUMES: &str = "mailguard consumes it";
const PRODUCES: &str = "mailguard produces to it";
const RESTORES: &str = "mailguard restores its state from it";
const VIEW_READS: &str = "the admin API's view reads it (api.enabled)";
const API_PRODUCES: &str = "the admin API sends support commands to it (api.enabled)";

/// The ACL operations mailguard checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `READ`.
    Read,
    /// `WRITE`.
    Write,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Read => "READ",
            Operation::Write => "WRITE",
        }
    }

    fn code(self) -> sys::rd_kafka_AclOperation_t {
        match self {
            Operation::Read => sys::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_READ,
            Operation::Write => sys::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_WRITE,
        }
    }
}

/// Every topic of the configuration with the operations mailguard needs on it. With
/// `api.enabled` the view also reads the blocks, events, alerts and commands topics (the
/// changelog and the tenant table it reads anyway) and the API writes commands: README's ACL
/// table.
pub fn topic_needs(cfg: &Config) -> Vec<(String, Vec<Need>)> {
    use Operation::{Read, Write};
    let t = &cfg.topics;
    let need = |op, why| Need { op, why };
    let mut needs: Vec<(String, Vec<Need>)> = [
        (&t.verdicts, vec![need(Read, CONSUMES)]),
        (&t.commands, vec![need(Read, CONSUMES)]),
        (&t.mailboxes, vec![need(Read, CONSUMES)]),
        (&t.devices, vec![need(Read, CONSUMES)]),
        (&t.tenants, vec![need(Read, CONSUMES)]),
        (&t.blocks, vec![need(Write, PRODUCES)]),
        (&t.scan_requests, vec![need(Write, PRODUCES)]),
        (&t.alerts, vec![need(Write, PRODUCES)]),
        (&t.events, vec![need(Write, PRODUCES)]),
        (&t.dlq, vec![need(Write, PRODUCES)]),
        (
            &t.changelog,
            vec![need(Read, RESTORES), need(Write, PRODUCES)],
        ),
        (&t.scan_results, vec![need(Read, CONSUMES)]),
        // Re-keyed by mailbox in the transaction that consumes the result, then consumed by the
        // owner of the incident's partition.
        (
            &t.scan_results_routed,
            vec![need(Read, CONSUMES), need(Write, PRODUCES)],
        ),
        // Written by the partition owning an exemption, read (as a table) by every instance.
        (
            &t.exemptions,
            vec![need(Read, CONSUMES), need(Write, PRODUCES)],
        ),
    ]
    .into_iter()
    .map(|(name, ops)| (name.clone(), ops))
    .collect();
    if cfg.api.enabled {
        for (name, ops) in needs.iter_mut() {
            if *name == t.blocks || *name == t.events || *name == t.alerts {
                ops.push(need(Read, VIEW_READS));
            } else if *name == t.commands {
                ops.push(need(Write, API_PRODUCES));
            }
        }
    }
    needs
}

/// Remembers the connection-level errors librdkafka reported, to explain a request that cannot
/// be answered, and to stop waiting as soon as one is an error retrying cannot fix.
#[derive(Clone, Default)]
pub struct RecordingContext {
    errors: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    /// The latest error's reason.
    last: Option<String>,
    /// The first wrong password or untrusted certificate. Kept apart from `last` because
    /// librdkafka follows it at once with "1/1 brokers are down", which says nothing about why.
    definitive: Option<String>,
}

impl RecordingContext {
    /// The best explanation there is: the definitive error if one came, else the latest.
    fn reason(&self) -> Option<String> {
        let r = self.errors.lock().ok()?;
        r.definitive.clone().or_else(|| r.last.clone())
    }

    /// A wrong password or an untrusted certificate: librdkafka would retry it forever.
    fn definitive(&self) -> Option<String> {
        self.errors.lock().ok()?.definitive.clone()
    }
}

impl ClientContext for RecordingContext {
    fn error(&self, error: RdError, reason: &str) {
        debug!(%error, %reason, "librdkafka error during preflight");
        if let Ok(mut r) = self.errors.lock() {
            // librdkafka's reason says what failed and in which state ("SASL authentication
            // error: …", "SSL handshake failed: …"); it never contains a credential.
            let reason = if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_string()
            };
            let definitive = matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
            );
            if definitive && r.definitive.is_none() {
                r.definitive = Some(reason.clone());
            }
            r.last = Some(reason);
        }
    }
}

impl rdkafka::producer::ProducerContext for RecordingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// One topic as described by the cluster.
#[derive(Debug)]
struct Described {
    name: String,
    error: Option<(sys::rd_kafka_resp_err_t, String)>,
    /// `None` when the broker did not report authorised operations.
    ops: Option<Vec<sys::rd_kafka_AclOperation_t>>,
}

/// Runs the checks; `Ok` means every topic exists (or will be created) and is usable as needed.
pub fn check(cfg: &Config, timeout: Duration) -> Result<(), KafkaError> {
    let ctx = RecordingContext::default();
    // A plain producer handle, not rust-rdkafka's AdminClient: the admin API works on any
    // client, and polling a producer serves librdkafka's error callbacks, which is how an
    // authentication or TLS failure reaches `ctx` while the request waits.
    let admin: BaseProducer<RecordingContext> =
        client::admin(&cfg.kafka).create_with_context(ctx.clone())?;
    let needs = topic_needs(cfg);
    let names: Vec<&str> = needs.iter().map(|(n, _)| n.as_str()).collect();
    let started = Instant::now();
    let described = match describe_topics(&admin, &names, timeout, &ctx) {
        Ok(d) => d,
        Err(e) => {
            return Err(KafkaError::Connect {
                bootstrap: cfg.kafka.bootstrap_servers.clone(),
                reason: ctx.reason().unwrap_or_else(|| e.to_string()),
            })
        }
    };
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "topics described: {described:?}"
    );
    let principal = principal(cfg);
    for (name, needs) in &needs {
        let Some(d) = described.iter().find(|d| &d.name == name) else {
            continue;
        };
        if let Some((code, message)) = &d.error {
            use sys::rd_kafka_resp_err_t::*;
            match code {
                RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED => {
                    return Err(KafkaError::NotAuthorised {
                        principal: principal.clone(),
                        resource: format!("Topic:{name}"),
                        operation: "DESCRIBE".into(),
                        why: "every topic mailguard uses must be described".into(),
                    })
                }
                // A missing topic is reported later by the partition check, or created.
                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART => continue,
                _ => {
                    return Err(KafkaError::Topic {
                        topic: name.clone(),
                        reason: message.clone(),
                    })
                }
            }
        }
        let Some(ops) = &d.ops else {
            debug!(topic = %name, "broker reported no authorised operations; not checked");
            continue;
        };
        for need in needs {
            let allowed = ops.iter().any(|o| {
                *o == need.op.code()
                    || *o == sys::rd_kafka_AclOperation_t::RD_KAFKA_ACL_OPERATION_ALL
            });
            if !allowed {
                return Err(KafkaError::NotAuthorised {
                    principal: principal.clone(),
                    resource: format!("Topic:{name}"),
                    operation: need.op.name().into(),
                    why: need.why.into(),
                });
            }
        }
    }
    info!(
        topics = needs.len(),
        "preflight: every topic usable as needed"
    );
    Ok(())
}

/// `User:<sasl.username>` when SASL is configured (for messages; never a secret).
pub(crate) fn principal(cfg: &Config) -> String {
    super::reader::principal(&cfg.kafka)
}

/// DescribeTopics with authorised operations, through librdkafka's C API (rust-rdkafka has no
/// wrapper for it): sends the request, waits for its answer and reads it.
fn describe_topics(
    admin: &BaseProducer<RecordingContext>,
    names: &[&str],
    timeout: Duration,
    ctx: &RecordingContext,
) -> Result<Vec<Described>, DescribeError> {
    let cnames: Vec<CString> = names
        .iter()
        .map(|n| CString::new(*n).map_err(|_| DescribeError::TopicName(n.to_string())))
        .collect::<Result<_, _>>()?;
    let request = DescribeRequest::send(admin, &cnames, timeout);
    let event = request.wait(admin, timeout, ctx)?;
    event.topics()
}

/// Why DescribeTopics described nothing. Preflight reports it as `KafkaError::Connect`, with the
/// client's own explanation when it has one.
#[derive(Debug, thiserror::Error)]
enum DescribeError {
    /// A topic name cannot be passed to librdkafka.
    #[error("topic name {0:?} contains NUL")]
    TopicName(String),
    /// The client recorded an error that no retry will cure (authentication, TLS, …).
    #[error("{0}")]
    Definitive(String),
    /// No answer came in time.
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    /// The request itself failed (the broker's or librdkafka's message).
    #[error("{0}")]
    Request(String),
}

/// A DescribeTopics request in flight: the objects librdkafka needs until the answer is read,
/// destroyed on drop.
struct DescribeRequest {
    queue: *mut sys::rd_kafka_queue_t,
    opts: *mut sys::rd_kafka_AdminOptions_t,
    topics: *mut sys::rd_kafka_TopicCollection_t,
}

impl DescribeRequest {
    /// Sends DescribeTopics for `names` with authorised operations, answered on a queue of its
    /// own; the broker is told to answer within `timeout`.
    fn send(admin: &BaseProducer<RecordingContext>, names: &[CString], timeout: Duration) -> Self {
        let rk = admin.client().native_ptr();
        let mut ptrs: Vec<*const std::os::raw::c_char> = names.iter().map(|c| c.as_ptr()).collect();
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut errbuf = [0 as std::os::raw::c_char; 256];
        // SAFETY: `rk` is a live client (borrowed from `admin`, which outlives the request);
        // librdkafka copies the topic names, so `ptrs` and `names` need only live for this call;
        // every object created is owned by the returned value and destroyed by its `Drop`.
        unsafe {
            let queue = sys::rd_kafka_queue_new(rk);
            let opts = sys::rd_kafka_AdminOptions_new(
                rk,
                sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            );
            sys::rd_kafka_AdminOptions_set_request_timeout(
                opts,
                millis,
                errbuf.as_mut_ptr(),
                errbuf.len(),
            );
            let err = sys::rd_kafka_AdminOptions_set_include_authorized_operations(opts, 1);
            if !err.is_null() {
                sys::rd_kafka_error_destroy(err);
            }
            let topics =
                sys::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len());
            sys::rd_kafka_DescribeTopics(rk, topics, opts, queue);
            DescribeRequest {
                queue,
                opts,
                topics,
            }
        }
    }

    /// The answer, within the request's own timeout (a little more, so its answer wins), in
    /// slices, so a definitive connection error recorded in `ctx` ends the wait at once.
    fn wait(
        &self,
        admin: &BaseProducer<RecordingContext>,
        timeout: Duration,
        ctx: &RecordingContext,
    ) -> Result<DescribeEvent, DescribeError> {
        let deadline = Instant::now() + timeout + Duration::from_secs(2);
        while Instant::now() < deadline {
            // Serves the error callbacks (and waits a little), then looks for the answer.
            admin.poll(Duration::from_millis(100));
            // SAFETY: `self.queue` is live until `self` is dropped; the event returned (if any)
            // is owned by the `DescribeEvent`, which destroys it.
            let event = unsafe { sys::rd_kafka_queue_poll(self.queue, 100) };
            if !event.is_null() {
                return Ok(DescribeEvent(event));
            }
            if let Some(reason) = ctx.definitive() {
                return Err(DescribeError::Definitive(reason));
            }
        }
        Err(DescribeError::NoAnswer(timeout))
    }
}

impl Drop for DescribeRequest {
    fn drop(&mut self) {
        // SAFETY: each pointer was created in `send` and is destroyed once, here.
        unsafe {
            sys::rd_kafka_TopicCollection_destroy(self.topics);
            sys::rd_kafka_AdminOptions_destroy(self.opts);
            sys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// The DescribeTopics answer (non-null), which owns every pointer read from it; destroyed on drop.
struct DescribeEvent(*mut sys::rd_kafka_event_t);

impl DescribeEvent {
    /// The request's error, or each topic described, its strings copied.
    fn topics(&self) -> Result<Vec<Described>, DescribeError> {
        // SAFETY: `self.0` is a live DescribeTopics result event; the descriptions and strings
        // read are owned by it and copied (by `described`, `cstr`) before it is destroyed.
        unsafe {
            if sys::rd_kafka_event_error(self.0)
                != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return Err(DescribeError::Request(cstr(
                    sys::rd_kafka_event_error_string(self.0),
                )));
            }
            let res = sys::rd_kafka_event_DescribeTopics_result(self.0);
            let mut n = 0usize;
            let descs = sys::rd_kafka_DescribeTopics_result_topics(res, &mut n);
            Ok((0..n).map(|i| described(*descs.add(i))).collect())
        }
    }
}

impl Drop for DescribeEvent {
    fn drop(&mut self) {
        // SAFETY: the event came from `rd_kafka_queue_poll` and is destroyed once, here.
        unsafe { sys::rd_kafka_event_destroy(self.0) }
    }
}

/// One topic's description: its name, its error (if any) and the authorised operations (if the
/// broker reported them).
///
/// # Safety
/// `d` must be a description owned by a live DescribeTopics result event.
unsafe fn described(d: *const sys::rd_kafka_TopicDescription_t) -> Described {
    let name = cstr(sys::rd_kafka_TopicDescription_name(d));
    let e = sys::rd_kafka_TopicDescription_error(d);
    let error = if e.is_null()
        || sys::rd_kafka_error_code(e) == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    {
        None
    } else {
        Some((
            sys::rd_kafka_error_code(e),
            cstr(sys::rd_kafka_error_string(e)),
        ))
    };
    let mut k = 0usize;
    let ops_ptr = sys::rd_kafka_TopicDescription_authorized_operations(d, &mut k);
    let ops = (!ops_ptr.is_null()).then(|| std::slice::from_raw_parts(ops_ptr, k).to_vec());
    Described { name, error, ops }
}

fn cstr(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner, which
    // the caller keeps alive while this copies.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_on(needs: &[(String, Vec<Need>)], topic: &str) -> Vec<&'static str> {
        let (_, n) = needs.iter().find(|(t, _)| t == topic).expect(topic);
        n.iter().map(|n| n.op.name()).collect()
    }

    #[test]
    fn the_api_adds_the_views_reads_and_the_commands_write() {
        let mut cfg = Config::default();
        let needs = topic_needs(&cfg);
        let t = cfg.topics.clone();
        assert_eq!(ops_on(&needs, &t.blocks), ["WRITE"]);
        assert_eq!(ops_on(&needs, &t.events), ["WRITE"]);
        assert_eq!(ops_on(&needs, &t.commands), ["READ"]);
        assert_eq!(ops_on(&needs, &t.changelog), ["READ", "WRITE"]);
        assert_eq!(ops_on(&needs, &t.exemptions), ["READ", "WRITE"]);
        cfg.api.enabled = true;
        let needs = topic_needs(&cfg);
        assert_eq!(ops_on(&needs, &t.blocks), ["WRITE", "READ"]);
        assert_eq!(ops_on(&needs, &t.events), ["WRITE", "READ"]);
        assert_eq!(ops_on(&needs, &t.commands), ["READ", "WRITE"]);
        assert_eq!(ops_on(&needs, &t.alerts), ["WRITE", "READ"]);
        assert_eq!(ops_on(&needs, &t.tenants), ["READ"]);
    }

    #[test]
    fn a_definitive_error_is_not_hidden_by_the_brokers_down_that_follows_it() {
        let ctx = RecordingContext::default();
        assert_eq!(ctx.reason(), None);
        ctx.error(
            RdError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "Connection refused",
        );
        assert_eq!(ctx.definitive(), None, "a refused connection may recover");
        assert_eq!(ctx.reason().as_deref(), Some("Connection refused"));
        let sasl = "SASL authentication error: Authentication failed due to invalid credentials";
        ctx.error(RdError::Global(RDKafkaErrorCode::Authentication), sasl);
        ctx.error(
            RdError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(ctx.definitive().as_deref(), Some(sasl));
        assert_eq!(ctx.reason().as_deref(), Some(sasl));
    }

    #[test]
    fn a_tls_failure_is_definitive_and_the_first_one_is_kept() {
        let ctx = RecordingContext::default();
        ctx.error(
            RdError::Global(RDKafkaErrorCode::SSL),
            "SSL handshake failed: certificate verify failed",
        );
        ctx.error(RdError::Global(RDKafkaErrorCode::SSL), "");
        assert_eq!(
            ctx.definitive().as_deref(),
            Some("SSL handshake failed: certificate verify failed")
        );
    }
}
