//! The per-container channel registry: one attach channel per container
//! (one writer each), re-attached when it closed, swept when the map grows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::channel::Channel;
use super::{ChannelSlot, DockerRuntime};
use crate::runtime::RuntimeError;

impl DockerRuntime {
    pub(super) fn slot(&self, id: &str) -> ChannelSlot {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Containers removed elsewhere (another process's reaper, by hand) leave
        // closed channels behind; sweep them now and then so the map stays the
        // size of the live sandboxes this process serves.
        if channels.len() >= self.sweep_at.load(Ordering::Relaxed) {
            // Only slots holding a closed channel go; a locked slot is in use.
            channels.retain(|_, slot| {
                slot.try_lock()
                    .map_or(true, |c| c.as_ref().is_none_or(|c| !c.is_closed()))
            });
            self.sweep_at.store((channels.len() * 2).max(64), Ordering::Relaxed);
        }
        Arc::clone(channels.entry(id.to_string()).or_default())
    }

    /// The open channel to container `id` (its full engine id), attaching (again)
    /// if there is none or the last one closed.
    pub(super) async fn channel(&self, id: &str) -> Result<Arc<Channel>, RuntimeError> {
        let mut current = loop {
            let slot = self.slot(id);
            let current = Arc::clone(&slot).lock_owned().await;
            // A sweep may have dropped this slot from the map while we waited:
            // only the slot in the map may open a channel (one writer each).
            if self.is_current_slot(id, &slot) {
                break current;
            }
        };
        if let Some(channel) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(channel));
        }
        if current.take().is_some() {
            // This process had a channel to it, which closed: a re-attach.
            metrics::counter!(crate::metrics::CHANNEL_REATTACHES).increment(1);
        }
        // The engine accepts an attach to a stopped container and then waits for
        // it to start: check first, so a dead sandbox is "not found", not a hang.
        let running = self
            .inspect_raw(id)
            .await?
            .and_then(|raw| raw.state?.running)
            .unwrap_or(false);
        if !running {
            drop(current);
            self.forget_channel(id);
            return Err(RuntimeError::SandboxNotFound);
        }
        // A container dying just now still shows as running for a moment, and an
        // attach to it never answers: race the greeting against its death.
        let opened = tokio::select! {
            opened = Channel::open(&self.docker, id, self.egress.get().cloned()) => opened,
            () = self.until_stopped(id) => Err(RuntimeError::Engine("the container stopped".into())),
        };
        let channel = match opened {
            Ok(channel) => channel,
            // The engine refuses to attach to a removed or stopped container.
            Err(RuntimeError::Engine(_)) => {
                drop(current);
                self.forget_channel(id);
                return Err(RuntimeError::SandboxNotFound);
            }
            Err(other) => return Err(other),
        };
        *current = Some(Arc::clone(&channel));
        Ok(channel)
    }

    fn is_current_slot(&self, id: &str, slot: &ChannelSlot) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.get(id).is_some_and(|current| Arc::ptr_eq(current, slot))
    }

    /// Resolves once container `id` is no longer running (or cannot be inspected).
    async fn until_stopped(&self, id: &str) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            match self.inspect_raw(id).await {
                Ok(Some(raw)) if raw.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {}
                _ => return,
            }
        }
    }

    /// The relayed conversation with container `id`'s agent (its full engine
    /// id), opened (again) if there is none or the last one closed. One per
    /// container and process: the commands started on it live as long as it.
    pub(super) async fn relay(&self, id: &str) -> Result<Arc<Channel>, RuntimeError> {
        let slot = {
            let mut relays = self.relays.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Relays of removed containers close: sweep them as the map grows.
            if relays.len() >= 64 {
                relays.retain(|_, slot| {
                    slot.try_lock()
                        .map_or(true, |c| c.as_ref().is_none_or(|c| !c.is_closed()))
                });
            }
            Arc::clone(relays.entry(id.to_string()).or_default())
        };
        let mut current = slot.lock().await;
        if let Some(relay) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(relay));
        }
        let relay = Channel::relay(&self.docker, id).await?;
        *current = Some(Arc::clone(&relay));
        Ok(relay)
    }

    pub(super) fn forget_channel(&self, id: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.remove(id);
    }
}
