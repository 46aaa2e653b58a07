//! Among nodes: any node takes any request. A request for a session another
//! node holds is forwarded there, signed with `BRIG_NODE_SECRET`; a new
//! session is placed on the node with the most room; a session whose node is
//! lost answers 503 `node_lost` until it is recreated on a live node.
//!
//! Which node a request is for: the session in its path
//! (`/sessions/{id}/…`), or in its JSON body (`session_id` of `/execute`,
//! `/executions`, `POST /sessions`, `/generate-and-execute`; in the arguments
//! of an MCP tool call, which goes whole to the session's node). Requests that
//! name an execution or a context run here first: when the session turns out
//! to live elsewhere (421 `wrong_node`, naming its node), they are sent on.
//! So is any such request (kept whole: not those under `/sessions/{id}/…`,
//! whose bodies stream) whose session moved under it, up to [`MAX_HOPS`].
//!
//! The hop is plain HTTP(S) to the address the owner announces in the
//! registry, bodies and answers streamed both ways (SSE and the attach
//! WebSocket pass through as they come). It carries
//! the client's own credentials (each node authenticates the caller; the
//! entry node alone charges its rate limit) and a signature over the method,
//! the path, both node ids, a timestamp, a nonce and the credentials: see
//! [`Signer`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use brig_core::config::NodeConfig;
use brig_core::node::{Fleet, NodeRef};
use hmac::{KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The header that marks (and signs) a forwarded request.
pub const FORWARDED: &str = "x-brig-forwarded";
/// Every answer in node mode says which node served it.
pub const SERVED_BY: &str = "x-brig-node";
pub use crate::error::OWNER;
/// Hops a request may take when sessions move under it.
pub const MAX_HOPS: usize = 3;
/// How far a forwarded request's timestamp may be from this node's clock.
const WINDOW_MS: i64 = 30_000;
/// Nonces remembered within the window; past this many, forwarded requests
/// are refused until the window moves on (a bound no honest fleet reaches:
/// several thousand forwarded requests a second).
const MAX_NONCES: usize = 200_000;
/// How long a hop may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a hop's connection may go unanswered before it is dropped.
const DEAD_PEER: Duration = Duration::from_secs(5);
/// How often a hop waiting for its answer looks whether its node was lost.
const LOSS_WATCH: Duration = Duration::from_secs(1);

type HmacSha256 = hmac::Hmac<Sha256>;

/// Signs the requests this node forwards and checks the ones it is sent.
pub struct Signer {
    pub node: String,
    key: Vec<u8>,
    /// Forwarded requests signed before this process started are refused,
    /// so its empty nonce memory cannot be replayed into.
    started_at_ms: i64,
    seen: Mutex<HashMap<[u8; 16], i64>>,
}

/// What the signature covers.
fn message(method: &Method, path: &str, from: &str, to: &str, ts_ms: i64, nonce: &str, headers: &HeaderMap) -> Vec<u8> {
    // The caller's credentials, so that a signature cannot be moved onto
    // another caller's request.
    let mut credentials = Sha256::new();
    for name in [header::AUTHORIZATION.as_str(), "x-api-key"] {
        for value in headers.get_all(name) {
            credentials.update(value.as_bytes());
            credentials.update(b"\n");
        }
    }
    let credentials = hex::encode(credentials.finalize());
    format!("brig-forward-v1\n{method}\n{path}\n{from}\n{to}\n{ts_ms}\n{nonce}\n{credentials}").into_bytes()
}

impl Signer {
    pub fn new(node: &NodeConfig) -> Option<Self> {
        Some(Signer {
            node: node.id.clone(),
            key: node.secret.as_ref()?.expose_secret().as_bytes().to_vec(),
            started_at_ms: chrono::Utc::now().timestamp_millis(),
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn mac(&self, message: &[u8]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(message);
        mac
    }

    /// The [`FORWARDED`] header for a request to node `to`.
    pub fn sign(&self, method: &Method, path: &str, to: &str, headers: &HeaderMap) -> HeaderValue {
        let ts = chrono::Utc::now().timestamp_millis();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let signature = self.mac(&message(method, path, &self.node, to, ts, &nonce, headers));
        let signature = hex::encode(signature.finalize().into_bytes());
        HeaderValue::from_str(&format!("v1 {} {ts} {nonce} {signature}", self.node))
            .expect("node ids and hex are header-safe")
    }

    /// Whether `parts` carries a valid signature for this node, seen for the
    /// first time; why not otherwise.
    pub fn verify(&self, parts: &Parts) -> Result<(), &'static str> {
        let value = parts
            .headers
            .get(FORWARDED)
            .and_then(|v| v.to_str().ok())
            .ok_or("unreadable")?;
        let fields: Vec<&str> = value.split(' ').collect();
        let [version, from, ts, nonce, signature] = fields[..] else {
            return Err("malformed");
        };
        if version != "v1" {
            return Err("unknown version");
        }
        let ts: i64 = ts.parse().map_err(|_| "malformed timestamp")?;
        let now = chrono::Utc::now().timestamp_millis();
        if (now - ts).abs() > WINDOW_MS || ts < self.started_at_ms {
            return Err("outside the time window (are the nodes' clocks in step?)");
        }
        let nonce_bytes: [u8; 16] = hex::decode(nonce)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("malformed nonce")?;
        let signature = hex::decode(signature).map_err(|_| "malformed signature")?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let expected = message(&parts.method, path, from, &self.node, ts, nonce, &parts.headers);
        self.mac(&expected)
            .verify_slice(&signature)
            .map_err(|_| "bad signature")?;
        // Only now, so that unsigned noise cannot fill the memory.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_NONCES / 2 {
            seen.retain(|_, at| now - *at <= WINDOW_MS);
        }
        if seen.len() >= MAX_NONCES {
            return Err("too many forwarded requests in the window");
        }
        if seen.insert(nonce_bytes, ts).is_some() {
            return Err("replayed");
        }
        Ok(())
    }
}

/// Sends requests to other nodes.
pub struct Forwarder {
    pub signer: Signer,
    pub fleet: Fleet,
    client: reqwest::Client,
    /// How long a hop may take to answer with its head: the longest command
    /// and some slack.
    head_timeout: Duration,
}

impl Forwarder {
    /// `None` without `BRIG_NODE_SECRET` (a worker's configuration), or
    /// when `BRIG_NODE_CA` holds no certificate the TLS stack takes.
    pub fn new(node: &NodeConfig, fleet: Fleet, longest_command: Duration) -> Option<Self> {
        let mut client = reqwest::Client::builder();
        if let Some(pem) = &node.ca_pem {
            match reqwest::Certificate::from_pem_bundle(pem) {
                Ok(certificates) => client = client.tls_certs_only(certificates),
                Err(err) => {
                    tracing::error!(%err, "BRIG_NODE_CA: its certificates cannot be used");
                    return None;
                }
            }
        }
        let client = client
            .connect_timeout(CONNECT_TIMEOUT)
            // A node that vanishes under an open connection (cut off, its
            // host gone) is noticed within seconds, not when TCP gives up.
            .tcp_keepalive(Duration::from_secs(2))
            .tcp_keepalive_interval(Duration::from_secs(1))
            .tcp_keepalive_retries(3)
            .tcp_user_timeout(DEAD_PEER)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .ok()?;
        Some(Forwarder {
            signer: Signer::new(node)?,
            fleet,
            client,
            head_timeout: longest_command + Duration::from_secs(60),
        })
    }

    /// Sends the request to `to` and streams its answer back (a WebSocket
    /// is spliced through once both ends are upgraded); 503
    /// `node_unreachable` when the hop fails before an answer.
    pub async fn send(&self, to: &NodeRef, parts: &Parts, body: reqwest::Body) -> Result<Response, ApiError> {
        let upgrade = is_upgrade(parts).then(|| parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned());
        let addr = to
            .addr
            .as_deref()
            .ok_or_else(|| ApiError::NodeUnreachable(format!("node {} has no address on record", to.id)))?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // Signed as it will be sent: the URL parser normalises some paths.
        let url = reqwest::Url::parse(&format!("{addr}{path}"))
            .map_err(|err| ApiError::NodeUnreachable(format!("node {to}: {err}")))?;
        let sent_path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if upgrade.is_some() {
            for name in [header::CONNECTION, header::UPGRADE] {
                if let Some(value) = parts.headers.get(&name) {
                    headers.insert(name, value.clone());
                }
            }
        }
        headers.insert(
            FORWARDED,
            self.signer.sign(&parts.method, &sent_path, &to.id, &parts.headers),
        );
        let sent = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(body)
            .send();
        let answered = tokio::select! {
            answered = tokio::time::timeout(self.head_timeout, sent) => answered,
            () = self.lost(&to.id) => return Err(ApiError::NodeLost(to.id.clone())),
        };
        let answer = match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => return Err(ApiError::NodeUnreachable(format!("node {to}: {}", root_cause(&err)))),
            Err(_) => return Err(ApiError::NodeUnreachable(format!("node {to} did not answer in time"))),
        };
        metrics::counter!(brig_core::metrics::FORWARDED, "to" => to.id.clone()).increment(1);
        let mut response = Response::builder().status(answer.status());
        if let Some(headers) = response.headers_mut() {
            for (name, value) in answer.headers() {
                if !hop_by_hop(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(Some(client)) = upgrade else {
                return Err(ApiError::Internal(
                    "a WebSocket answered to a request that cannot upgrade".into(),
                ));
            };
            if let Some(headers) = response.headers_mut() {
                for name in [header::CONNECTION, header::UPGRADE] {
                    if let Some(value) = answer.headers().get(&name) {
                        headers.insert(name, value.clone());
                    }
                }
            }
            tokio::spawn(splice(client, answer));
            return response
                .body(Body::empty())
                .map_err(|err| ApiError::Internal(err.to_string()));
        }
        Ok(response
            .body(Body::from_stream(answer.bytes_stream()))
            .unwrap_or_else(|err| ApiError::Internal(err.to_string()).into_response()))
    }
}

impl Forwarder {
    /// Resolves once node `id` is lost (or forgotten): a hop waiting on a
    /// node that stopped heartbeating stops waiting.
    async fn lost(&self, id: &str) {
        loop {
            tokio::time::sleep(LOSS_WATCH).await;
            if let Ok(node) = self.fleet.node(id).await {
                if node.is_none_or(|(_, status)| status != brig_core::node::NodeStatus::Live) {
                    return;
                }
            }
        }
    }
}

fn is_upgrade(parts: &Parts) -> bool {
    parts.method == Method::GET && parts.headers.contains_key(header::UPGRADE)
}

/// Copies bytes both ways between the client's upgraded connection and the
/// owner's, until either closes.
async fn splice(client: hyper::upgrade::OnUpgrade, answer: reqwest::Response) {
    let (client, owner) = tokio::join!(client, answer.upgrade());
    let (Ok(client), Ok(mut owner)) = (client, owner) else {
        return;
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    ) || name.as_str() == FORWARDED
}

/// The session a request names in its path: `/sessions/{id}` and below.
pub fn session_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/sessions/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The routes whose JSON body names the session, and whether they create it.
pub fn names_session_in_body(method: &Method, path: &str) -> bool {
    *method == Method::POST && matches!(path, "/execute" | "/executions" | "/sessions" | "/generate-and-execute")
}

/// Whether a request naming a suspended session resumes it (a command, a
/// file, a snapshot, a context): reading its record, renewing, suspending or
/// deleting it, or listing its executions, does not.
pub fn resumes(method: &Method, path: &str) -> bool {
    let Some(id) = session_in_path(path) else {
        // `/execute` and the like: a command.
        return true;
    };
    let rest = &path["/sessions/".len() + id.len()..];
    !matches!(
        (method.as_str(), rest),
        ("GET" | "DELETE", "") | ("POST", "/suspend" | "/renew") | ("GET", "/executions")
    )
}

/// The sandbox a body asks for, as given (the handler checks it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    pub image: Option<String>,
    pub runtime: Option<String>,
    pub memory_limit: Option<String>,
    pub cpu_limit: Option<f64>,
}

/// What a JSON body says of its session: its id, and the sandbox asked for.
pub fn body_session(body: &[u8]) -> (Option<String>, Asked) {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) => session_in(&fields),
        _ => (None, Asked::default()),
    }
}

