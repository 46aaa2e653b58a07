//! `POST /mcp`: brig as a Model Context Protocol tool server (streamable HTTP,
//! stateless, JSON answers) with the tools `execute`, `create_session`,
//! `delete_session`, `list_sessions`, `read_file` and `write_file`. The same
//! authentication and rate limit as every endpoint apply (a layer in front of
//! the MCP service puts the [`Principal`] into the request), and every tool goes
//! through the same checks as its HTTP counterpart. A refused call is a tool
//! result with `isError` and `{"error", "detail"}`, like the API's errors.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use brig_core::session::SessionId;
use brig_protocol::{FileReply, FileRequest};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::workspace_path;
use crate::service::execute::ExecuteInput;
use crate::state::AppState;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExecuteArgs {
    /// The session to run in (created if needed).
    pub session_id: String,
    /// A command line (split like a shell would, run without one). Or send `code` and `language`.
    pub command: Option<String>,
    /// Source code fed on stdin to the interpreter of `language`.
    pub code: Option<String>,
    /// A language configured in LANGUAGES (e.g. python, sh).
    pub language: Option<String>,
    /// Deadline in seconds.
    pub timeout: Option<f64>,
    /// Working directory under /workspace or /tmp.
    pub working_dir: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SessionArgs {
    /// The session id.
    pub session_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NewSessionArgs {
    /// The session id; omitted: a random one.
    pub session_id: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EmptyArgs {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReadFileArgs {
    pub session_id: String,
    /// Path relative to /workspace.
    pub path: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WriteFileArgs {
    pub session_id: String,
    /// Path relative to /workspace (parent directories are created).
    pub path: String,
    /// The file's new content (text).
    pub content: String,
}

#[derive(Clone)]
pub struct BrigMcp {
    state: AppState,
    tool_router: ToolRouter<Self>,
}

/// An API error as a tool result the model can read.
fn refused(err: ApiError) -> CallToolResult {
    err.observe();
    CallToolResult::structured_error(json!(err.failure()))
}

fn principal(parts: &Parts) -> Result<Principal, ApiError> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or(ApiError::Unauthorized("missing credentials"))
}

fn session(id: &str) -> Result<SessionId, ApiError> {
    Ok(SessionId::parse(id)?)
}

fn path(raw: &str) -> Result<String, ApiError> {
    workspace_path(raw, false)
}

/// Runs a tool as the request's principal (put there by [`authenticate`]),
/// turning its outcome into a tool result: a refusal is a result with
/// `isError`, never a protocol error.
async fn as_principal<F, Fut>(parts: &Parts, tool: F) -> Result<CallToolResult, ErrorData>
where
    F: FnOnce(Principal) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, ApiError>>,
{
    let result = match principal(parts) {
        Ok(principal) => tool(principal).await,
        Err(err) => Err(err),
    };
    Ok(match result {
        Ok(value) => CallToolResult::structured(value),
        Err(err) => refused(err),
    })
}

#[tool_router]
impl BrigMcp {
    pub fn new(state: AppState) -> Self {
        BrigMcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Run a command (or code in a configured language) in a brig sandbox session; returns exit_code, stdout, stderr, timed_out and timing. The session is created if needed and keeps its /workspace between calls."
    )]
    async fn execute(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ExecuteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let state = &self.state;
        as_principal(&parts, |principal| async move {
            let input = ExecuteInput {
                session_id: args.session_id,
                command: args.command,
                code: args.code,
                language: args.language,
                timeout: args.timeout,
                working_dir: args.working_dir,
                stdin: None,
            };
            let validated = state.execute.validate(&principal, input)?;
            let response = state.execute.run(&principal, validated, state.shutdown.token()).await?;
            serde_json::to_value(response).map_err(|err| ApiError::Internal(err.to_string()))
        })
        .await
    }

    #[tool(description = "Create a brig sandbox session (idempotent); returns its id and expiry.")]
    async fn create_session(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<NewSessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let id = match args.session_id {
                Some(id) => session(&id)?,
                None => SessionId::random(),
            };
            let (record, created) = self.state.sessions.open(&principal.owner(), &id).await?;
            Ok(json!({"session_id": record.session_id, "created": created}))
        })
        .await
    }

    #[tool(description = "Delete a brig session and its sandbox.")]
    async fn delete_session(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let id = session(&args.session_id)?;
            self.state.sessions.delete(&principal.owner(), &id).await?;
            Ok(json!({"session_id": id.to_string(), "deleted": true}))
        })
        .await
    }

    #[tool(description = "List the caller's brig sessions.")]
    async fn list_sessions(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(_): Parameters<EmptyArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let records = self.state.sessions.list(&principal.owner()).await?;
            let ids: Vec<&str> = records.iter().map(|r| r.session_id.as_str()).collect();
            Ok(json!({"sessions": ids}))
        })
        .await
    }

    #[tool(description = "Read a text file under /workspace of a session (at most 1 MiB).")]
    async fn read_file(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ReadFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let request = FileRequest::Read {
                path: path(&args.path)?,
            };
            match self
                .state
                .sessions
                .file(&principal.owner(), &session(&args.session_id)?, request)
                .await?
            {
                FileReply::Data(data) => Ok(json!({"path": args.path, "content": String::from_utf8_lossy(&data)})),
                other => Err(ApiError::SandboxProtocol(format!("unexpected file reply {other:?}"))),
            }
        })
        .await
    }

    #[tool(description = "Write a text file under /workspace of an existing session (at most 1 MiB).")]
    async fn write_file(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<WriteFileArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let data = args.content.into_bytes();
            if data.len() > brig_protocol::MAX_FILE_BYTES {
                return Err(ApiError::invalid("file_too_large", "files are limited to 1 MiB"));
            }
            let request = FileRequest::Write {
                path: path(&args.path)?,
                data,
            };
            self.state
                .sessions
                .file(&principal.owner(), &session(&args.session_id)?, request)
                .await?;
            Ok(json!({"path": args.path, "written": true}))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BrigMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("brig", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of brig: run commands and code in hardened, per-session sandboxes \
                 (no network; /workspace persists within a session).",
            )
    }
}

/// The MCP service for `/mcp`: stateless, JSON answers; Host validation off
/// (every request must authenticate, which a rebinding attacker cannot do).
pub fn service(state: AppState) -> StreamableHttpService<BrigMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    StreamableHttpService::new(move || Ok(BrigMcp::new(state.clone())), Default::default(), config)
}

/// Layer of `/mcp`: authenticates and rate-limits like every endpoint, and
/// hands the [`Principal`] to the tools through the request's extensions.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match <Principal as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await {
        Ok(principal) => {
            parts.extensions.insert(principal);
            request = Request::from_parts(parts, body);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}
