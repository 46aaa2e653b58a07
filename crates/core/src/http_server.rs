//! The HTTP/1.1 server under brig-api's router and both binaries' metrics
//! port, with the bounds of
//! [`HttpConfig`] (red team H2, H4): a client gets `HTTP_HEADER_TIMEOUT_SECONDS`
//! to send its headers (and the same to send the next request on a kept-alive
//! connection), and a connection whose answer has waited
//! `HTTP_WRITE_TIMEOUT_SECONDS` for the client to read is dropped. At most
//! `MAX_CONNECTIONS` are served at once (the rest wait in the listen backlog,
//! so file descriptors never run out) and one source address may hold
//! `MAX_CONNECTIONS_PER_IP` of them (more are closed at once).
//!
//! Streams stay within these rules: SSE sends a heartbeat well inside the
//! write timeout, and the timeout counts only time in which the client reads
//! nothing, never time in which brig has nothing to send.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::config::HttpConfig;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `app` on `listener` until `signal`, then stops accepting and waits
/// for the open connections: idle ones close at once, busy ones after their
/// answer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpConfig,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::new(limits.max_connections_per_ip));
    // Connections finish their requests on shutdown (hyper-util's graceful
    // watcher does not take upgradeable connections).
    let (stopping, connections) = (CancellationToken::new(), TaskTracker::new());
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut signal => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let (stream, peer, slot) = accepted;
        let Some(address) = per_ip.admit(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "closing a connection: MAX_CONNECTIONS_PER_IP reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
        // Handlers see where the connection came from (failed logins are
        // limited per source address).
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: axum::extract::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        // Upgrades: WebSocket attaches (`/executions/{id}/attach`).
        let connection = http.serve_connection(io, service).with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection closed");
            }
            drop((slot, address));
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The next connection, once a slot is free. Accept errors (a client gone
/// before it was accepted, descriptors exhausted) never stop the server.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit) {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, slot),
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The source a client's address is counted as: an IPv4 address as itself
/// (also when mapped into IPv6), an IPv6 address as its /64, which one
/// subscriber usually holds whole (so rotating addresses inside it gains
/// nothing).
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
        v4 => v4,
    }
}

/// Connections per source ([`source`]).
struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`], given back on drop.
struct Address {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more connection from `ip` (counted by its
    /// [`source`]); `None` at the limit.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Address> {
        let ip = source(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if self.limit > 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Address {
            table: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Address {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A socket whose writes fail once the peer has read nothing for `timeout`
/// while brig had something to send: the connection, and the answer it
/// holds, are then dropped.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write could not proceed; disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// What a write that returned `poll` means under the deadline.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for HTTP_WRITE_TIMEOUT_SECONDS",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn per_ip_places_are_bounded_and_given_back() {
        let table = Arc::new(PerIp::new(2));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.admit(ip).unwrap();
        let _second = table.admit(ip).unwrap();
        assert!(table.admit(ip).is_none());
        assert!(table.admit(other).is_some(), "another address is not affected");
        drop(first);
        assert!(table.admit(ip).is_some());
        // Addresses of one IPv6 /64 are one source; the next /64 is another.
        let v6 = |text: &str| text.parse::<IpAddr>().unwrap();
        let places: Vec<_> = (1..=2)
            .map(|i| table.admit(v6(&format!("2001:db8:1:2::{i:x}"))).unwrap())
            .collect();
        assert!(table.admit(v6("2001:db8:1:2:ffff:ffff:ffff:ffff")).is_none());
        assert!(table.admit(v6("2001:db8:1:3::1")).is_some());
        drop(places);
        // An IPv4 address mapped into IPv6 is the IPv4 address.
        let mapped = table.admit(v6("::ffff:192.0.2.1")).unwrap();
        assert!(table.admit(ip).is_none(), "a mapped address counted apart");
        drop(mapped);
        let unlimited = Arc::new(PerIp::new(0));
        let held: Vec<_> = (0..1000).map(|_| unlimited.admit(ip).unwrap()).collect();
        drop(held);
        assert!(
            unlimited.open.lock().unwrap().is_empty(),
            "no entry outlives its connections"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_that_is_not_read_fails_after_the_timeout_only() {
        // A pipe with a 64-byte buffer that nobody drains.
        let (near, _far) = tokio::io::duplex(64);
        let mut writer = WriteDeadline::new(near, Duration::from_secs(5));
        writer.write_all(&[0; 64]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = writer.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_keeps_its_connection() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut total = 0;
            while total < 640 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += far.read(&mut buf).await.unwrap();
            }
            total
        });
        let mut writer = WriteDeadline::new(near, Duration::from_secs(5));
        writer.write_all(&[0; 640]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 640);
    }
}
