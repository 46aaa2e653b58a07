//! The egress proxy: an HTTP proxy on the sandbox's own loopback
//! (`127.0.0.1:EGRESS_PROXY_PORT`). It decides nothing: each connection asks
//! brig-api (`Dial`), which checks the session's allow-list, resolves, dials and
//! answers; the bytes then travel as tunnel frames over the channel, credit-
//! bounded each way ([`TUNNEL_WINDOW`]), so one slow connection holds up nobody.
//!
//! Understood: `CONNECT host:port` (TLS and anything else) and plain-HTTP
//! requests in absolute form (`GET http://host/path`), which are forwarded in
//! origin form with `Connection: close` (one request per connection, so a
//! connection never changes host). Everything runs on one thread with poll(2).

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brig_protocol::{Frame, EGRESS_PROXY_PORT, MAX_TUNNEL_CHUNK, TUNNEL_WINDOW};

use crate::serve::FrameWriter;
use crate::sys::{self, PollFd};

/// Most connections the proxy holds at once; more are answered 503.
const MAX_CONNECTIONS: usize = 64;

/// Largest request head the proxy reads.
const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head.
const HEAD_WAIT: Duration = Duration::from_secs(10);

/// How long brig-api may take to decide and dial.
const DIAL_WAIT: Duration = Duration::from_secs(20);

/// How long a refused client may take to read its answer.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// After the client's end of file, how long the tunnel waits for upstream
/// bytes before it closes: a half-close (a request sent, the answer still
/// coming) keeps working while the answer flows, and a killed command's
/// connections do not hold the sandbox's connection cap until brig-api's
/// idle limit.
const FIN_WAIT: Duration = Duration::from_secs(5);

/// What brig-api sent about a tunnel.
pub enum FromApi {
    Reply {
        id: u32,
        refusal: Option<String>,
    },
    Data {
        id: u32,
        data: Vec<u8>,
    },
    Credit {
        id: u32,
        bytes: u32,
    },
    Shut {
        id: u32,
    },
    Close {
        id: u32,
    },
    /// brig-api does not know tunnel frames (an older build).
    Unsupported {
        id: u32,
    },
    /// A new client greeted the agent: the old one's tunnels are gone.
    Reset,
}

/// Handle to the proxy thread.
pub struct Egress {
    incoming: Mutex<Vec<FromApi>>,
    wake: OwnedFd,
}

impl Egress {
    /// Binds the proxy and starts its thread.
    pub fn start(writer: Arc<FrameWriter>) -> io::Result<Arc<Egress>> {
        let listener = TcpListener::bind(("127.0.0.1", EGRESS_PROXY_PORT))?;
        listener.set_nonblocking(true)?;
        let egress = Arc::new(Egress {
            incoming: Mutex::new(Vec::new()),
            wake: sys::eventfd()?,
        });
        let handle = Arc::clone(&egress);
        std::thread::Builder::new().name("egress".into()).spawn(move || {
            let mut proxy = Proxy {
                listener,
                writer,
                conns: HashMap::new(),
                next_id: 1,
            };
            proxy.run_forever(&handle);
        })?;
        Ok(egress)
    }

    /// Hands a frame from brig-api to the proxy thread.
    pub fn deliver(&self, message: FromApi) {
        self.incoming.lock().unwrap_or_else(|p| p.into_inner()).push(message);
        sys::eventfd_signal(&self.wake);
    }
}

struct Proxy {
    listener: TcpListener,
    writer: Arc<FrameWriter>,
    conns: HashMap<u32, Conn>,
    next_id: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Head(Vec<u8>),
    /// `Dial` sent; waiting for brig-api.
    Dialing,
    Open,
    /// Writing the proxy's own answer (a refusal), then closing.
    Closing,
    Done,
}

