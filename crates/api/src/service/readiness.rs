//! `/ready`: whether the session store and the runtime (engine, OCI runtime,
//! agent volume) are usable. Anyone may ask, without credentials, and each
//! check costs a Redis round trip and several engine calls: so the answer is
//! checked at most once per [`FRESH_FOR`], however many ask at once (they wait
//! for the one check in progress, which its own timeouts bound).

use std::sync::Arc;
use std::time::Duration;

use brig_core::store::SessionStore;
use brig_core::SandboxRuntime;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long an answer stands.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

pub struct Readiness {
    store: Arc<dyn SessionStore>,
    runtime: Arc<dyn SandboxRuntime>,
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(store: Arc<dyn SessionStore>, runtime: Arc<dyn SandboxRuntime>) -> Self {
        Readiness {
            store,
            runtime,
            last: Mutex::new(None),
        }
    }

    /// The store's name (`redis`, `memory`), for the answer.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// `Ok`, or what is not usable (the first failing part, named).
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return outcome.clone();
            }
        }
        let outcome = self.probe().await;
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }

    async fn probe(&self) -> Result<(), String> {
        self.store
            .ping()
            .await
            .map_err(|err| format!("{}: {err}", self.store.name()))?;
        self.runtime.ready().await.map_err(|err| err.to_string())
    }
}
