//! Stateful code contexts: a Python interpreter kept alive in a session's
//! sandbox, whose variables persist from one run to the next. Built on
//! durable executions: a context is an execution of the `python` language's
//! interpreter running brig's driver (`driver.py`, standard library only:
//! no network, no packages) with a stdin pipe. A run writes one JSON
//! request line to its stdin and reads the answer line from its output,
//! from the offset the context's record keeps. Runs of one context take
//! turns (a mark in the store, across replicas); an interrupt is SIGINT to
//! the interpreter, which the driver turns into a `KeyboardInterrupt` of the
//! running cell only. A context lives as long as its execution:
//! `MAX_EXEC_TIMEOUT_SECONDS` at most, or until it is deleted.

use std::sync::Arc;
use std::time::Duration;

use brig_core::session::Owner;
use brig_core::store::{ContextRecords, ExecutionId};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::service::execute::{ExecuteInput, ExecuteService};
use crate::service::executions::{Executions, Offsets};

/// The driver, passed to the interpreter with `-c` (base64: a command line
/// holds no newline).
const DRIVER: &str = include_str!("driver.py");

fn driver_one_liner() -> String {
    use base64::Engine;
    let source = base64::engine::general_purpose::STANDARD.encode(DRIVER);
    format!("import base64; exec(compile(base64.b64decode('{source}'), 'brig-context-driver', 'exec'))")
}

/// The one language with contexts, and its driver's interpreter flags.
const LANGUAGE: &str = "python";

/// Slack past a run's own timeout for its mark in the store.
const RUN_MARK_SLACK: Duration = Duration::from_secs(30);

/// Longest answer line read back (the driver caps each part at 1 MiB).
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// SIGINT (2 on every Linux architecture).
const SIGINT: i32 = 2;

/// How long after an interrupt a timed-out run waits for its answer.
const INTERRUPT_WAIT: Duration = Duration::from_secs(5);

/// A context as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    owner: String,
    session_id: String,
    execution_id: String,
    /// Bytes of the driver's stdout already read: where the next answer starts.
    offset: u64,
    /// Bytes of its stderr passed over (what the interpreter itself, or a
    /// cell's subprocesses, wrote there).
    #[serde(default)]
    stderr_offset: u64,
    /// The sequence number of the last request.
    seq: u64,
}

/// What a run answered.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunResult {
    pub stdout: String,
    pub stderr: String,
    /// The repr of the cell's last expression, if it was one and not None.
    pub result: Option<String>,
    pub error: Option<CellError>,
    /// The run passed its timeout and was interrupted.
    #[serde(default)]
    pub timed_out: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CellError {
    pub name: String,
    pub message: String,
    pub traceback: String,
}

/// The driver's answer line.
#[derive(Debug, Deserialize)]
struct Answer {
    seq: Option<u64>,
    stdout: String,
    stderr: String,
    result: Option<String>,
    error: Option<CellError>,
}

pub struct Contexts {
    execute: Arc<ExecuteService>,
    executions: Arc<Executions>,
    records: ContextRecords,
}

impl Contexts {
    pub fn new(execute: Arc<ExecuteService>, executions: Arc<Executions>, records: ContextRecords) -> Self {
        Contexts {
            execute,
            executions,
            records,
        }
    }

    /// Starts a context in `owner`'s session `session_id` (created if needed).
    pub async fn create(&self, principal: &Principal, session_id: &str, language: &str) -> Result<String, ApiError> {
        if language != LANGUAGE {
            return Err(ApiError::invalid(
                "invalid_language",
                format!("contexts are {LANGUAGE} only; {language:?} has none"),
            ));
        }
        let interpreter = self.execute.interpreter(language)?;
        let program = interpreter.as_slice().first().cloned().unwrap_or_default();
        let limits = self.execute.limits();
        let input = ExecuteInput {
            session_id: session_id.to_string(),
            command: Some(shell_words::join([program.as_str(), "-u", "-c", &driver_one_liner()])),
            timeout: Some(limits.max_timeout.as_secs_f64()),
            stdin_pipe: true,
            ..ExecuteInput::default()
        };
        let validated = self.execute.validate(principal, input)?;
        let retention = limits.max_timeout;
        let view = self.executions.start(principal.clone(), validated).await?;
        let id = ExecutionId::parse(&view.execution_id).ok_or_else(|| ApiError::Internal("bad execution id".into()))?;
        let record = Record {
            owner: principal.owner().as_str().to_string(),
            session_id: view.session_id,
            execution_id: view.execution_id,
            offset: 0,
            stderr_offset: 0,
            seq: 0,
        };
        self.records.put(&id, &record, retention).await?;
        Ok(id.to_string())
    }

    async fn load(&self, owner: &Owner, id: &str) -> Result<(ExecutionId, Record), ApiError> {
        let id = ExecutionId::parse(id).ok_or(ApiError::NotFound("context"))?;
        match self.records.get::<Record>(&id).await? {
            Some(record) if record.owner == owner.as_str() => Ok((id, record)),
            _ => Err(ApiError::NotFound("context")),
        }
    }

