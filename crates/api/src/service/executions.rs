//! Asynchronous executions: started by `POST /executions`, run by the API
//! process that accepted them (a task owned by the process's [`Shutdown`]),
//! their records kept in the store so that any replica can answer for them
//! and cancel them. The running replica takes cancels from its own map
//! directly; others' are picked up by polling the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_core::sandbox::ExecHooks;
use brig_core::session::Owner;
use brig_core::shutdown::Shutdown;
use brig_core::store::{ExecutionId, ExecutionRecords, Kept};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::execute::{ExecuteService, Validated};
use crate::views::{ExecutionResult, ExecutionView, Failure, Status};

/// How often a running execution looks for a cancel sent to another replica.
const CANCEL_POLL: Duration = Duration::from_millis(200);

/// Slack past the command's deadline before a record still `running` is
/// declared lost (its API process died): session creation, grace, clocks.
const LOST_AFTER: Duration = Duration::from_secs(60);

/// How long a cancel waits for the execution's record to say it ended.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// An execution as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    owner: String,
    /// Unix ms after which a `running` record is lost.
    lost_at_ms: i64,
    view: ExecutionView,
}

pub struct Executions {
    execute: Arc<ExecuteService>,
    records: ExecutionRecords,
    retention: Duration,
    shutdown: Shutdown,
    /// Executions this process runs: id → their cancel token.
    running: Mutex<HashMap<ExecutionId, CancellationToken>>,
}

impl Executions {
    pub fn new(
        execute: Arc<ExecuteService>,
        records: ExecutionRecords,
        retention: Duration,
        shutdown: Shutdown,
    ) -> Self {
        Executions {
            execute,
            records,
            retention,
            shutdown,
            running: Mutex::default(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, CancellationToken>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn load(&self, owner: &Owner, id: &str) -> Result<(ExecutionId, Stored), ApiError> {
        let id = ExecutionId::parse(id).ok_or(ApiError::NotFound("execution"))?;
        let mut stored: Stored = match self.records.get(&id).await? {
            Some(Kept::Present(stored)) => stored,
            Some(Kept::Evicted { owner: evicted }) if evicted == owner.as_str() => return Err(ApiError::ResultEvicted),
            _ => return Err(ApiError::NotFound("execution")),
        };
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
        Ok((id, stored))
    }

    /// Charges the cooldown, records the execution as running and starts it
    /// in the background.
    pub async fn start(
        self: &Arc<Self>,
        principal: Principal,
        validated: Validated,
    ) -> Result<ExecutionView, ApiError> {
        self.execute.admit(&principal, &validated).await?;
        let Validated {
            session_id, request, ..
        } = validated;
        let id = ExecutionId::random();
        let running_for = request.timeout + LOST_AFTER;
        let stored = Stored {
            owner: principal.owner().as_str().to_string(),
            lost_at_ms: chrono::Utc::now().timestamp_millis() + running_for.as_millis() as i64,
            view: ExecutionView {
                execution_id: id.to_string(),
                session_id: session_id.to_string(),
                status: Status::Running,
                result: None,
                failure: None,
            },
        };
        self.records.put(&id, &stored, running_for + self.retention).await?;
        // Cancelled by a client's cancel, or when the process stops waiting.
        let cancel = self.shutdown.token();
        self.running().insert(id.clone(), cancel.clone());
        let (executions, view) = (Arc::clone(self), stored.view.clone());
        self.shutdown.spawn(async move {
            let hooks = ExecHooks {
                cancel: Some(cancel.clone()),
                output: None,
            };
            // Cancels sent to another replica arrive through the store.
            let poller = tokio::spawn({
                let (executions, id, cancel) = (Arc::clone(&executions), id.clone(), cancel.clone());
                async move { executions.follow_remote_cancel(&id, &cancel).await }
            });
            let result = executions
                .execute
                .run_admitted(&principal, &session_id, request, hooks)
                .await;
            poller.abort();
            let mut stored = stored;
            match result {
                // Cancelled by the process, not by a client: it stopped waiting.
                Ok(executed) if executed.outcome.cancelled && executions.shutdown.is_cancelled() => {
                    stored.view.status = Status::Failed;
                    stored.view.failure = Some(ApiError::ShuttingDown.failure());
                }
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
                    let err = ApiError::from(err);
                    err.observe();
                    stored.view.status = Status::Failed;
                    stored.view.failure = Some(err.failure());
                }
            }
            let owner = principal.owner();
            if let Err(err) = executions
                .records
                .put_result(&owner, &id, &stored, executions.retention)
                .await
            {
                tracing::error!(execution = %id, %err, "could not record a finished execution");
            }
            executions.running().remove(&id);
        });
        Ok(view)
    }

    /// Cancels `token` once a cancel for `id` shows up in the store.
    async fn follow_remote_cancel(&self, id: &ExecutionId, token: &CancellationToken) {
        loop {
            tokio::time::sleep(CANCEL_POLL).await;
            if let Ok(true) = self.records.cancel_requested(id).await {
                token.cancel();
                return;
            }
        }
    }

    pub async fn get(&self, owner: &Owner, id: &str) -> Result<ExecutionView, ApiError> {
        Ok(self.load(owner, id).await?.1.view)
    }

    /// Kills a running execution's process tree and waits (a bounded time) for
    /// its record to say so. Idempotent: a finished execution is returned as it is.
    pub async fn cancel(&self, owner: &Owner, id: &str) -> Result<ExecutionView, ApiError> {
        let (id, stored) = self.load(owner, id).await?;
        if stored.view.status != Status::Running {
            return Ok(stored.view);
        }
        let local = self.running().get(&id).cloned();
        match local {
            Some(token) => token.cancel(),
            None => self.records.request_cancel(&id, self.retention).await?,
        }
        let give_up = tokio::time::Instant::now() + CANCEL_WAIT;
        loop {
            let now = self.load(owner, id.as_str()).await?.1;
            if now.view.status != Status::Running || tokio::time::Instant::now() >= give_up {
                return Ok(now.view);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
