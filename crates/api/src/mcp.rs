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
use rmcp::model::{CallToolResult, Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::workspace_path;
use crate::service::execute::ExecuteInput;
use crate::service::sessions::open_session;
use crate::state::AppState;
use crate::views::{CreateSessionBody, SessionList};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExecuteArgs {
    /// The session to run in (created if needed).
    pub session_id: String,
    /// A command line (split like a shell would, run without one). Or send `code` and `language`.
    pub command: Option<String>,
    /// Source code fed on stdin to the interpreter of `language`.
    pub code: Option<String>,
    /// The language of `code`: one of LANGUAGES whose interpreter is allowed (the schema lists them).
    pub language: Option<String>,
    /// Deadline in seconds.
    pub timeout: Option<f64>,
    /// Working directory under /workspace or /tmp.
    pub working_dir: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCodeArgs {
    /// The session to run in (created if needed; its image must have python3).
    pub session_id: String,
    /// Python source; the repr of a last expression comes back as `result`.
    pub code: String,
    /// A context to run in (from an earlier run_code): its variables are
    /// still there. Omitted: a new context.
    pub context_id: Option<String>,
    /// Deadline in seconds; past it the cell is interrupted.
    pub timeout: Option<f64>,
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
    /// The sandbox image: CONTAINER_IMAGE (the default) or one of ALLOWED_IMAGES.
    pub image: Option<String>,
    /// The OCI runtime: CONTAINER_RUNTIME (the default) or one of ALLOWED_RUNTIMES (e.g. runsc).
    pub runtime: Option<String>,
    /// Memory, like `200m`; clamped to CONTAINER_MEM_LIMIT.
    pub memory_limit: Option<String>,
    /// CPUs; clamped to CONTAINER_CPU_LIMIT.
    pub cpu_limit: Option<f64>,
    /// Egress: hosts the session's commands may reach through the sandbox's
    /// proxy (`pypi.org`, `*.pythonhosted.org`, `api.example.com:443`, a CIDR),
    /// within EGRESS_ALLOWED; none by default.
    pub allow_hosts: Option<Vec<String>>,
    /// Environment variables every command of the session gets.
    pub env: Option<std::collections::BTreeMap<String, String>>,
}

impl From<NewSessionArgs> for CreateSessionBody {
    fn from(args: NewSessionArgs) -> Self {
        CreateSessionBody {
            session_id: args.session_id,
            memory_limit: args.memory_limit,
            cpu_limit: args.cpu_limit,
            image: args.image,
            runtime: args.runtime,
            network: args.allow_hosts.map(|allow| crate::views::NetworkBody { allow }),
            from_snapshot: None,
            ttl_seconds: None,
            env: args.env,
        }
    }
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

fn to_value(value: impl serde::Serialize) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|err| ApiError::Internal(err.to_string()))
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
                ..ExecuteInput::default()
            };
            let validated = state.execute.validate(&principal, input)?;
            let response = state.execute.run(&principal, validated, state.shutdown.token()).await?;
            to_value(response)
        })
        .await
    }

    #[tool(
        description = "Create a brig sandbox session (idempotent), optionally with another image (e.g. one with more tools), runtime or limits; returns what GET /sessions/{id} does (session_id, created_at, expires_at, image, runtime, memory_limit, cpu_limit) and whether it was created. execute creates sessions with the defaults by itself."
    )]
    async fn create_session(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<NewSessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let state = &self.state;
        as_principal(&parts, |principal| async move {
            let (view, created) = open_session(state.session_setup(&principal), &principal, args.into()).await?;
            let mut value = to_value(view)?;
            value["created"] = created.into();
            Ok(value)
        })
        .await
    }

    #[tool(
        description = "Run Python code in a stateful context of a brig session: variables persist from one call to the next when the same context_id is passed back. Returns context_id, stdout, stderr, result (the repr of a last expression) and error (name, message, traceback)."
    )]
    async fn run_code(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<RunCodeArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let state = &self.state;
        as_principal(&parts, |principal| async move {
            let timeout = state.execute.limits().timeout(args.timeout)?;
            let context_id = match args.context_id {
                Some(id) => id,
                None => state.contexts.create(&principal, &args.session_id, "python").await?,
            };
            let ran = state
                .contexts
                .run(&principal.owner(), &context_id, args.code, timeout)
                .await?;
            let mut value = to_value(ran)?;
            value["context_id"] = context_id.into();
            Ok(value)
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

    #[tool(description = "List the caller's brig sessions, as GET /sessions does.")]
    async fn list_sessions(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(_): Parameters<EmptyArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        as_principal(&parts, |principal| async move {
            let records = self.state.sessions.list(&principal.owner()).await?;
            to_value(SessionList {
                sessions: records.iter().map(|record| self.state.session_view(record)).collect(),
            })
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

    #[tool(
        description = "Write a text file under /workspace of a session (at most 1 MiB), creating the session if needed, as execute does."
    )]
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
            let id = session(&args.session_id)?;
            let sessions = &self.state.sessions;
            sessions.open(&principal.owner(), &id).await?;
            sessions.file(&principal.owner(), &id, request).await?;
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
/// `execute` advertises exactly the languages that can run (`languages`).
pub fn service(state: AppState, languages: &[&str]) -> StreamableHttpService<BrigMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_body_bytes)
        .disable_allowed_hosts();
    let mut tools = BrigMcp::tool_router();
    if let Some(execute) = tools.map.get_mut("execute") {
        execute.attr.input_schema = Arc::new(with_languages(&execute.attr.input_schema, languages));
    }
    StreamableHttpService::new(
        move || {
            Ok(BrigMcp {
                state: state.clone(),
                tool_router: tools.clone(),
            })
        },
        Default::default(),
        config,
    )
}

/// `execute`'s input schema with `language` limited to `languages`, or
/// without `code` and `language` at all when none can run.
fn with_languages(schema: &JsonObject, languages: &[&str]) -> JsonObject {
    let mut schema = schema.clone();
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return schema;
    };
    if languages.is_empty() {
        properties.remove("code");
        properties.remove("language");
        return schema;
    }
    if let Some(language) = properties.get_mut("language").and_then(|l| l.as_object_mut()) {
        // Still optional: null stays valid, as schemars had it.
        let mut allowed = json!(languages);
        allowed.as_array_mut().expect("an array").push(serde_json::Value::Null);
        language.insert("type".into(), json!(["string", "null"]));
        language.insert("enum".into(), allowed);
        language.insert(
            "description".into(),
            json!(format!("The language of `code`: {}.", languages.join(", "))),
        );
    }
    schema
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

/// JSON-RPC 2.0's codes for a body that is not JSON and for one that is not a
/// request this server takes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INTERNAL_ERROR: i64 = -32603;

/// Layer of `/mcp` in front of the MCP service: whatever the transport refuses
/// is answered as a JSON-RPC error (`{"jsonrpc", "id", "error": {"code",
/// "message"}}`) with the HTTP status that fits, never as plain text: a
/// method other than POST (405), a client that does not take JSON (406),
/// another content type (415), a body over `MAX_REQUEST_BYTES` (413), a body
/// that is not JSON (400, -32700) or not a JSON-RPC message (400, -32600).
/// brig answers JSON whatever else the client takes, so `Accept` need not
/// also list `text/event-stream`.
pub async fn protocol(State(body_limit): State<usize>, request: Request, next: Next) -> Response {
    use axum::http::{header, HeaderValue, Method, StatusCode};

    if request.method() != Method::POST {
        let mut response = jsonrpc_error(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            "MCP here is POST only (a stateless server: no GET stream, no DELETE)",
            None,
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let (mut parts, body) = request.into_parts();
    if !accepts_json(&parts.headers) {
        return jsonrpc_error(
            StatusCode::NOT_ACCEPTABLE,
            INVALID_REQUEST,
            "answers are application/json: Accept must allow it",
            None,
        );
    }
    parts.headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if !crate::json::is_json(&parts.headers) {
        return jsonrpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            INVALID_REQUEST,
            "Content-Type must be application/json",
            None,
        );
    }
    let bytes = match axum::body::to_bytes(body, body_limit).await {
        Ok(bytes) => bytes,
        Err(err) => return unread(body_limit, &err),
    };
    let message: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(err) => {
            return jsonrpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, format!("not JSON: {err}"), None);
        }
    };
    let id = message.get("id").cloned();
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_success() || crate::json::is_json(response.headers()) {
        return response;
    }
    // The transport's other refusals are plain text: carry them over.
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|text| String::from_utf8_lossy(&text).into_owned())
        .unwrap_or_default();
    match status {
        // A well-formed JSON body the transport could not take as a message.
        StatusCode::UNSUPPORTED_MEDIA_TYPE => jsonrpc_error(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("not a JSON-RPC 2.0 request or notification: {text}"),
            id,
        ),
        status if status.is_client_error() => jsonrpc_error(status, INVALID_REQUEST, text, id),
        status => jsonrpc_error(status, INTERNAL_ERROR, text, id),
    }
}

