//! Asynchronous executions: started by `POST /executions`, run by the API
//! process that accepted them, their records kept in the session store so that
//! any replica can answer for them and cancel them.
//!
//! Store keys (under the instance's namespace): `execution:<id>` → the record
//! (JSON; TTL: the command's deadline while running, `EXECUTION_RESULT_TTL_SECONDS`
//! once finished) and `execution-cancel:<id>` → set by a cancel from any replica.
//! The running replica also takes cancels from its own map directly; others'
//! are picked up by polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_core::sandbox::ExecHooks;
use brig_core::session::{Owner, SessionId};
use brig_core::store::{SessionStore, StoreError};
use brig_core::ExecRequest;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::execute::{audit, ExecutionResult};
use crate::state::AppState;

/// How often a running execution looks for a cancel sent to another replica.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// Slack past the command's deadline before a record still `running` is
/// declared lost (its API process died): session creation, grace, clocks.
const LOST_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    TimedOut,
    Cancelled,
    Failed,
}

/// Why an execution failed (`status: failed`): the error `/execute` would have answered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub error: String,
    pub detail: String,
}

/// An execution as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionView {
    pub execution_id: String,
    pub session_id: String,
    pub status: Status,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub result: Option<ExecutionResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// An execution as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    owner: String,
    /// Unix ms after which a `running` record is lost.
    lost_at_ms: i64,
    view: ExecutionView,
}

pub struct Executions {
    store: Arc<dyn SessionStore>,
    retention: Duration,
    /// Executions this process runs: id → their cancel token.
    running: Mutex<HashMap<String, CancellationToken>>,
}

fn record_key(id: &str) -> String {
    format!("execution:{id}")
}

fn cancel_key(id: &str) -> String {
    format!("execution-cancel:{id}")
}

/// Ids are 32 lowercase hex digits; anything else cannot exist.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Executions {
    pub fn new(store: Arc<dyn SessionStore>, retention: Duration) -> Self {
        Executions {
            store,
            retention,
            running: Mutex::default(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn save(&self, stored: &Stored, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(stored).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        self.store
            .put_value(&record_key(&stored.view.execution_id), &json, ttl)
            .await
    }

    async fn load(&self, owner: &Owner, id: &str) -> Result<Stored, ApiError> {
        if !valid_id(id) {
            return Err(ApiError::NotFound("execution"));
        }
        let raw = self
            .store
            .get_value(&record_key(id))
            .await
            .map_err(store_error)?
            .ok_or(ApiError::NotFound("execution"))?;
        let mut stored: Stored = serde_json::from_str(&raw).map_err(|err| ApiError::Internal(err.to_string()))?;
        if stored.owner != owner.as_str() {
            return Err(ApiError::NotFound("execution"));
        }
        if stored.view.status == Status::Running && chrono::Utc::now().timestamp_millis() > stored.lost_at_ms {
            stored.view.status = Status::Failed;
            stored.view.failure = Some(Failure {
                error: "execution_lost".into(),
                detail: "the API process running it stopped before it finished".into(),
            });
        }
        Ok(stored)
    }

    /// Records the execution as running and starts it in the background.
    pub async fn start(
        self: &Arc<Self>,
        state: &AppState,
        principal: Principal,
        session_id: SessionId,
        request: ExecRequest,
    ) -> Result<ExecutionView, ApiError> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let owner = principal.owner();
        let running_for = request.timeout + LOST_AFTER;
        let stored = Stored {
            owner: owner.as_str().to_string(),
            lost_at_ms: chrono::Utc::now().timestamp_millis() + running_for.as_millis() as i64,
            view: ExecutionView {
                execution_id: id.clone(),
                session_id: session_id.to_string(),
                status: Status::Running,
                result: None,
                failure: None,
            },
        };
        self.save(&stored, running_for + self.retention)
            .await
            .map_err(store_error)?;
        let cancel = CancellationToken::new();
        self.running().insert(id.clone(), cancel.clone());
        let (executions, state, view) = (Arc::clone(self), state.clone(), stored.view.clone());
        tokio::spawn(async move {
            let hooks = ExecHooks {
                cancel: Some(cancel.clone()),
                output: None,
            };
            let argv = request.argv.clone();
            // Cancels sent to another replica arrive through the store.
            let poller = tokio::spawn({
                let (executions, id, cancel) = (Arc::clone(&executions), id.clone(), cancel.clone());
                async move { executions.follow_remote_cancel(&id, &cancel).await }
            });
            let result = state.sessions.execute_with(&owner, &session_id, request, hooks).await;
            poller.abort();
            audit(&principal, &session_id, &argv, &result);
            let mut stored = stored;
            match result {
                Ok(executed) => {
                    let outcome = &executed.outcome;
                    stored.view.status = if outcome.cancelled {
                        Status::Cancelled
                    } else if outcome.timed_out {
                        Status::TimedOut
                    } else {
                        Status::Completed
                    };
                    stored.view.result = Some(ExecutionResult::from(&executed));
                }
                Err(err) => {
                    let (_, code, detail, _) = ApiError::from(err).parts();
                    stored.view.status = Status::Failed;
                    stored.view.failure = Some(Failure {
                        error: code.into(),
                        detail,
                    });
                }
            }
            if let Err(err) = executions.save(&stored, executions.retention).await {
                tracing::error!(execution = %id, %err, "could not record a finished execution");
            }
            executions.running().remove(&id);
        });
        Ok(view)
    }

    /// Cancels `token` once a cancel for `id` shows up in the store.
    async fn follow_remote_cancel(&self, id: &str, token: &CancellationToken) {
        loop {
            tokio::time::sleep(CANCEL_POLL).await;
            if let Ok(Some(_)) = self.store.get_value(&cancel_key(id)).await {
                token.cancel();
                return;
            }
        }
    }

    pub async fn get(&self, owner: &Owner, id: &str) -> Result<ExecutionView, ApiError> {
        Ok(self.load(owner, id).await?.view)
    }

    /// Kills a running execution's process tree and waits (a bounded time) for
    /// its record to say so. Idempotent: a finished execution is returned as it is.
    pub async fn cancel(&self, owner: &Owner, id: &str) -> Result<ExecutionView, ApiError> {
        let stored = self.load(owner, id).await?;
        if stored.view.status != Status::Running {
            return Ok(stored.view);
        }
        let local = self.running().get(id).cloned();
        match local {
            Some(token) => token.cancel(),
            None => self
                .store
                .put_value(&cancel_key(id), "1", self.retention)
                .await
                .map_err(store_error)?,
        }
        for _ in 0..100 {
            let now = self.load(owner, id).await?;
            if now.view.status != Status::Running {
                return Ok(now.view);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(self.load(owner, id).await?.view)
    }
}

fn store_error(err: StoreError) -> ApiError {
    ApiError::from(brig_core::sessions::SessionError::Store(err))
}
