//! The admin and query API (`/v1`): people in the blocking process see a mailbox's state, a
//! tenant's blocked mailboxes, an incident's timeline and the tenant's settings, and support lifts
//! permanent blocks — each caller confined to its role and tenant.
//!
//! - [`auth`] — bearer tokens (stored hashed) → principal, role, tenant scope.
//! - [`view`] — the queryable view every instance builds from mailguard's own topics, so any
//!   instance answers for any mailbox.
//! - [`handlers`] — the endpoints; the contract is `docs/openapi.json`, served at
//!   `/v1/openapi.json`.
//! - [`reports`] — the tenant's time-ordered lists: the events report (JSON or CSV), incidents
//!   and alerts.
//! - [`console`] — the browser pages under `/ui`, on the same operations and checks.
//!
//! A support unblock is not applied here: it becomes an `AdminCommand` on the commands topic,
//! exactly what an operator's producer would send, and the pipeline decides and audits it.

pub mod auth;
pub mod console;
pub mod handlers;
pub mod reports;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rdkafka::producer::FutureProducer;

use crate::codec::{Codec, RecordType};
use crate::config::Config;
use crate::kafka::{client, KafkaError};
use crate::policy::{Limits, Policy, TenantSettings};
use crate::telemetry::Metrics;
use crate::timers::Clock;
use crate::wiring::{self, WireError};

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Kafka set-up failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The wire format could not be set up (schema registry).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The view's local store could not be opened (`api.view_dir`).
    #[error("api.view_dir: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct Api {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) auth: auth::Authenticator,
    pub(crate) view: view::SharedView,
    pub(crate) codec: Codec,
    pub(crate) producer: FutureProducer,
    pub(crate) commands_topic: String,
    pub(crate) policy: Policy,
    pub(crate) tenant_defaults: TenantSettings,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limits: Limits,
    pub(crate) sessions: console::session::Sessions,
    stop: Arc<AtomicBool>,
    reader: std::sync::Mutex<Option<view::ViewReader>>,
}

impl Api {
    /// Start the view reader and the command producer. Blocking (registry, metadata): call it
    /// from a blocking context. `clock` is the wall clock of block states and command times.
    pub fn start(cfg: &Config, metrics: Metrics, clock: Arc<dyn Clock>) -> Result<Api, ApiError> {
        let codec = wiring::codec_for(
            cfg,
            &[(cfg.topics.commands.as_str(), RecordType::AdminCommand)],
        )?;
        let store = view::store::ViewStore::open_empty(&cfg.api.view_dir(&cfg.state))?;
        let view: view::SharedView = Arc::new(view::View::new(store, cfg.api.view_retention_ms));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = view::spawn(
            cfg,
            codec.clone(),
            view.clone(),
            stop.clone(),
            (metrics.clone(), clock.clone()),
        )?;
        // A command not acknowledged in time is given up on after a bound, so the caller told
        // "it may still land" learns the outcome within it (handlers::COMMAND_DELIVERY_TIMEOUT).
        let producer: FutureProducer = client::plain_producer(&cfg.kafka, "api-commands")
            .set(
                "message.timeout.ms",
                handlers::COMMAND_DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(KafkaError::Client)?;
        Ok(Api {
            inner: Arc::new(Inner {
                auth: auth::Authenticator::new(&cfg.api.tokens),
                view,
                codec,
                producer,
                commands_topic: cfg.topics.commands.clone(),
                policy: cfg.policy.clone(),
                tenant_defaults: cfg.tenant_defaults.to_settings(),
                metrics,
                clock,
                limits: cfg.limits.clone(),
                sessions: console::session::Sessions::default(),
                stop,
                reader: std::sync::Mutex::new(Some(reader)),
            }),
        })
    }

    /// Whether the view has read every topic to its end once.
    pub fn caught_up(&self) -> bool {
        self.inner.view.data.read().expect("view lock").caught_up
    }

    /// Stop the view reader and wait for it.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let reader = self.inner.reader.lock().expect("reader lock").take();
        if let Some(r) = reader {
            let _ = r.thread.join();
        }
    }

    /// The `/v1` router and the console's `/ui`.
    pub fn router(&self) -> axum::Router {
        handlers::router(self.clone()).merge(console::router(self.clone()))
    }
}