/// The answer to a body that could not be read: over `body_limit` bytes
/// (413), or cut short (400).
pub fn unread(body_limit: usize, err: &axum::Error) -> Response {
    if is_over_limit(err) {
        jsonrpc_error(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            format!("the body is over {body_limit} bytes (MAX_REQUEST_BYTES)"),
            None,
        )
    } else {
        jsonrpc_error(
            axum::http::StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("the body could not be read: {err}"),
            None,
        )
    }
}

/// Whether an MCP answer is a tool call's refusal with `wrong_node` (its
/// session lives on another node).
pub fn is_wrong_node(body: &[u8]) -> bool {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let wrong_node = ApiError::WrongNode(brig_core::node::NodeRef {
        id: String::new(),
        addr: None,
    });
    let result = &message["result"];
    result["isError"] == true && result["structuredContent"]["error"] == wrong_node.code()
}

/// The answer to the tool call `id` refused before its tool ran (by the
/// routing of node mode): the tool result with `isError` the tool itself
/// would have given.
pub fn refusal(id: serde_json::Value, err: ApiError) -> Response {
    let result = serde_json::to_value(refused(err)).unwrap_or_default();
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

fn jsonrpc_error(
    status: axum::http::StatusCode,
    code: i64,
    message: impl Into<String>,
    id: Option<serde_json::Value>,
) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(serde_json::Value::Null),
        "error": {"code": code, "message": message.into()},
    });
    (status, axum::Json(body)).into_response()
}

