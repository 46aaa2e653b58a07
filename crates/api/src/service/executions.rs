//! Asynchronous executions: started by `POST /executions`, run by the API
//! process that accepted them (a task owned by the process's [`Shutdown`]),
//! their records kept in the store so that any replica can answer for them
//! and cancel them. The running replica takes cancels from its own map
//! directly; others' are picked up by polling the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brig_core::runtime::{Control, ControlReply, RuntimeError};
use brig_core::sandbox::ExecHooks;
use brig_core::session::{Owner, SessionError, SessionId};
use brig_core::shutdown::Shutdown;
use brig_core::store::{ExecutionId, ExecutionRecords, Kept};
use brig_protocol::{Keep, ReadRequest, TtySize, MAX_READ_WAIT_MS};
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

/// How long a request about a just accepted execution waits for its session
/// and command to be there.
const START_WAIT: Duration = Duration::from_secs(30);

/// How long a read that was answered early with nothing pauses.
const EARLY_EMPTY_PAUSE: Duration = Duration::from_millis(200);

/// How long a cancel waits for the execution's record to say it ended.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// An execution as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    owner: String,
    /// Unix ms after which a `running` record is lost.
    lost_at_ms: i64,
    view: ExecutionView,
    /// Its stdin is a pipe fed by `POST /executions/{id}/stdin`.
    #[serde(default)]
    stdin_pipe: bool,
    /// It runs under a terminal.
    #[serde(default)]
    tty: bool,
}

/// Where a reader of an execution's output is: bytes of each stream it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

/// Output read from an execution's buffer in its sandbox.
pub struct Read {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// How it ended, once the reader has all of its output.
    pub finished: Option<brig_protocol::RunResult>,
}

pub struct Executions {
    execute: Arc<ExecuteService>,
    records: ExecutionRecords,
    retention: Duration,
    /// Output the sandbox keeps per stream of each execution.
    buffer_bytes: u64,
    shutdown: Shutdown,
    /// Executions this process runs: id → their cancel token.
    running: Mutex<HashMap<ExecutionId, CancellationToken>>,
}

impl Executions {
    pub fn new(
        execute: Arc<ExecuteService>,
        records: ExecutionRecords,
        retention: Duration,
        buffer_bytes: u64,
        shutdown: Shutdown,
    ) -> Self {
        Executions {
            execute,
            records,
            retention,
            buffer_bytes,
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
            session_id,
            mut request,
            ..
        } = validated;
        let id = ExecutionId::random();
        // The sandbox's agent keeps its output for any reader, by offset.
        let keep = Keep {
            key: id.to_string(),
            buffer_bytes: self.buffer_bytes,
            ..request.keep.take().unwrap_or_default()
        };
        let (stdin_pipe, tty) = (keep.stdin_pipe, keep.tty.is_some());
        request.keep = Some(keep);
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
            stdin_pipe,
            tty,
        };
        self.records.put(&id, &stored, running_for + self.retention).await?;
        self.records
            .index(&principal.owner(), &session_id, &id, running_for + self.retention)
            .await?;
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