    /// Runs `code` in context `id`, waiting at most `timeout` (then the cell
    /// is interrupted and its answer says so).
    pub async fn run(&self, owner: &Owner, id: &str, code: String, timeout: Duration) -> Result<RunResult, ApiError> {
        let (id, _) = self.load(owner, id).await?;
        if !self.records.begin_run(&id, timeout + RUN_MARK_SLACK).await? {
            return Err(ApiError::ContextBusy);
        }
        // Read again under the mark: the run before may have moved it on.
        let mut record = match self.load(owner, id.as_str()).await {
            Ok((_, record)) => record,
            Err(err) => {
                let _ = self.records.end_run(&id).await;
                return Err(err);
            }
        };
        let ran = self.run_held(owner, &mut record, code, timeout).await;
        // The offset moves past this run's answer (or where reading stopped).
        let saved = self.records.put(&id, &record, self.execute.limits().max_timeout).await;
        let _ = self.records.end_run(&id).await;
        saved?;
        ran
    }

    async fn run_held(
        &self,
        owner: &Owner,
        record: &mut Record,
        code: String,
        timeout: Duration,
    ) -> Result<RunResult, ApiError> {
        record.seq += 1;
        let mut line = serde_json::to_vec(&serde_json::json!({"seq": record.seq, "code": code}))
            .map_err(|err| ApiError::Internal(err.to_string()))?;
        line.push(b'\n');
        if line.len() > brig_protocol::MAX_STDIN_BYTES {
            return Err(ApiError::StdinTooLarge);
        }
        let execution = record.execution_id.clone();
        self.executions.stdin(owner, &execution, line, false).await?;
        let (answer, timed_out) = match self.answer(owner, record, timeout).await? {
            Some(answer) => (answer, false),
            None => {
                self.executions.signal(owner, &execution, SIGINT).await?;
                let answer = self.answer(owner, record, INTERRUPT_WAIT).await?.ok_or_else(|| {
                    ApiError::ExecutionNotRunning("the context did not answer after its cell was interrupted".into())
                })?;
                (answer, true)
            }
        };
        Ok(RunResult {
            stdout: answer.stdout,
            stderr: answer.stderr,
            result: answer.result,
            error: answer.error,
            timed_out,
        })
    }

    /// The answer to the record's last request, within `wait`; answers to
    /// earlier, abandoned runs are skipped.
    async fn answer(&self, owner: &Owner, record: &mut Record, wait: Duration) -> Result<Option<Answer>, ApiError> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            match self.next_answer(owner, record, left).await? {
                Some(answer) if answer.seq != Some(record.seq) => continue,
                other => return Ok(other),
            }
        }
    }

    /// The next answer line from the driver, waiting at most `wait`; the
    /// record's offset moves past it.
    async fn next_answer(
        &self,
        owner: &Owner,
        record: &mut Record,
        wait: Duration,
    ) -> Result<Option<Answer>, ApiError> {
        let give_up = tokio::time::Instant::now() + wait;
        let mut line: Vec<u8> = Vec::new();
        // Past MAX_ANSWER_BYTES a line is passed over, not kept.
        let mut skipped = 0u64;
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let at = Offsets {
                stdout: record.offset + skipped + line.len() as u64,
                stderr: record.stderr_offset,
            };
            let wait = left.min(Duration::from_secs(25));
            let read = self
                .executions
                .read(owner, &record.execution_id, at, 1 << 20, wait)
                .await?;
            // The driver's stderr is no part of any answer.
            record.stderr_offset += read.stderr.len() as u64;
            if let Some(end) = read.stdout.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&read.stdout[..end]);
                record.offset += skipped + line.len() as u64 + 1;
                if skipped > 0 {
                    return Err(ApiError::SandboxProtocol("a context's answer was too long".into()));
                }
                let answer = serde_json::from_slice(&line)
                    .map_err(|err| ApiError::SandboxProtocol(format!("a context answered badly: {err}")))?;
                return Ok(Some(answer));
            }
            line.extend_from_slice(&read.stdout);
            if line.len() > MAX_ANSWER_BYTES {
                skipped += line.len() as u64;
                line.clear();
            }
            if read.finished.is_some() {
                return Err(ApiError::ExecutionNotRunning(
                    "the context has ended (its interpreter exited or reached its deadline): create another".into(),
                ));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Interrupts the running cell of context `id` (the context lives on).
    pub async fn interrupt(&self, owner: &Owner, id: &str) -> Result<(), ApiError> {
        let (_, record) = self.load(owner, id).await?;
        self.executions.signal(owner, &record.execution_id, SIGINT).await?;
        Ok(())
    }

    /// Ends context `id`: its interpreter is killed, its record removed.
    pub async fn delete(&self, owner: &Owner, id: &str) -> Result<(), ApiError> {
        let (id, record) = self.load(owner, id).await?;
        self.executions.cancel(owner, &record.execution_id).await?;
        self.records.delete(&id).await?;
        Ok(())
    }
}
