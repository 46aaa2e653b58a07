//! Egress tunnels over one sandbox's channel: the agent's proxy asks
//! (`Dial`), the [`EgressDialer`] decides and dials, and the bytes are relayed
//! with credit each way ([`TUNNEL_WINDOW`]), so a slow or silent upstream,
//! or a sandbox that stops reading, holds up only its own tunnel. Tunnel data
//! goes through the channel's bulk queue, which the writer serves after
//! every command frame.
//!
//! The reader task never waits here: frames for a tunnel go to its task
//! through an unbounded queue whose bytes the window bounds (a sandbox that
//! sends past the credit it was given loses the tunnel).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use brig_protocol::{Frame, MAX_TUNNEL_CHUNK, TUNNEL_WINDOW};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::sandbox::egress::{DialOutcome, EgressDialer, TunnelEnd, TunnelLimits};

/// What the sandbox sent for one tunnel.
enum FromSandbox {
    Data(Vec<u8>),
    Shut,
    Close,
}

struct Handle {
    to_task: mpsc::UnboundedSender<FromSandbox>,
    /// Bytes the sandbox may still send us (what we credited, less what came).
    inflight: Arc<AtomicU32>,
    /// Bytes we may still send the sandbox.
    credit: Arc<Semaphore>,
}

/// The tunnels of one channel.
pub(crate) struct Tunnels {
    container: String,
    dialer: Option<Weak<dyn EgressDialer>>,
    control: mpsc::Sender<Vec<u8>>,
    bulk: mpsc::Sender<Vec<u8>>,
    open: Mutex<HashMap<u32, Handle>>,
    count: AtomicUsize,
    bytes: AtomicU64,
}

impl Tunnels {
    pub fn new(
        container: &str,
        dialer: Option<Weak<dyn EgressDialer>>,
        control: mpsc::Sender<Vec<u8>>,
        bulk: mpsc::Sender<Vec<u8>>,
    ) -> Arc<Tunnels> {
        Arc::new(Tunnels {
            container: container.to_string(),
            dialer,
            control,
            bulk,
            open: Mutex::default(),
            count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Handle>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// From the reader task: never waits.
    fn answer_now(&self, frame: Frame) {
        let _ = self.control.try_send(frame.encode());
    }

    /// Routes one tunnel frame from the agent. `Err`: a frame only a client sends.
    pub fn on_frame(self: &Arc<Self>, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Dial { id, host, port } => self.dial(id, host, port),
            Frame::Data { id, data } => {
                let mut open = self.lock();
                let Some(handle) = open.get(&id) else {
                    drop(open);
                    self.answer_now(Frame::Close { id });
                    return Ok(());
                };
                let len = data.len() as u32;
                let within = handle
                    .inflight
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(len))
                    .is_ok();
                if within {
                    let _ = handle.to_task.send(FromSandbox::Data(data));
                } else {
                    // Past the credit it was given: the tunnel goes.
                    let _ = handle.to_task.send(FromSandbox::Close);
                    open.remove(&id);
                    drop(open);
                    self.answer_now(Frame::Close { id });
                }
            }
            Frame::Credit { id, bytes } => {
                if let Some(handle) = self.lock().get(&id) {
                    let room = (TUNNEL_WINDOW as usize).saturating_sub(handle.credit.available_permits());
                    handle.credit.add_permits((bytes as usize).min(room));
                }
            }
            Frame::Shut { id } => {
                if let Some(handle) = self.lock().get(&id) {
                    let _ = handle.to_task.send(FromSandbox::Shut);
                }
            }
            Frame::Close { id } => {
                if let Some(handle) = self.lock().remove(&id) {
                    let _ = handle.to_task.send(FromSandbox::Close);
                }
            }
            other => return Err(format!("agent sent a client-side tunnel frame (tunnel {})", other.id())),
        }
        Ok(())
    }

    /// The channel closed: every tunnel ends.
    pub fn close_all(&self) {
        for (_, handle) in self.lock().drain() {
            let _ = handle.to_task.send(FromSandbox::Close);
        }
    }

    fn dial(self: &Arc<Self>, id: u32, host: String, port: u16) {
        let Some(dialer) = self.dialer.as_ref().and_then(Weak::upgrade) else {
            self.answer_now(Frame::DialReply {
                id,
                refusal: Some("egress is off in this brig".into()),
            });
            return;
        };
        let (to_task, from_sandbox) = mpsc::unbounded_channel();
        let handle = Handle {
            to_task,
            inflight: Arc::new(AtomicU32::new(TUNNEL_WINDOW)),
            credit: Arc::new(Semaphore::new(TUNNEL_WINDOW as usize)),
        };
        let (inflight, credit) = (Arc::clone(&handle.inflight), Arc::clone(&handle.credit));
        {
            let mut open = self.lock();
            if open.contains_key(&id) {
                drop(open);
                self.answer_now(Frame::DialReply {
                    id,
                    refusal: Some("tunnel id in use".into()),
                });
                return;
            }
            open.insert(id, handle);
        }
        let tunnels = Arc::clone(self);
        tokio::spawn(async move {
            let limits = dialer.limits();
            let reply = |refusal: Option<String>| Frame::DialReply { id, refusal }.encode();
            if tunnels.count.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                tunnels.count.fetch_sub(1, Ordering::SeqCst);
                tunnels.lock().remove(&id);
                let why = format!("too many connections open (at most {})", limits.max_connections);
                let _ = tunnels.control.send(reply(Some(why))).await;
                return;
            }
            let outcome = dialer.dial(&tunnels.container, &host, port).await;
            drop(dialer);
            match outcome {
                DialOutcome::NotMine => {
                    tunnels.lock().remove(&id);
                }
                DialOutcome::Refused(why) => {
                    tunnels.lock().remove(&id);
                    let _ = tunnels.control.send(reply(Some(why))).await;
                }
                DialOutcome::Connected { stream, on_end, .. } => {
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    let _ = tunnels.control.send(reply(None)).await;
                    let relay = Relay {
                        id,
                        tunnels: &tunnels,
                        limits,
                        inflight,
                        credit,
                        up: AtomicU64::new(0),
                        down: AtomicU64::new(0),
                        last: Mutex::new(Instant::now()),
                    };
                    let started = Instant::now();
                    let reason = relay.run(read, write, from_sandbox).await;
                    tunnels.lock().remove(&id);
                    if reason != "closed" {
                        let _ = tunnels.control.send(Frame::Close { id }.encode()).await;
                    }
                    on_end(TunnelEnd {
                        bytes_up: relay.up.load(Ordering::Relaxed),
                        bytes_down: relay.down.load(Ordering::Relaxed),
                        duration: started.elapsed(),
                        reason,
                    });
                }
            }
            tunnels.count.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One open tunnel's relay.
struct Relay<'a> {
    id: u32,
    tunnels: &'a Tunnels,
    limits: TunnelLimits,
    inflight: Arc<AtomicU32>,
    credit: Arc<Semaphore>,
    up: AtomicU64,
    down: AtomicU64,
    last: Mutex<Instant>,
}

impl Relay<'_> {
    /// Relays until the tunnel ends; why it ended.
    async fn run(
        &self,
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
        from_sandbox: mpsc::UnboundedReceiver<FromSandbox>,
    ) -> &'static str {
        tokio::select! {
            reason = self.upstream(write, from_sandbox) => reason,
            reason = async {
                match self.downstream(read).await {
                    Err(reason) => reason,
                    // Upstream is done; the sandbox's side may still be sending.
                    Ok(()) => std::future::pending().await,
                }
            } => reason,
            reason = self.idle() => reason,
        }
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Counts `n` bytes against the channel's cap.
    fn charge(&self, n: usize) -> Result<(), &'static str> {
        self.touch();
        let total = self.tunnels.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limits.max_bytes {
            Err("byte_cap")
        } else {
            Ok(())
        }
    }

    /// Sandbox → upstream: write what comes, credit it back once written.
    async fn upstream(
        &self,
        mut write: OwnedWriteHalf,
        mut from_sandbox: mpsc::UnboundedReceiver<FromSandbox>,
    ) -> &'static str {
        while let Some(message) = from_sandbox.recv().await {
            match message {
                FromSandbox::Data(data) => {
                    if let Err(reason) = self.charge(data.len()) {
                        return reason;
                    }
                    if write.write_all(&data).await.is_err() {
                        return "upstream_error";
                    }
                    self.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                    self.inflight.fetch_add(data.len() as u32, Ordering::SeqCst);
                    let credit = Frame::Credit {
                        id: self.id,
                        bytes: data.len() as u32,
                    };
                    if self.tunnels.control.send(credit.encode()).await.is_err() {
                        return "channel_closed";
                    }
                }
                FromSandbox::Shut => {
                    let _ = write.shutdown().await;
                }
                FromSandbox::Close => return "closed",
            }
        }
        "channel_closed"
    }