    /// The executions of `owner`'s session `session` still on record, oldest first.
    pub async fn of_session(&self, owner: &Owner, session: &str) -> Result<Vec<ExecutionView>, ApiError> {
        let session = SessionId::parse(session)?;
        let sessions = self.execute.sessions();
        let ids = self.records.of_session(owner, &session).await?;
        if ids.is_empty() {
            // Nothing listed: say whether the session exists at all.
            sessions.get(owner, &session).await?;
        }
        let mut views = Vec::new();
        for id in ids {
            match self.load(owner, id.as_str()).await {
                Ok((_, stored)) => views.push(stored.view),
                Err(ApiError::NotFound(_) | ApiError::ResultEvicted) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(views)
    }

    /// Output of execution `id` from `at` on (at most `max_bytes` of both
    /// streams), waiting up to `wait` for some while it runs.
    pub async fn read(
        &self,
        owner: &Owner,
        id: &str,
        at: Offsets,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<Read, ApiError> {
        let (id, stored) = self.load(owner, id).await?;
        let request = ReadRequest {
            key: id.to_string(),
            stdout_offset: at.stdout,
            stderr_offset: at.stderr,
            max_bytes,
            wait_ms: wait.as_millis().min(u128::from(MAX_READ_WAIT_MS)) as u32,
        };
        let asked = tokio::time::Instant::now();
        match self.control(owner, &stored, Control::Read(request)).await? {
            ControlReply::Read(reply) => {
                // Nothing, well before the wait was over: the sandbox has too
                // many readers waiting already. Callers read again: not at once.
                let empty = reply.stdout.is_empty() && reply.stderr.is_empty() && reply.finished.is_none();
                if empty && !wait.is_zero() && asked.elapsed() < wait / 2 {
                    tokio::time::sleep(EARLY_EMPTY_PAUSE).await;
                }
                Ok(Read {
                    stdout: reply.stdout,
                    stderr: reply.stderr,
                    finished: reply.finished,
                })
            }
            ControlReply::Done | ControlReply::Queued => {
                Err(ApiError::SandboxProtocol("a read answered without output".into()))
            }
        }
    }

    /// Feeds `data` to a running execution's stdin pipe (then ends it if
    /// `close`): `true` once the command took it all, `false` when it is
    /// still queued in the sandbox after 30 s (it is not to be sent again).
    pub async fn stdin(&self, owner: &Owner, id: &str, data: Vec<u8>, close: bool) -> Result<bool, ApiError> {
        if data.len() > brig_protocol::MAX_STDIN_BYTES {
            return Err(ApiError::StdinTooLarge);
        }
        let (id, stored) = self.load_running(owner, id).await?;
        if !stored.stdin_pipe {
            return Err(ApiError::ExecutionNotRunning(
                "this execution's stdin is not a pipe: start it with \"stdin\": \"pipe\"".into(),
            ));
        }
        let key = id.to_string();
        if stored.tty && close {
            // A terminal's input ends with its EOF character (Ctrl-D), not
            // by closing: its master stays open for the output.
            if !data.is_empty() {
                let (key, close) = (key.clone(), false);
                self.control(owner, &stored, Control::Stdin { key, data, close })
                    .await?;
            }
            let eof = Control::Stdin {
                key,
                data: vec![0x04],
                close: false,
            };
            let taken = self.control(owner, &stored, eof).await?;
            return Ok(taken != ControlReply::Queued);
        }
        let taken = self
            .control(owner, &stored, Control::Stdin { key, data, close })
            .await?;
        Ok(taken != ControlReply::Queued)
    }

    /// Sends `signal` to a running execution's process group.
    pub async fn signal(&self, owner: &Owner, id: &str, signal: i32) -> Result<ExecutionView, ApiError> {
        let (id, stored) = self.load_running(owner, id).await?;
        let key = id.to_string();
        self.control(owner, &stored, Control::Signal { key, signal }).await?;
        Ok(stored.view)
    }

    /// Gives a running execution's terminal a new size.
    pub async fn resize(&self, owner: &Owner, id: &str, size: TtySize) -> Result<ExecutionView, ApiError> {
        let (id, stored) = self.load_running(owner, id).await?;
        if !stored.tty {
            return Err(ApiError::invalid(
                "invalid_tty",
                "this execution runs without a terminal",
            ));
        }
        if !(1..=1000).contains(&size.rows) || !(1..=1000).contains(&size.cols) {
            return Err(ApiError::invalid("invalid_tty", "tty rows and cols are 1 to 1000"));
        }
        let key = id.to_string();
        self.control(owner, &stored, Control::Resize { key, size }).await?;
        Ok(stored.view)
    }

    /// Checks that a client may attach to execution `id`: it runs, with a stdin pipe.
    pub async fn attachable(&self, owner: &Owner, id: &str) -> Result<(), ApiError> {
        let (_, stored) = self.load_running(owner, id).await?;
        // Among nodes: refused before the upgrade, so that the request can
        // be sent on to the session's node.
        let session = SessionId::parse(&stored.view.session_id)?;
        self.execute.sessions().check_served_here(owner, &session).await?;
        if !stored.stdin_pipe {
            return Err(ApiError::ExecutionNotRunning(
                "this execution's stdin is not a pipe: start it with \"stdin\": \"pipe\" or a tty".into(),
            ));
        }
        Ok(())
    }

    /// The record of `id`, which must still be running (409 otherwise).
    async fn load_running(&self, owner: &Owner, id: &str) -> Result<(ExecutionId, Stored), ApiError> {
        let (id, stored) = self.load(owner, id).await?;
        if stored.view.status != Status::Running {
            return Err(ApiError::ExecutionNotRunning("the execution has ended".into()));
        }
        Ok((id, stored))
    }

    /// A request to the agent that keeps the execution. A session gone since
    /// took the execution's output with it.
    async fn control(&self, owner: &Owner, stored: &Stored, control: Control) -> Result<ControlReply, ApiError> {
        let session = SessionId::parse(&stored.view.session_id)?;
        let give_up = tokio::time::Instant::now() + START_WAIT;
        loop {
            let err = match self.execute.sessions().control(owner, &session, control.clone()).await {
                Ok(reply) => return Ok(reply),
                Err(err) => err,
            };
            // Just accepted, its session (or the command in it) may not be
            // there yet: wait for it while the record says it runs.
            let starting = matches!(
                err,
                SessionError::NotFound | SessionError::Runtime(RuntimeError::ExecutionNotFound)
            );
            if starting && tokio::time::Instant::now() < give_up {
                let (_, now) = self.load(owner, &stored.view.execution_id).await?;
                if now.view.status == Status::Running {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            return Err(match err {
                SessionError::NotFound => {
                    ApiError::CursorExpired("the execution's session is gone, and its output with it".into())
                }
                other => other.into(),
            });
        }
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