struct Conn {
    sock: TcpStream,
    phase: Phase,
    deadline: Option<Instant>,
    connect: bool,
    /// The proxy's own bytes to the client, written before any of brig-api's.
    reply: Vec<u8>,
    /// Bytes for brig-api once the tunnel opens (a rewritten request head).
    upstream: Vec<u8>,
    /// brig-api's bytes not yet written to the client (at most the window).
    inbound: VecDeque<u8>,
    /// Written to the client, not yet credited back to brig-api.
    uncredited: u32,
    /// Bytes brig-api still accepts from us.
    credit: u32,
    read_eof: bool,
    peer_shut: bool,
    write_shut: bool,
}

impl Proxy {
    fn run_forever(&mut self, egress: &Egress) {
        let mut fds: Vec<PollFd> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        let mut buf = vec![0u8; MAX_TUNNEL_CHUNK];
        loop {
            let now = Instant::now();
            let timeout_ms = self
                .conns
                .values()
                .filter_map(|conn| conn.deadline)
                .min()
                .map_or(-1, |at| at.saturating_duration_since(now).as_millis() as i32 + 1);
            fds.clear();
            ids.clear();
            fds.push(PollFd::readable(egress.wake.as_raw_fd()));
            fds.push(if self.conns.len() < MAX_CONNECTIONS {
                PollFd::readable(self.listener.as_raw_fd())
            } else {
                PollFd::unused()
            });
            for (id, conn) in &self.conns {
                ids.push(*id);
                fds.push(PollFd::interest(
                    conn.sock.as_raw_fd(),
                    conn.wants_read(),
                    conn.wants_write(),
                ));
            }
            if sys::poll(&mut fds, timeout_ms).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if fds[0].ready() {
                sys::eventfd_clear(&egress.wake);
                let messages = std::mem::take(&mut *egress.incoming.lock().unwrap_or_else(|p| p.into_inner()));
                for message in messages {
                    self.on_message(message);
                }
            }
            if fds[1].ready() {
                self.accept();
            }
            for (id, ready) in ids.iter().zip(&fds[2..]) {
                if let Some(conn) = self.conns.get_mut(id) {
                    if ready.can_read() && conn.wants_read() {
                        conn.read(*id, &mut buf, &self.writer);
                    }
                    if ready.can_write() && conn.wants_write() {
                        conn.write(*id, &self.writer);
                    }
                }
            }
            let now = Instant::now();
            let writer = &self.writer;
            for (id, conn) in &mut self.conns {
                conn.settle(*id, now, writer);
            }
            self.conns.retain(|_, conn| conn.phase != Phase::Done);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut conn = Conn::new(sock);
                    if self.conns.len() >= MAX_CONNECTIONS {
                        conn.refuse(503, "too many connections through the egress proxy");
                    }
                    let id = self.fresh_id();
                    self.conns.insert(id, conn);
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock (nothing more), or a connection reset before it
                // was taken, or out of descriptors: try again next round.
                Err(_) => return,
            }
        }
    }

    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn on_message(&mut self, message: FromApi) {
        let writer = &self.writer;
        let (id, conn) = match &message {
            FromApi::Reset => {
                for conn in self.conns.values_mut() {
                    conn.phase = Phase::Done;
                }
                return;
            }
            FromApi::Reply { id, .. }
            | FromApi::Data { id, .. }
            | FromApi::Credit { id, .. }
            | FromApi::Shut { id }
            | FromApi::Close { id }
            | FromApi::Unsupported { id } => (*id, self.conns.get_mut(id)),
        };
        let Some(conn) = conn.filter(|conn| matches!(conn.phase, Phase::Dialing | Phase::Open)) else {
            // A tunnel we no longer have: say so, unless that is what brig-api said.
            if !matches!(message, FromApi::Close { .. } | FromApi::Unsupported { .. }) {
                writer.send(&Frame::Close { id });
            }
            return;
        };
        match message {
            FromApi::Reply { refusal: None, .. } if conn.phase == Phase::Dialing => {
                conn.phase = Phase::Open;
                conn.deadline = None;
                conn.credit = TUNNEL_WINDOW;
                if conn.connect {
                    conn.reply
                        .extend_from_slice(b"HTTP/1.1 200 Connection established\r\n\r\n");
                }
                let upstream = std::mem::take(&mut conn.upstream);
                for chunk in upstream.chunks(MAX_TUNNEL_CHUNK) {
                    conn.credit = conn.credit.saturating_sub(chunk.len() as u32);
                    writer.send(&Frame::Data {
                        id,
                        data: chunk.to_vec(),
                    });
                }
            }
            FromApi::Reply {
                refusal: Some(reason), ..
            } if conn.phase == Phase::Dialing => conn.refuse(403, &reason),
            FromApi::Unsupported { .. } if conn.phase == Phase::Dialing => {
                conn.refuse(502, "this brig-api does not support egress")
            }
            FromApi::Data { data, .. } if conn.phase == Phase::Open && !conn.peer_shut => {
                if conn.read_eof {
                    conn.deadline = Some(Instant::now() + FIN_WAIT);
                }
                if conn.inbound.len() + data.len() > TUNNEL_WINDOW as usize {
                    // brig-api sent past the credit we gave: drop the tunnel.
                    writer.send(&Frame::Close { id });
                    conn.phase = Phase::Done;
                } else {
                    conn.inbound.extend(data);
                }
            }
            FromApi::Credit { bytes, .. } => conn.credit = conn.credit.saturating_add(bytes).min(TUNNEL_WINDOW),
            FromApi::Shut { .. } => conn.peer_shut = true,
            FromApi::Close { .. } => conn.phase = Phase::Done,
            // Out of order for the tunnel's phase: drop it.
            _ => {
                writer.send(&Frame::Close { id });
                conn.phase = Phase::Done;
            }
        }
    }
}

