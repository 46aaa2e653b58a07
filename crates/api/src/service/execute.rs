//! The execute use case, shared by every transport (`/execute` as JSON or
//! SSE, `/executions`, MCP's `execute`, `/generate-and-execute`): check the
//! request, charge the policy's cooldown, run the command in the session,
//! write the audit line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brig_core::policy::rules::{Cooldown, LiveRules, Rule, Scope};
use brig_core::policy::{Languages, WorkingDir};
use brig_core::sandbox::ExecHooks;
use brig_core::session::SessionId;
use brig_core::session::{Executed, SessionError, Sessions};
use brig_core::store::{CooldownScope, Cooldowns};
use brig_core::{Config, ExecRequest};
use brig_protocol::{Keep, TtySize};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::views::{ExecuteBody, ExecuteResponse, ExecutionResult};

/// Largest `stdin` (or `code`) accepted (the agent protocol's bound).
const MAX_STDIN_BYTES: usize = 1024 * 1024;

/// Most variables one `env` sets.
const MAX_ENV_VARS: usize = 64;

/// Most bytes of one `env` (names and values).
const MAX_ENV_BYTES: usize = 32 * 1024;

/// Names brig sets itself: a command may not change them.
fn reserved(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "NO_PROXY" | "no_proxy")
        || name.starts_with("BRIG_")
        // The dynamic loader's: they would make any allowed program run
        // code of the caller's choosing.
        || name.starts_with("LD_")
        || brig_core::session::egress::proxy_env()
            .iter()
            .any(|(reserved, _)| reserved == name)
}

/// `env` as the agent takes it: valid names, no NUL, bounded, none of brig's own.
pub fn checked_env(env: BTreeMap<String, String>) -> Result<Vec<(String, String)>, ApiError> {
    let invalid = |detail: String| Err(ApiError::invalid("invalid_env", detail));
    if env.len() > MAX_ENV_VARS {
        return invalid(format!("env sets at most {MAX_ENV_VARS} variables"));
    }
    if env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_ENV_BYTES {
        return invalid(format!("env is at most {MAX_ENV_BYTES} bytes"));
    }
    for (name, value) in &env {
        let mut chars = name.chars();
        let valid_name = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return invalid(format!("env: {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"));
        }
        if reserved(name) {
            return invalid(format!(
                "env: {name} is set by brig (or steers the dynamic loader) and cannot be changed"
            ));
        }
        if value.contains('\0') {
            return invalid(format!("env: the value of {name} holds a NUL byte"));
        }
    }
    Ok(env.into_iter().collect())
}

/// What any transport asks to run: a command line, or code for a language's
/// interpreter, in a session.
#[derive(Debug, Clone, Default)]
pub struct ExecuteInput {
    pub session_id: String,
    /// A command line (split like a shell would, never run by one). Exactly
    /// one of `command` and `code`.
    pub command: Option<String>,
    pub code: Option<String>,
    pub language: Option<String>,
    /// Seconds.
    pub timeout: Option<f64>,
    pub working_dir: Option<String>,
    pub stdin: Option<String>,
    /// stdin stays open for `POST /executions/{id}/stdin` (`"stdin": "pipe"`).
    pub stdin_pipe: bool,
    /// Run under a terminal of this size (stdin a pipe too).
    pub tty: Option<TtySize>,
    pub env: Option<BTreeMap<String, String>>,
}

impl From<ExecuteBody> for ExecuteInput {
    fn from(body: ExecuteBody) -> Self {
        ExecuteInput {
            session_id: body.session_id,
            command: body.command,
            code: body.code,
            language: body.language,
            timeout: body.timeout,
            working_dir: body.working_dir,
            stdin: body.stdin,
            stdin_pipe: false,
            tty: None,
            env: body.env,
        }
    }
}

/// A checked request, ready for the runtime.
pub struct Validated {
    pub session_id: SessionId,
    pub request: ExecRequest,
    /// The policy rule that allowed it, and that rule's cooldown.
    pub rule: Rule,
    pub cooldown: Option<Cooldown>,
}

