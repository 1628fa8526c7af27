//! HTTP adapter: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz` (readiness),
//! and, when `api.enabled`, the admin and query API under `/v1` and its console under `/ui`
//! ([`crate::api`]).
//!
//! Kept separate from the pipeline: the API is one more router here, not a change to the
//! processing loop. Health and metrics answer without credentials; everything under `/v1`
//! requires a bearer token, everything under `/ui` but its sign-in page and stylesheet a session.
//!
//! The port is open to whoever reaches it, so every count and wait of the server is bounded
//! ([`Limits`]): connections, the time a request's headers may take, the request head's size,
//! `/v1` and `/ui` requests in progress (beyond it 503 at once, so a flood of API calls never queues in
//! front of `/healthz` and `/metrics`), and the graceful shutdown. Request bodies are read only by
//! the handler that needs one, after authenticating (`api::handlers`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::api::Api;
use crate::telemetry::{Health, Metrics};

/// The bounds of the HTTP server (README, "HTTP limits"; DESIGN §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once. The next one waits in the listen backlog until one closes (a
    /// stalled one closes within `header_read_timeout`). Sized below the default open-files
    /// limit of 1024 with room for RocksDB's files and the Kafka clients' sockets.
    pub max_connections: usize,
    /// `/v1` requests in progress at once; beyond it 503 with `Retry-After`, without waiting.
    /// Health and metrics are not counted.
    pub max_api_in_flight: usize,
    /// A request's start line and headers must arrive within this, and so must the next request
    /// on an idle keep-alive connection; otherwise the connection is closed.
    pub header_read_timeout: Duration,
    /// The connection's read buffer, which bounds a request head (hyper answers 431 beyond it).
    pub max_buf: usize,
    /// How long a shutdown waits for requests in progress; then their connections are closed.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_api_in_flight: 64,
            header_read_timeout: Duration::from_secs(5),
            max_buf: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// The router, separate from serving so tests can drive it without a socket. `/v1` (when
/// `api` is given) is behind the concurrency limit; health and metrics are not.
pub fn router(metrics: Metrics, health: Health, api: Option<&Api>, limits: &Limits) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics: metrics.clone(),
            health,
        });
    match api {
        Some(api) => base.merge(shed_beyond(api.router(), limits.max_api_in_flight, metrics)),
        None => base,
    }
}

/// `routes` with at most `limit` requests in progress; any request beyond it is answered 503
/// with `Retry-After` at once (load shedding: waiting would hold its connection and memory, and
/// a caller retries sooner than a queue would drain), and counted in
/// `mailguard_http_requests_shed_total`.
fn shed_beyond(routes: Router, limit: usize, metrics: Metrics) -> Router {
    let in_flight = Arc::new(Semaphore::new(limit));
    routes.route_layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let permit = in_flight.clone().try_acquire_owned();
            let metrics = metrics.clone();
            async move {
                match permit {
                    Ok(_held) => next.run(req).await,
                    Err(_) => {
                        metrics.http_request_shed();
                        crate::api::handlers::unavailable("too many API requests in progress")
                    }
                }
            }
        },
    ))
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    // Readiness is sampled at scrape time, so `mailguard_ready` is what /readyz says right now.
    s.metrics.observe_health(&s.health);
    s.metrics.http_request("metrics", 200);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    let answer = if s.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "failed\n")
    };
    s.metrics.http_request("healthz", answer.0.as_u16());
    answer
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let answer = if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    };
    s.metrics.http_request("readyz", answer.0.as_u16());
    answer
}

/// Bind `listen` and return the bound address (port 0 picks a free one) and the serving future,
/// within the default [`Limits`]. The future ends when `shutdown` has completed and the
/// connections are closed (within `Limits::shutdown_grace`); failures to accept are retried, so
/// it never fails once bound.
pub async fn bind(
    listen: &str,
    metrics: Metrics,
    health: Health,
    api: Option<&Api>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let limits = Limits::default();
    let app = router(metrics.clone(), health, api, &limits);
    Ok((addr, async move {
        serve(listener, app, limits, metrics, shutdown).await;
        Ok(())
    }))
}