/// The session and sandbox named by the fields of a body (or of an MCP
/// tool's arguments).
fn session_in(fields: &serde_json::Map<String, serde_json::Value>) -> (Option<String>, Asked) {
    let text = |name: &str| fields.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let asked = Asked {
        image: text("image"),
        runtime: text("runtime"),
        memory_limit: text("memory_limit"),
        cpu_limit: fields.get("cpu_limit").and_then(|v| v.as_f64()),
    };
    (text("session_id"), asked)
}

/// Whether a request is one to the MCP server (which also answers below
/// `/mcp/`).
pub fn is_mcp(method: &Method, path: &str) -> bool {
    *method == Method::POST && (path == "/mcp" || path.starts_with("/mcp/"))
}

/// An MCP request that calls a tool naming a session (`tools/call` of
/// `execute`, `run_code`, `read_file`, `write_file`, `create_session` or
/// `delete_session`): routed like the HTTP request of the same tool.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    /// The JSON-RPC id, for an answer made before the tool runs.
    pub id: serde_json::Value,
    pub session: Option<String>,
    pub asked: Asked,
    /// Whether the tool makes its session when there is none.
    pub creating: bool,
    /// Whether it resumes a suspended session (all but `delete_session`).
    pub resumes: bool,
}

/// The tool call an MCP body makes, when its tool names a session (a batch,
/// a notification, another method or tool: none).
pub fn mcp_call(body: &[u8]) -> Option<McpCall> {
    let message: serde_json::Value = serde_json::from_slice(body).ok()?;
    if message.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    let params = message.get("params")?;
    let name = params.get("name")?.as_str()?;
    let arguments = match params.get("arguments") {
        Some(serde_json::Value::Object(arguments)) => Some(arguments),
        _ => None,
    };
    let creating = match name {
        // A context's session exists already.
        "run_code" => arguments.is_none_or(|arguments| arguments.get("context_id").is_none_or(|id| id.is_null())),
        "execute" | "write_file" | "create_session" => true,
        "read_file" | "delete_session" => false,
        _ => return None,
    };
    let (session, asked) = arguments.map_or_else(|| (None, Asked::default()), session_in);
    Some(McpCall {
        id: message.get("id")?.clone(),
        session,
        asked,
        creating,
        resumes: name != "delete_session",
    })
}

