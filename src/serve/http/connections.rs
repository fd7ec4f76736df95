//! The serving loop of `caprepo serve`: it accepts TCP connections and runs HTTP/1.1
//! on each with hyper, within bounds that one client, or many, cannot push past.
//!
//! - **How many.** At most `max_connections` are served at once, fewer than the
//!   process may open files, so store files, spool files and the agent socket always
//!   have descriptors left. When a new connection arrives at the limit, the connection
//!   that has been idle longest (no request in progress) is closed to make room, so
//!   `/healthz` and uploads get through however many idle connections are held open.
//!   When every connection is in the middle of a request, the new one waits, in the
//!   kernel's accept queue, until one finishes or goes idle.
//! - **How long without a request.** A new connection must send a whole request head
//!   within `header_timeout`; a kept-alive one, within at most twice that from the first
//!   byte of its next request (slowloris). A kept-alive connection that sends nothing is closed after
//!   `idle_timeout`. hyper's own `header_read_timeout` cannot say this: it runs from the
//!   moment hyper waits for a head, so it would also be the keep-alive timeout.
//! - **How long a request body may stall.** A handler waiting more than `body_timeout`
//!   for the next bytes of a request body gets an error instead (an upload answers 400
//!   and removes its spool file), and the connection is closed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// The bounds of the serving loop (from `[server]` in caprepo.toml).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// Largest request head (request line and headers): apt's and dnf's are under 1 KiB and a
/// cap in a header under 9 KiB. hyper would otherwise buffer up to ~400 KiB per connection.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long shutdown waits for requests in progress before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// "No time": an atomic stamp that is not set.
const UNSET: u64 = u64::MAX;

/// Serve `router` on `listener` until `shutdown` completes, then let requests in
/// progress finish (for up to [`SHUTDOWN_GRACE`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let table = Arc::new(Table::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let (stop, stopping) = watch::channel(false);
    let clients = Arc::new(super::pinning::ClientMemory::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: the connection stays queued in the kernel; try again shortly.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = tokio::select! {
            slot = admit(&table, &slots) => slot,
            _ = &mut shutdown => break,
        };
        // Without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK hold back the last
        // segment of every response (see BENCHMARKS.md "Measurements behind the code").
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let connection = table.open();
        let router = router.clone();
        let limits = Arc::clone(&limits);
        let stopping = stopping.clone();
        let clients = Arc::clone(&clients);
        tokio::spawn(async move {
            run(
                stream,
                Arc::clone(&connection),
                router,
                &limits,
                stopping,
                clients,
            )
            .await;
            connection.table.close(&connection);
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in progress after {SHUTDOWN_GRACE:?} of shutdown; stopping anyway"
        );
    }
}

/// A connection slot: one is free, or the longest-idle connection is closed to free one.
async fn admit(table: &Table, slots: &Arc<Semaphore>) -> tokio::sync::OwnedSemaphorePermit {
    loop {
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            return slot;
        }
        let evicted = table.evict_longest_idle();
        tokio::select! {
            slot = Arc::clone(slots).acquire_owned() => match slot {
                Ok(slot) => return slot,
                // The semaphore is never closed; should it be, serve without a slot rather than spin.
                Err(_) => std::future::pending::<()>().await,
            },
            // Nothing was idle, or the closed connection had just started a request: look again.
            _ = tokio::time::sleep(Duration::from_millis(if evicted { 200 } else { 50 })) => {}
        }
    }
}

/// Every open connection.
struct Table {
    /// Times are kept as milliseconds since this instant, so they fit in atomics.
    epoch: Instant,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
}

impl Table {
    fn new() -> Table {
        Table {
            epoch: Instant::now(),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // A panic while holding this lock leaves only bookkeeping behind: keep serving.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(self: &Arc<Self>) -> Arc<Connection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id,
            table: Arc::clone(self),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            head_started: AtomicU64::new(UNSET),
            served: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&connection));
        connection
    }

    fn close(&self, connection: &Connection) {
        self.lock().remove(&connection.id);
    }

    /// Ask the connection idle the longest to close; false if none is idle. This scans
    /// every connection, but only when a new one finds the server full: the request
    /// path itself takes no lock.
    fn evict_longest_idle(&self) -> bool {
        let open = self.lock();
        let longest = open
            .values()
            .filter(|c| c.is_idle() && !c.evicted.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        let Some(connection) = longest else {
            return false;
        };
        connection.evicted.store(true, Ordering::Relaxed);
        connection.wake.notify_one();
        tracing::debug!(
            idle_ms = self
                .now()
                .saturating_sub(connection.idle_since.load(Ordering::Relaxed)),
            "at the connection limit: closing the longest-idle connection"
        );
        true
    }
}

/// One connection's state, shared by its task, its socket and its requests.
struct Connection {
    id: u64,
    table: Arc<Table>,
    /// Requests whose response is not yet completely handed to hyper.
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened); UNSET while busy.
    idle_since: AtomicU64,
    /// The first byte received while idle: the next request head has begun.
    head_started: AtomicU64,
    /// Requests answered so far.
    served: AtomicU64,
    /// The client is not taking what we write: a response tail may sit in hyper's buffer.
    write_blocked: AtomicBool,
    evicted: AtomicBool,
    /// The task should look at the state again.
    wake: Notify,
}