/// Bounds of a command, from the configuration.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub output_cap: u64,
    pub languages: Languages,
}

impl ExecLimits {
    /// A deadline asked for in seconds: the default when none, else within
    /// (0, `MAX_EXEC_TIMEOUT_SECONDS`] (422 `invalid_timeout` otherwise).
    pub fn timeout(&self, seconds: Option<f64>) -> Result<Duration, ApiError> {
        let max = self.max_timeout;
        match seconds {
            None => Ok(self.default_timeout),
            Some(seconds) if seconds > 0.0 && seconds <= max.as_secs_f64() => Ok(Duration::from_secs_f64(seconds)),
            Some(_) => Err(ApiError::invalid(
                "invalid_timeout",
                format!("timeout must be in (0, {}] seconds", max.as_secs_f64()),
            )),
        }
    }

    pub fn of(config: &Config) -> Self {
        ExecLimits {
            default_timeout: config.default_exec_timeout,
            max_timeout: config.max_exec_timeout,
            output_cap: config.max_output_bytes,
            languages: config.languages.clone(),
        }
    }
}

pub struct ExecuteService {
    sessions: Arc<Sessions>,
    rules: Arc<LiveRules>,
    cooldowns: Cooldowns,
    limits: ExecLimits,
}

impl ExecuteService {
    pub fn new(sessions: Arc<Sessions>, rules: Arc<LiveRules>, limits: ExecLimits) -> Self {
        ExecuteService {
            cooldowns: Cooldowns::new(sessions.store().clone()),
            sessions,
            rules,
            limits,
        }
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn limits(&self) -> &ExecLimits {
        &self.limits
    }

    /// Checks everything about the input before anything runs.
    pub fn validate(&self, principal: &Principal, input: ExecuteInput) -> Result<Validated, ApiError> {
        let session_id = SessionId::parse(&input.session_id)?;
        let (argv, stdin) = match (input.command, input.code) {
            (Some(command), None) => {
                if input.language.is_some() {
                    return Err(ApiError::invalid("invalid_request", "`language` goes with `code`"));
                }
                (command, input.stdin.unwrap_or_default())
            }
            (None, Some(code)) => {
                if input.stdin.is_some() {
                    return Err(ApiError::invalid(
                        "invalid_request",
                        "`code` is the stdin of its interpreter",
                    ));
                }
                let language = input
                    .language
                    .ok_or_else(|| ApiError::invalid("invalid_language", "`code` needs a `language`"))?;
                (shell_words::join(self.interpreter(&language)?.as_slice()), code)
            }
            _ => {
                return Err(ApiError::invalid(
                    "invalid_request",
                    "send exactly one of `command` and `code`",
                ))
            }
        };
        let allowed = self.rules.current().check(&argv, principal.caller())?;
        let timeout = self.limits.timeout(input.timeout)?;
        let working_dir = match input.working_dir.as_deref() {
            None => WorkingDir::default(),
            Some(dir) => WorkingDir::parse(dir)?,
        };
        let stdin = stdin.into_bytes();
        if stdin.len() > MAX_STDIN_BYTES {
            return Err(ApiError::invalid(
                "invalid_stdin",
                format!("stdin (or code) is limited to {MAX_STDIN_BYTES} bytes"),
            ));
        }
        let stdin_pipe = input.stdin_pipe || input.tty.is_some();
        if stdin_pipe && !stdin.is_empty() {
            return Err(ApiError::invalid(
                "invalid_stdin",
                "`code` and a stdin pipe do not go together",
            ));
        }
        if let Some(size) = input.tty {
            if !(1..=1000).contains(&size.rows) || !(1..=1000).contains(&size.cols) {
                return Err(ApiError::invalid("invalid_tty", "tty rows and cols are 1 to 1000"));
            }
        }
        // Kept by the agent: its key and buffer come when it starts.
        let keep = stdin_pipe.then(|| Keep {
            stdin_pipe,
            tty: input.tty,
            ..Keep::default()
        });
        let request = ExecRequest {
            argv: allowed.argv.into_vec(),
            working_dir: working_dir.as_str().to_string(),
            env: checked_env(input.env.unwrap_or_default())?,
            stdin,
            timeout,
            output_cap: self.limits.output_cap,
            keep,
        };
        Ok(Validated {
            session_id,
            request,
            rule: allowed.rule,
            cooldown: allowed.cooldown,
        })
    }

    /// The argv of `language`'s interpreter (422 naming the configured ones).
    pub fn interpreter(&self, language: &str) -> Result<&brig_core::policy::Argv, ApiError> {
        let languages = &self.limits.languages;
        languages.interpreter(language).ok_or_else(|| {
            ApiError::invalid(
                "invalid_language",
                format!(
                    "unknown language {language:?}; configured: {}",
                    languages.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Charges the rule's cooldown (in the store, so it holds across
    /// replicas); refused with `Retry-After` while it has not passed.
    pub async fn admit(&self, principal: &Principal, validated: &Validated) -> Result<(), ApiError> {
        // Among nodes, a session another node serves is refused before anything
        // is promised (a 202, a stream's 200) or charged.
        self.sessions
            .check_served_here(&principal.owner(), &validated.session_id)
            .await?;
        let Some(cooldown) = &validated.cooldown else {
            return Ok(());
        };
        let owner = principal.owner();
        let scope = match cooldown.scope {
            Scope::Session => CooldownScope::Session(&owner, &validated.session_id),
            Scope::Principal => CooldownScope::Principal(&owner),
            Scope::Global => CooldownScope::Global,
        };
        let rule = validated.rule.to_string();
        match self.cooldowns.charge(&rule, scope, cooldown.every).await? {
            None => Ok(()),
            Some(left) => Err(ApiError::Cooldown {
                rule,
                retry_after_secs: left.as_secs_f64().ceil() as u64,
            }),
        }
    }

    /// Runs an admitted command in its session (created if needed), following
    /// `hooks`, and writes the audit line.
    pub async fn run_admitted(
        &self,
        principal: &Principal,
        session_id: &SessionId,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<Executed, SessionError> {
        let argv = request.argv.clone();
        let result = self
            .sessions
            .execute_with(&principal.owner(), session_id, request, hooks)
            .await;
        audit(principal, session_id, &argv, &result);
        result
    }

    /// Charges the cooldown, runs the command and answers with its result.
    /// `stop` is cancelled when the process stops waiting (shutdown grace
    /// over): the command is then killed and the answer is `shutting_down`,
    /// never a result that looks like the command's own.
    pub async fn run(
        &self,
        principal: &Principal,
        validated: Validated,
        stop: CancellationToken,
    ) -> Result<ExecuteResponse, ApiError> {
        self.admit(principal, &validated).await?;
        let hooks = ExecHooks {
            cancel: Some(stop),
            output: None,
        };
        let executed = self
            .run_admitted(principal, &validated.session_id, validated.request, hooks)
            .await?;
        if executed.outcome.cancelled {
            return Err(ApiError::ShuttingDown);
        }
        Ok(ExecuteResponse {
            session_id: validated.session_id.to_string(),
            result: ExecutionResult::from(&executed),
        })
    }
}

/// One audit line (target `brig::audit`) per command; the request id comes
/// from the enclosing HTTP span.
fn audit(principal: &Principal, session_id: &SessionId, argv: &[String], result: &Result<Executed, SessionError>) {
    let argv = serde_json::to_string(argv).unwrap_or_default();
    match result {
        Ok(executed) => {
            let outcome = &executed.outcome;
            tracing::info!(
                target: "brig::audit",
                principal = %principal.id,
                session_id = %session_id,
                argv,
                exit_code = outcome.exit_code,
                timed_out = outcome.timed_out,
                cancelled = outcome.cancelled,
                duration_ms = executed.elapsed.as_secs_f64() * 1000.0,
                stdout_bytes = outcome.stdout_bytes,
                stderr_bytes = outcome.stderr_bytes,
                session_created = executed.created,
                "execute"
            );
        }
        Err(err) => tracing::info!(
            target: "brig::audit",
            principal = %principal.id, session_id = %session_id, argv, error = %err,
            "execute failed"
        ),
    }
}