impl Conn {
    fn new(sock: TcpStream) -> Self {
        Conn {
            sock,
            phase: Phase::Head(Vec::new()),
            deadline: Some(Instant::now() + HEAD_WAIT),
            connect: false,
            reply: Vec::new(),
            upstream: Vec::new(),
            inbound: VecDeque::new(),
            uncredited: 0,
            credit: 0,
            read_eof: false,
            peer_shut: false,
            write_shut: false,
        }
    }

    fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Head(_) => true,
            Phase::Open => self.credit > 0 && !self.read_eof,
            _ => false,
        }
    }

    fn wants_write(&self) -> bool {
        !self.reply.is_empty() || (self.phase == Phase::Open && !self.inbound.is_empty())
    }

    /// Answers the client with `status` and a one-line reason, then closes.
    fn refuse(&mut self, status: u16, reason: &str) {
        self.reply = refusal(status, reason);
        self.phase = Phase::Closing;
        self.deadline = Some(Instant::now() + CLOSE_WAIT);
    }

    fn read(&mut self, id: u32, buf: &mut [u8], writer: &FrameWriter) {
        if let Phase::Head(head) = &mut self.phase {
            let room = MAX_HEAD - head.len();
            match self.sock.read(&mut buf[..room]) {
                Ok(0) => self.phase = Phase::Done,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    match parse_head(head) {
                        Ok(None) if head.len() >= MAX_HEAD => self.refuse(431, "request head too large"),
                        Ok(None) => {}
                        Ok(Some(request)) => {
                            writer.send(&Frame::Dial {
                                id,
                                host: request.host,
                                port: request.port,
                            });
                            self.connect = request.connect;
                            self.upstream = request.upstream;
                            self.phase = Phase::Dialing;
                            self.deadline = Some(Instant::now() + DIAL_WAIT);
                        }
                        Err((status, reason)) => self.refuse(status, reason),
                    }
                }
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => self.phase = Phase::Done,
            }
            return;
        }
        let room = (self.credit as usize).min(buf.len());
        match self.sock.read(&mut buf[..room]) {
            Ok(0) => {
                self.read_eof = true;
                self.deadline = Some(Instant::now() + FIN_WAIT);
                writer.send(&Frame::Shut { id });
            }
            Ok(n) => {
                self.credit -= n as u32;
                writer.send(&Frame::Data {
                    id,
                    data: buf[..n].to_vec(),
                });
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.drop_tunnel(id, writer),
        }
    }

    fn write(&mut self, id: u32, writer: &FrameWriter) {
        while !self.reply.is_empty() {
            match self.sock.write(&self.reply) {
                Ok(n) => {
                    self.reply.drain(..n);
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.drop_tunnel(id, writer),
            }
        }
        if self.phase != Phase::Open {
            return;
        }
        while !self.inbound.is_empty() {
            let (front, _) = self.inbound.as_slices();
            match self.sock.write(front) {
                Ok(n) => {
                    self.inbound.drain(..n);
                    self.uncredited += n as u32;
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.drop_tunnel(id, writer),
            }
        }
        // Credit in batches, but never leave brig-api waiting on an empty buffer.
        if self.uncredited >= TUNNEL_WINDOW / 4 || (self.inbound.is_empty() && self.uncredited > 0) {
            writer.send(&Frame::Credit {
                id,
                bytes: self.uncredited,
            });
            self.uncredited = 0;
        }
    }

    /// After this round's events: deadlines, half-closes, the end.
    fn settle(&mut self, id: u32, now: Instant, writer: &FrameWriter) {
        if self.deadline.is_some_and(|at| now >= at) {
            match self.phase {
                Phase::Head(_) => self.refuse(408, "no complete request head in time"),
                Phase::Dialing => {
                    writer.send(&Frame::Close { id });
                    self.refuse(504, "brig-api did not answer in time");
                }
                // The client's end of file, and nothing more from upstream.
                Phase::Open => {
                    writer.send(&Frame::Close { id });
                    self.phase = Phase::Done;
                }
                _ => self.phase = Phase::Done,
            }
        }
        match self.phase {
            Phase::Closing if self.reply.is_empty() => {
                let _ = self.sock.shutdown(Shutdown::Both);
                self.phase = Phase::Done;
            }
            Phase::Open => {
                if self.peer_shut && self.inbound.is_empty() && self.reply.is_empty() && !self.write_shut {
                    let _ = self.sock.shutdown(Shutdown::Write);
                    self.write_shut = true;
                }
                if self.read_eof && self.write_shut {
                    writer.send(&Frame::Close { id });
                    self.phase = Phase::Done;
                }
            }
            _ => {}
        }
    }

    /// The client's side failed: tell brig-api, forget the tunnel.
    fn drop_tunnel(&mut self, id: u32, writer: &FrameWriter) {
        if matches!(self.phase, Phase::Dialing | Phase::Open) {
            writer.send(&Frame::Close { id });
        }
        self.phase = Phase::Done;
    }
}

/// The proxy's own answer: `status` with a one-line plain-text reason.
fn refusal(status: u16, reason: &str) -> Vec<u8> {
    let text = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Gateway Timeout",
    };
    let line: String = reason.chars().filter(|c| !c.is_control()).take(300).collect();
    let body = format!("brig egress: {line}\n");
    format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request the proxy understood.
#[derive(Debug, PartialEq, Eq)]
struct ProxyRequest {
    host: String,
    port: u16,
    connect: bool,
    /// What to send upstream once the tunnel is open.
    upstream: Vec<u8>,
}

type Refusal = (u16, &'static str);

/// Parses a request head: `Ok(None)` until it is complete.
fn parse_head(bytes: &[u8]) -> Result<Option<ProxyRequest>, Refusal> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| (400, "request head is not UTF-8"))?;
    let rest = &bytes[end + 4..];
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !version.starts_with("HTTP/1.") {
        return Err((400, "malformed request line"));
    }
    if method == "CONNECT" {
        let (host, port) = split_authority(target, None)?;
        return Ok(Some(ProxyRequest {
            host,
            port,
            connect: true,
            upstream: rest.to_vec(),
        }));
    }
    let Some(after_scheme) = strip_prefix_ignore_case(target, "http://") else {
        return Err(if strip_prefix_ignore_case(target, "https://").is_some() {
            (400, "use CONNECT for https:// (set HTTPS_PROXY)")
        } else {
            (
                400,
                "only CONNECT and absolute http:// requests go through the egress proxy",
            )
        });
    };
    let split = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (authority, path) = after_scheme.split_at(split);
    let (host, port) = split_authority(authority, Some(80))?;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut upstream = format!("{method} {path} {version}\r\n");
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        let hop_by_hop = ["proxy-connection", "proxy-authorization", "connection", "keep-alive"]
            .iter()
            .any(|hop| name.eq_ignore_ascii_case(hop));
        if !hop_by_hop {
            upstream.push_str(line);
            upstream.push_str("\r\n");
        }
    }
    upstream.push_str("Connection: close\r\n\r\n");
    let mut upstream = upstream.into_bytes();
    upstream.extend_from_slice(rest);
    Ok(Some(ProxyRequest {
        host,
        port,
        connect: false,
        upstream,
    }))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `host:port` or `[v6]:port` (`default` when the port may be left out).