/// Whether reading a body failed because it was over the limit (rather than
/// cut short by the client).
pub(crate) fn is_over_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether `Accept` (absent: anything) allows `application/json`.
fn accepts_json(headers: &axum::http::HeaderMap) -> bool {
    let mut ranges = headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter(|range| !excluded(range))
        .map(|range| range.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .peekable();
    ranges.peek().is_none()
        || ranges.any(|range| matches!(range.as_str(), "application/json" | "application/*" | "*/*"))
}

/// A media range with weight zero (`q=0`) is one the client refuses.
fn excluded(range: &str) -> bool {
    range.split(';').skip(1).any(|param| {
        param
            .trim()
            .strip_prefix("q=")
            .and_then(|q| q.trim().parse::<f32>().ok())
            .is_some_and(|q| q == 0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_node_refusal_is_told_from_other_answers() {
        let answer = |err: ApiError| {
            let result = serde_json::to_value(refused(err)).unwrap();
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": result})).unwrap()
        };
        let node = brig_core::node::NodeRef {
            id: "n2".into(),
            addr: None,
        };
        assert!(is_wrong_node(&answer(ApiError::WrongNode(node))));
        assert!(!is_wrong_node(&answer(ApiError::NotFound("session"))));
        assert!(!is_wrong_node(
            br#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"error":"wrong_node"}}}"#
        ));
        assert!(!is_wrong_node(b"not json"));
    }

    #[test]
    fn accept_allows_json_when_absent_or_listed_with_or_without_wildcards() {
        let headers = |values: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for value in values {
                headers.append(axum::http::header::ACCEPT, value.parse().unwrap());
            }
            headers
        };
        assert!(accepts_json(&headers(&[])));
        assert!(accepts_json(&headers(&["application/json"])));
        assert!(accepts_json(&headers(&[
            "text/event-stream",
            "Application/JSON; q=0.5"
        ])));
        assert!(accepts_json(&headers(&["text/html, */*;q=0.1"])));
        assert!(accepts_json(&headers(&["application/*"])));
        assert!(!accepts_json(&headers(&["text/event-stream"])));
        assert!(!accepts_json(&headers(&["text/html, application/xml"])));
        assert!(!accepts_json(&headers(&["application/json;q=0, text/event-stream"])));
    }

    #[test]
    fn execute_advertises_only_the_languages_given() {
        let tools = BrigMcp::tool_router();
        let original = &tools.map["execute"].attr.input_schema;
        let schema = with_languages(original, &["python", "sh"]);
        let language = &schema["properties"]["language"];
        assert_eq!(language["enum"], json!(["python", "sh", null]));
        assert_eq!(language["type"], json!(["string", "null"]));
        assert!(language["description"].as_str().unwrap().contains("python, sh"));
        // None can run: no code to offer at all.
        let none = with_languages(original, &[]);
        assert!(none["properties"].get("language").is_none() && none["properties"].get("code").is_none());
        assert!(none["properties"].get("command").is_some());
    }
}