    /// Upstream → sandbox, as far as the sandbox's credit goes.
    async fn downstream(&self, mut read: OwnedReadHalf) -> Result<(), &'static str> {
        let mut buf = vec![0u8; MAX_TUNNEL_CHUNK];
        loop {
            // At least one byte of credit, then as much more as there is.
            let Ok(first) = self.credit.acquire().await else {
                return Err("channel_closed");
            };
            first.forget();
            let more = self.credit.available_permits().min(buf.len() - 1);
            if let Ok(permits) = self.credit.try_acquire_many(more as u32) {
                permits.forget();
            }
            let allowed = 1 + more;
            let n = match read.read(&mut buf[..allowed]).await {
                Ok(n) => n,
                Err(_) => return Err("upstream_error"),
            };
            self.credit.add_permits(allowed - n);
            if n == 0 {
                // Behind the data in the same queue: a `Shut` that overtook
                // it would end the sandbox's side before the last bytes.
                let shut = Frame::Shut { id: self.id }.encode();
                return self.tunnels.bulk.send(shut).await.map_err(|_| "channel_closed");
            }
            self.charge(n)?;
            self.down.fetch_add(n as u64, Ordering::Relaxed);
            let data = Frame::Data {
                id: self.id,
                data: buf[..n].to_vec(),
            };
            if self.tunnels.bulk.send(data.encode()).await.is_err() {
                return Err("channel_closed");
            }
        }
    }

    /// Resolves once no byte moved either way for the idle limit.
    async fn idle(&self) -> &'static str {
        loop {
            let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
            let until = last + self.limits.idle;
            if Instant::now() >= until {
                return "idle";
            }
            tokio::time::sleep_until(until.min(Instant::now() + Duration::from_secs(5))).await;
        }
    }
}