fn split_authority(authority: &str, default: Option<u16>) -> Result<(String, u16), Refusal> {
    const BAD: Refusal = (400, "malformed host or port");
    if authority.contains('@') {
        return Err((400, "credentials in the proxy target are not accepted"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(BAD)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(BAD),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse::<u16>().map_err(|_| BAD)?,
        None => default.ok_or((400, "CONNECT needs host:port"))?,
    };
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || host.len() > brig_protocol::MAX_DIAL_HOST || !host.chars().all(fine) {
        return Err(BAD);
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_names_the_host_and_keeps_what_follows_the_head() {
        let parsed = parse_head(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n\x16\x03").unwrap();
        assert_eq!(
            parsed,
            Some(ProxyRequest {
                host: "pypi.org".into(),
                port: 443,
                connect: true,
                upstream: b"\x16\x03".to_vec(),
            })
        );
        let v6 = parse_head(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::1", 8443));
    }

    #[test]
    fn an_absolute_request_goes_upstream_in_origin_form_with_connection_close() {
        let head = b"GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\
                     Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\nbody";
        let parsed = parse_head(head).unwrap().unwrap();
        assert_eq!(
            (parsed.host.as_str(), parsed.port, parsed.connect),
            ("example.com", 8080, false)
        );
        assert_eq!(
            String::from_utf8(parsed.upstream).unwrap(),
            "GET /a/b?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nAccept: */*\r\nConnection: close\r\n\r\nbody"
        );
        let bare = parse_head(b"HEAD http://example.com HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(bare.port, 80);
        assert!(bare.upstream.starts_with(b"HEAD / HTTP/1.0\r\n"));
    }

    #[test]
    fn an_incomplete_head_waits_and_a_bad_one_is_refused_with_a_reason() {
        assert_eq!(parse_head(b"CONNECT a:1 HTTP/1.1\r\n"), Ok(None));
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
            b"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT ex%41.com:443 HTTP/1.1\r\n\r\n",
            b"get http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://:80/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ SPDY/3\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            let refused = parse_head(bad);
            assert!(
                matches!(refused, Err((400, _))),
                "{:?} gave {refused:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_refusal_is_one_line_of_plain_text() {
        let answer = String::from_utf8(refusal(403, "example.com is not in\r\nthe allow-list")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(answer.ends_with("\r\n\r\nbrig egress: example.com is not inthe allow-list\n"));
    }
}
