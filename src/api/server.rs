//! The accept loop ([`run`]): connections within [`MAX_CONNECTIONS`] (a 429 past it),
//! hyper's HTTP/1 with the header timeout, each socket in a [`StallGuard`] that closes a
//! connection whose client takes nothing of an answer for `write_stall_timeout_ms`, and a
//! graceful shutdown that lets every connection finish.

// The API's files share its imports, state and errors.
use super::*;

/// Time a connection may take nothing of what the server writes to it: past it the
/// connection is closed. A reader that reads slowly makes progress and is never cut off;
/// one that reads nothing would otherwise hold its answer's memory (and a share of the
/// response budget others wait for) for as long as it stays connected.
pub const WRITE_STALL_TIMEOUT_MS: u64 = 60_000;

/// A connection's socket, closed with `TimedOut` once a write has been pending (the
/// client taking nothing) for longer than its limit. Reads pass through.
pub(super) struct StallGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(inner: T, limit: Duration) -> StallGuard<T> {
        StallGuard { inner, limit, stalled: None }
    }

    /// After a write or flush returned `poll`: pending starts the timer (once), and a
    /// timer that ran out turns pending into an error; only bytes taken (`progress`) clear
    /// it. (A socket's flush is always ready at once, so it must not count as progress,
    /// or a connection woken by its own timer would start it again for ever.)
    fn watch<R>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<R>>,
        progress: impl Fn(&R) -> bool,
    ) -> std::task::Poll<std::io::Result<R>> {
        use std::task::Poll;
        match poll {
            Poll::Pending => {
                let limit = self.limit;
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client took nothing of the answer for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(Ok(r)) => {
                if progress(&r) {
                    self.stalled = None;
                }
                Poll::Ready(Ok(r))
            }
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll, |_| false)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (their appends complete and are answered) before returning.
///
/// Each connection has [`Limits::header_read_timeout_ms`] to send its headers; past
/// [`Limits::max_connections`] open connections a new one gets a 429 and is closed.
pub async fn run(listener: TcpListener, state: Arc<AppState>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use std::sync::atomic::Ordering;

    let limits = state.limits;
    let metrics = state.metrics.clone();
    let stopping = state.stopping.clone();
    let sampler = tokio::spawn(live::sample_every_second(state.clone()));
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connections_refused_total.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut close = close_rx.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _permit = permit;
            metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_millis(limits.header_read_timeout_ms))
                .serve_connection(TokioIo::new(StallGuard::new(stream, Duration::from_millis(limits.write_stall_timeout_ms))), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async {
                    loop {
                        if *close.borrow_and_update() {
                            break;
                        }
                        if close.changed().await.is_err() {
                            break;
                        }
                    }
                } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    sampler.abort();
    stopping.send_replace(true);
    let _ = close_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Answers a connection over the limit with a 429 (with `Retry-After`) and closes it,
/// without waiting long. 429 rather than 503: whoever opens the connection past the limit
/// is, at that moment, the client asking for too much, and clients back off on either.
pub(super) async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let body = format!("{{\"error\":\"too many connections (limit {limit}); retry shortly\"}}");
    let resp = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(resp.as_bytes())).await;
}