impl Connection {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && !self.write_blocked.load(Ordering::Relaxed)
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.idle_since.store(UNSET, Ordering::Relaxed);
            self.head_started.store(UNSET, Ordering::Relaxed);
        }
        RequestGuard(Arc::clone(self))
    }

    fn end_request(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.table.now(), Ordering::Relaxed);
        }
    }

    /// When to look at the connection again, or None if it must close now. Requests
    /// starting and ending do not wake the connection's task (that would cost a wake-up
    /// and a timer per request); the task looks again at the next deadline instead, and
    /// at least every `header_timeout` while idle, so a kept-alive connection whose next
    /// request head has begun is cut within twice the header timeout.
    fn next_check(&self, limits: &ConnectionLimits, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) != 0 {
            // A request may take as long as it needs; its body has its own timeout.
            return Some(now + limits.idle_timeout);
        }
        let since = self.idle_since.load(Ordering::Relaxed);
        let head = self.head_started.load(Ordering::Relaxed);
        let header = limits.header_timeout.as_millis() as u64;
        let deadline = if self.served.load(Ordering::Relaxed) == 0 {
            // A new connection owes us a whole request head straight away.
            since + header
        } else if head != UNSET {
            head + header
        } else {
            since + limits.idle_timeout.as_millis() as u64
        };
        let deadline = self.table.epoch + Duration::from_millis(deadline);
        (deadline > now).then(|| deadline.min(now + limits.header_timeout))
    }
}

/// Marks a request in progress until its response body has been sent (or dropped).
struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Run HTTP/1.1 on one connection until it ends, is timed out, evicted, or the server stops.
async fn run(
    stream: TcpStream,
    connection: Arc<Connection>,
    router: Router,
    limits: &ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
    clients: Arc<super::pinning::ClientMemory>,
) {
    let address = stream
        .peer_addr()
        .map(|peer| peer.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let io = TokioIo::new(Metered {
        stream,
        connection: Arc::clone(&connection),
    });
    let body_timeout = limits.body_timeout;
    let service_connection = Arc::clone(&connection);
    // What this connection and this client were served of signed files, so a signature
    // fetched after a publish matches the file fetched before it (see `super::pinning`).
    let memory = super::pinning::ConnectionMemory::default();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let guard = service_connection.begin_request();
        let mut router = router.clone();
        let user_agent = request
            .headers()
            .get(hyper::header::USER_AGENT)
            .map(|agent| agent.as_bytes())
            .unwrap_or_default();
        let requester = super::pinning::Requester::new(
            memory.clone(),
            Arc::clone(&clients),
            address,
            user_agent,
        );
        request.extensions_mut().insert(requester);
        async move {
            let request = request.map(|body| TimedBody::new(body, body_timeout));
            let response = tower_service::Service::call(&mut router, request).await?;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_header_size(MAX_HEADER_BYTES);
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    let mut shutting_down = false;
    let first_check = connection
        .next_check(limits, Instant::now())
        .unwrap_or_else(Instant::now);
    let check = tokio::time::sleep_until(first_check);
    tokio::pin!(check);
    loop {
        tokio::select! {
            result = http.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = connection.wake.notified(), if !shutting_down => {
                if connection.is_idle() {
                    return;
                }
                // A request started in the meantime: finish it, then close.
                http.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = &mut check => match connection.next_check(limits, Instant::now()) {
                Some(at) => check.as_mut().reset(at),
                None => {
                    tracing::debug!(
                        served = connection.served.load(Ordering::Relaxed),
                        "closing a connection: no whole request within its header or idle timeout"
                    );
                    return;
                }
            },
            _ = stopping.changed(), if !shutting_down => {
                if connection.is_idle() {
                    return;
                }
                http.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// The TCP stream, noting what the connection's deadlines need: the first byte of a
/// request head, and a client that does not take what we write.
struct Metered {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let connection = &self.connection;
            if connection.in_flight.load(Ordering::Relaxed) == 0
                && connection.head_started.load(Ordering::Relaxed) == UNSET
            {
                connection
                    .head_started
                    .store(connection.table.now(), Ordering::Relaxed);
            }
        }
        result
    }
}

impl Metered {
    fn note_write<T>(&self, result: &Poll<std::io::Result<T>>) {
        let blocked = result.is_pending();
        if self
            .connection
            .write_blocked
            .swap(blocked, Ordering::Relaxed)
            != blocked
        {
            self.connection.wake.notify_one();
        }
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note_write(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note_write(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that fails when the client sends nothing for `timeout` while a
/// handler waits for it.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            timeout,
            stalled: None,
            failed: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing for {0:?} (server.body_timeout_secs)")]
struct BodyStalled(Duration);

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.stalled = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stalled.as_mut().poll(cx).is_ready() {
                    self.failed = true;
                    return Poll::Ready(Some(Err(BodyStalled(timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in progress until it is sent.
struct Tracked {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
