//! The warm pool: `WARM_POOL_SIZE` spares started ahead, hardened like any
//! sandbox, their agent channel attached and answering. A new session claims one
//! instead of waiting for a container to be created and started.
//!
//! The store's pool set is the source of truth for "unclaimed": taking from it
//! is atomic (Redis `SPOP`), so no two sessions ever get the same spare, across
//! replicas too. A claimed spare is recorded as the session's container at
//! once and renamed to the session's container name in the background.
//! With Redis the set outlives an API restart, and so do the spares; with the
//! memory store a restarted API starts new ones, and the old (not in the set)
//! are surplus for the reaper, as is anything beyond the size.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::runtime::{RuntimeError, SandboxRuntime};
use crate::sandbox::{CreateSandbox, ExecRequest};
use crate::store::{SessionStore, StoreError};

/// A refill pass also runs this often without being asked (a spare may have
/// been reaped or removed by hand).
const REFILL_TICK: Duration = Duration::from_secs(5);

/// Pause between a claim and the refill it triggers.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// Pause between a claim and the spare's rename: the session's first command,
/// which usually follows at once, runs first.
const RENAME_DELAY: Duration = Duration::from_millis(50);

pub struct WarmPool {
    store: Arc<dyn SessionStore>,
    runtime: Arc<dyn SandboxRuntime>,
    size: usize,
    wanted: Notify,
}

impl WarmPool {
    pub fn new(store: Arc<dyn SessionStore>, runtime: Arc<dyn SandboxRuntime>, size: usize) -> Self {
        WarmPool {
            store,
            runtime,
            size,
            wanted: Notify::new(),
        }
    }

    /// A spare for a new session, taken out of the set (each is handed out once),
    /// or `None` if the pool is empty: the caller creates one the slow way. Store
    /// errors count as empty. The caller records the spare as the session's
    /// container, then calls [`rename_claimed`](Self::rename_claimed).
    pub async fn take(&self) -> Option<String> {
        let taken = match self.store.pool_take().await {
            Ok(taken) => taken,
            Err(err) => {
                tracing::warn!(%err, "warm pool unavailable");
                None
            }
        };
        self.wanted.notify_one();
        taken
    }

    /// Gives a claimed spare its session's name, in the background and
    /// [`RENAME_DELAY`] later: renaming costs the engine ~5 ms, which a new
    /// session should not wait for, nor share the CPU with while its first
    /// command runs. Until it is done the session's record is what marks the
    /// spare as claimed (the reaper never treats a spare with a live record as
    /// a spare). A spare that died meanwhile shows up at the session's first
    /// command as `SandboxNotFound`, which the session flow repairs; one
    /// removed meanwhile (the session was deleted) is left alone.
    pub fn rename_claimed(&self, spare: String, request: CreateSandbox) {
        let runtime = Arc::clone(&self.runtime);
        tokio::spawn(async move {
            tokio::time::sleep(RENAME_DELAY).await;
            match runtime.claim(&spare, &request).await {
                Ok(()) => {}
                Err(RuntimeError::SandboxNotFound) => {
                    tracing::debug!(session = %request.session_id, "a claimed spare was gone before its rename");
                }
                Err(err) => tracing::warn!(%err, session = %request.session_id, "renaming a claimed spare failed"),
            }
        });
    }

    /// Keeps the pool at its size until `shutdown` resolves: adopts spares left
    /// by an earlier process, then refills after every claim (and every few
    /// seconds).
    pub async fn run_until_stopped(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(err) = self.refill_once().await {
                tracing::warn!(%err, "warm pool refill failed");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wanted.notified() => {
                    // Starting a container is heavy work for the engine; let the
                    // request that just claimed a spare finish first.
                    tokio::time::sleep(REFILL_DELAY).await;
                }
                () = tokio::time::sleep(REFILL_TICK) => {}
            }
        }
    }

    /// One refill: forget set members that no longer run, then start spares
    /// one at a time until the set holds `size`. Spares the set does not know
    /// (left by an earlier process with the memory store, or after Redis lost
    /// its data) are not adopted: one may be mid-claim elsewhere; the reaper
    /// removes them as surplus instead.
    pub async fn refill_once(&self) -> Result<usize, PoolError> {
        let running: HashSet<String> = self
            .runtime
            .list()
            .await?
            .into_iter()
            .filter(|s| s.running && self.runtime.is_spare(s))
            .map(|s| s.id)
            .collect();
        let members = self.store.pool_members().await?;
        let mut count = 0;
        for member in &members {
            if running.contains(member) {
                count += 1;
            } else {
                self.store.pool_remove(member).await?;
            }
        }
        if count >= self.size {
            return Ok(0);
        }
        // Asked once per refill, not once per spare.
        let store = self.store.identity().await?;
        let mut started = 0;
        while count < self.size {
            let spare = self.runtime.create_spare(&store).await?;
            // A fresh container's first command pays for the image's files
            // coming through the storage driver the first time (~3 ms here);
            // pay it now rather than in a session's first command. Nothing is
            // left behind (`true` exits), and an image without it just skips this.
            let warm_up = ExecRequest::new(["true"]).timeout(Duration::from_secs(5));
            if let Err(err) = self.runtime.exec(&spare.id, warm_up).await {
                tracing::debug!(%err, "warming up a spare failed");
            }
            self.store.pool_add(&spare.id).await?;
            count += 1;
            started += 1;
        }
        Ok(started)
    }
}

/// Why a refill stopped short.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