/// Serve `app` on `listener` within `limits` until `shutdown` completes; then stop accepting,
/// let requests in progress finish for up to `limits.shutdown_grace`, and close what is left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = accept(&listener, &slots) => match accepted {
                Ok((slot, stream)) => {
                    let conn = http1.serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(app.clone()),
                    );
                    let conn = graceful.watch(conn);
                    let open = Open::new(slot, &metrics);
                    connections.spawn(async move {
                        // A client that stalls, times out or resets ends only its connection.
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "HTTP connection ended");
                        }
                        drop(open);
                    });
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_s = limits.shutdown_grace.as_secs_f64(),
            "HTTP connections still busy after the shutdown grace; closing them"
        );
    }
    connections.shutdown().await;
}

/// A free connection slot, then the next connection.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(OwnedSemaphorePermit, TcpStream)> {
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    let (stream, _) = listener.accept().await?;
    Ok((slot, stream))
}

/// A connection that failed before it was accepted concerns that client only; anything else
/// (out of file descriptors) is said and retried after a pause, as no event announces its end.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::warn!(error = %e, "HTTP accept failed; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An open connection: holds its slot and is counted in `mailguard_http_connections`.
struct Open {
    _slot: OwnedSemaphorePermit,
    metrics: Metrics,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, metrics: &Metrics) -> Open {
        metrics.http_connections_add(1);
        Open {
            _slot: slot,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.http_connections_add(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as Client;
    use std::time::Instant;

    /// `serve` on a runtime of its own; stopped by [`Server::stop`] or on drop.
    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        ended: std::sync::mpsc::Receiver<()>,
    }

    impl Server {
        fn start(app: Router, limits: Limits, metrics: &Metrics) -> Server {
            let (addr_tx, addr_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (ended_tx, ended) = std::sync::mpsc::channel();
            let metrics = metrics.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    serve(listener, app, limits, metrics, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
                let _ = ended_tx.send(());
            });
            Server {
                addr: addr_rx.recv().unwrap(),
                stop: Some(stop),
                ended,
            }
        }

        /// Ask it to stop; whether it ended within `within`.
        fn stop(&mut self, within: Duration) -> bool {
            let _ = self.stop.take().map(|s| s.send(()));
            self.ended.recv_timeout(within).is_ok()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop(Duration::from_secs(30));
        }
    }

    /// `GET path` on a connection of its own; the status and the whole response.
    fn request(addr: SocketAddr, path: &str) -> (u16, String) {
        // Below hyper's default header timeout (30 s), which would otherwise close the stalled
        // connections of a test in time.
        request_waiting(addr, path, Duration::from_secs(10))
    }

    /// [`request`], waiting up to `wait` for the answer.
    fn request_waiting(addr: SocketAddr, path: &str, wait: Duration) -> (u16, String) {
        let mut c = Client::connect(addr).unwrap();
        c.set_read_timeout(Some(wait)).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    }

    /// A connection that has sent half a request head and then nothing.
    fn stalled(addr: SocketAddr) -> Client {
        let mut c = Client::connect(addr).unwrap();
        c.write_all(b"GET /free HTTP/1.1\r\nHo").unwrap();
        c
    }

    /// Whether the server has closed `c` (the header timeout closes without an answer).
    fn closed(c: &Client) -> bool {
        c.set_nonblocking(true).unwrap();
        match c.peek(&mut [0u8; 1]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    fn free() -> Router {
        Router::new().route("/free", get(|| async { "free\n" }))
    }

    /// A route whose requests say they have started and then wait for `release` (or forever).
    fn waiting(
        entered: tokio::sync::mpsc::UnboundedSender<()>,
        release: Arc<tokio::sync::Notify>,
    ) -> axum::routing::MethodRouter {
        get(move || {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                let _ = entered.send(());
                release.notified().await;
                "done\n"
            }
        })
    }

    #[test]
    fn api_requests_beyond_the_limit_are_shed_and_health_still_answers() {
        let metrics = Metrics::new();
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let api = Router::new().route("/v1/slow", waiting(entered_tx, release.clone()));
        let app = free().merge(shed_beyond(api, 1, metrics.clone()));
        let server = Server::start(app, Limits::default(), &metrics);
        let addr = server.addr;
        let first = std::thread::spawn(move || request(addr, "/v1/slow"));
        entered.blocking_recv().unwrap();

        let (status, text) = request(addr, "/v1/slow");
        assert_eq!(status, 503, "{text}");
        assert!(
            text.to_ascii_lowercase().contains("retry-after: 1\r\n"),
            "{text}"
        );
        assert!(text.contains("too many API requests in progress"), "{text}");
        assert!(metrics
            .render()
            .contains("mailguard_http_requests_shed_total 1\n"));
        assert_eq!(request(addr, "/free").0, 200, "outside the limit");

        release.notify_one();
        assert_eq!(first.join().unwrap().0, 200);
        // The slot is free again.
        let again = std::thread::spawn(move || request(addr, "/v1/slow"));
        entered.blocking_recv().unwrap();
        release.notify_one();
        assert_eq!(again.join().unwrap().0, 200);
    }

    #[test]
    fn connections_beyond_the_limit_wait_for_a_stalled_one_to_time_out() {
        let metrics = Metrics::new();
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = Server::start(free(), limits, &metrics);
        let mut stalled = [stalled(server.addr), stalled(server.addr)];
        // Accepted in order: the two stalled connections hold both slots, so this request is
        // answered only once the header timeout has closed one of them.
        let (status, text) = request(server.addr, "/free");
        assert_eq!(status, 200, "{text}");
        let closed_first: Vec<bool> = stalled.iter().map(closed).collect();
        assert!(closed_first.contains(&true), "{closed_first:?}");
        // And the other one is closed by its own timeout too.
        let other = stalled.iter_mut().zip(&closed_first).find(|(_, c)| !**c);
        if let Some((c, _)) = other {
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut rest = Vec::new();
            assert!(c.read_to_end(&mut rest).is_ok(), "closed by the server");
        }
    }

    #[test]
    fn a_request_head_larger_than_the_buffer_is_refused() {
        let metrics = Metrics::new();
        let limits = Limits::default();
        let server = Server::start(free(), limits.clone(), &metrics);
        let mut c = Client::connect(server.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let filler = "x".repeat(limits.max_buf);
        // The server may close before it has read all of it.
        let _ = write!(
            c,
            "GET /free HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n"
        );
        let mut text = String::new();
        let _ = c.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    }

    #[test]
    fn shutdown_closes_busy_and_stalled_connections_after_the_grace() {
        let metrics = Metrics::new();
        let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
        // Never released: the request is in progress for good.
        let app = Router::new().route("/hang", waiting(entered_tx, Arc::default()));
        let limits = Limits {
            shutdown_grace: Duration::from_millis(200),
            header_read_timeout: Duration::from_secs(600),
            ..Limits::default()
        };
        let mut server = Server::start(app, limits, &metrics);
        let addr = server.addr;
        // The client would wait longer than the test does: only the server can end it in time.
        let busy =
            std::thread::spawn(move || request_waiting(addr, "/hang", Duration::from_secs(120)));
        entered.blocking_recv().unwrap();
        let _stalled = stalled(addr);
        let asked = Instant::now();
        assert!(
            server.stop(Duration::from_secs(20)),
            "the server did not end within 20 s of the shutdown"
        );
        eprintln!(
            "shutdown with a busy and a stalled connection: {:?}",
            asked.elapsed()
        );
        assert_eq!(busy.join().unwrap().0, 0, "the busy request got no answer");
        assert!(metrics.render().contains("mailguard_http_connections 0\n"));
    }
}