/// The node a 421 names (from our own error, or another node's headers).
pub fn misdirected(response: &Response) -> Option<NodeRef> {
    if response.status() != StatusCode::MISDIRECTED_REQUEST {
        return None;
    }
    if let Some(err) = response.extensions().get::<Arc<ApiError>>() {
        if let ApiError::WrongNode(node) = err.as_ref() {
            return Some(node.clone());
        }
    }
    let header = |name: &str| response.headers().get(name)?.to_str().ok().map(str::to_string);
    Some(NodeRef {
        id: header(OWNER)?,
        addr: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(node: &str) -> Signer {
        Signer {
            node: node.into(),
            key: b"0123456789abcdef0123456789abcdef".to_vec(),
            started_at_ms: chrono::Utc::now().timestamp_millis() - 1000,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn request(method: Method, uri: &str, key: &str) -> Parts {
        let (parts, ()) = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", key)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn signed(from: &Signer, to: &str, mut parts: Parts) -> Parts {
        let path = parts.uri.path_and_query().unwrap().as_str().to_string();
        let value = from.sign(&parts.method, &path, to, &parts.headers);
        parts.headers.insert(FORWARDED, value);
        parts
    }

    #[test]
    fn a_signed_request_holds_once_for_the_node_it_was_signed_for_and_nothing_else() {
        let (a, b, c) = (signer("a"), signer("b"), signer("c"));
        let parts = signed(&a, "b", request(Method::POST, "/execute", "alice-key"));
        assert_eq!(b.verify(&parts), Ok(()));
        assert_eq!(b.verify(&parts), Err("replayed"));
        let fresh = || signed(&a, "b", request(Method::POST, "/execute", "alice-key"));
        assert_eq!(c.verify(&fresh()), Err("bad signature"), "signed for b, not c");
        let mut other_path = fresh();
        other_path.uri = "/sessions/x".parse().unwrap();
        assert_eq!(b.verify(&other_path), Err("bad signature"));
        let mut other_method = fresh();
        other_method.method = Method::DELETE;
        assert_eq!(b.verify(&other_method), Err("bad signature"));
        let mut other_caller = fresh();
        other_caller
            .headers
            .insert("x-api-key", HeaderValue::from_static("bob-key"));
        assert_eq!(
            b.verify(&other_caller),
            Err("bad signature"),
            "moved onto bob's request"
        );
        let mut wrong_key = signer("a");
        wrong_key.key = b"another secret, just as long as the first".to_vec();
        assert_eq!(
            b.verify(&signed(&wrong_key, "b", request(Method::GET, "/x", "k"))),
            Err("bad signature")
        );
        let mut garbage = fresh();
        garbage.headers.insert(FORWARDED, HeaderValue::from_static("v1 a 1 2"));
        assert_eq!(b.verify(&garbage), Err("malformed"));
    }

    #[test]
    fn a_signature_older_than_the_window_or_than_the_process_is_refused() {
        let (a, mut b) = (signer("a"), signer("b"));
        let mut parts = request(Method::GET, "/sessions/s", "k");
        let old = chrono::Utc::now().timestamp_millis() - WINDOW_MS - 1000;
        let nonce = "00112233445566778899aabbccddeeff";
        let message = message(&parts.method, "/sessions/s", "a", "b", old, nonce, &parts.headers);
        let signature = hex::encode(a.mac(&message).finalize().into_bytes());
        parts.headers.insert(
            FORWARDED,
            HeaderValue::from_str(&format!("v1 a {old} {nonce} {signature}")).unwrap(),
        );
        assert!(b.verify(&parts).unwrap_err().starts_with("outside the time window"));
        // A node that started after the request was signed does not take it.
        let parts = signed(&a, "b", request(Method::GET, "/sessions/s", "k"));
        b.started_at_ms = chrono::Utc::now().timestamp_millis() + 1000;
        assert!(b.verify(&parts).unwrap_err().starts_with("outside the time window"));
    }

    #[test]
    fn requests_name_their_session_in_the_path_or_in_the_body() {
        assert_eq!(session_in_path("/sessions/s1/files/a/b"), Some("s1"));
        assert_eq!(session_in_path("/sessions/s1"), Some("s1"));
        assert_eq!(session_in_path("/sessions"), None);
        assert_eq!(session_in_path("/sessions/"), None);
        assert_eq!(session_in_path("/executions/e1"), None);
        assert!(names_session_in_body(&Method::POST, "/execute"));
        assert!(resumes(&Method::POST, "/execute"));
        assert!(resumes(&Method::GET, "/sessions/s1/files/a"));
        assert!(resumes(&Method::POST, "/sessions/s1/snapshots"));
        assert!(!resumes(&Method::GET, "/sessions/s1"));
        assert!(!resumes(&Method::DELETE, "/sessions/s1"));
        assert!(!resumes(&Method::POST, "/sessions/s1/renew"));
        assert!(!resumes(&Method::GET, "/sessions/s1/executions"));
        assert!(!names_session_in_body(&Method::GET, "/sessions"));
        let asked = Asked {
            image: Some("py".into()),
            runtime: Some("runsc".into()),
            memory_limit: Some("1g".into()),
            cpu_limit: Some(0.5),
        };
        assert_eq!(
            body_session(
                br#"{"session_id":"s","runtime":"runsc","image":"py","memory_limit":"1g","cpu_limit":0.5,"command":"ls"}"#
            ),
            (Some("s".into()), asked)
        );
        assert_eq!(body_session(b"not json"), (None, Asked::default()));
        assert_eq!(body_session(br#"{"session_id":7}"#), (None, Asked::default()));
    }

    #[test]
    fn mcp_tool_calls_name_their_session_and_others_do_not() {
        let call = |name: &str, arguments: serde_json::Value| {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}});
            mcp_call(body.to_string().as_bytes())
        };
        let executed = call("execute", serde_json::json!({"session_id": "s", "command": "ls"})).unwrap();
        assert_eq!(executed.id, 7);
        assert_eq!(executed.session.as_deref(), Some("s"));
        assert!(executed.creating);
        let read = call("read_file", serde_json::json!({"session_id": "s", "path": "a"})).unwrap();
        assert!(!read.creating && read.resumes);
        let deleted = call("delete_session", serde_json::json!({"session_id": "s"})).unwrap();
        assert!(!deleted.creating && !deleted.resumes);
        let coded = call("run_code", serde_json::json!({"session_id": "s", "code": "1"})).unwrap();
        assert!(coded.creating);
        let in_context = serde_json::json!({"session_id": "s", "code": "1", "context_id": "c"});
        assert!(!call("run_code", in_context).unwrap().creating);
        assert!(is_mcp(&Method::POST, "/mcp") && is_mcp(&Method::POST, "/mcp/x"));
        assert!(!is_mcp(&Method::POST, "/mcpx") && !is_mcp(&Method::GET, "/mcp"));
        let made = call("create_session", serde_json::json!({"image": "py", "cpu_limit": 0.5})).unwrap();
        assert_eq!(made.session, None);
        assert_eq!(made.asked.image.as_deref(), Some("py"));
        assert_eq!(made.asked.cpu_limit, Some(0.5));
        assert!(made.creating);
        assert_eq!(call("list_sessions", serde_json::json!({})), None);
        let listed = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(mcp_call(listed), None);
        let notified =
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"execute","arguments":{"session_id":"s"}}}"#;
        assert_eq!(mcp_call(notified), None);
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute","arguments":{"session_id":"s"}}}]"#;
        assert_eq!(mcp_call(batch), None);
    }
}
