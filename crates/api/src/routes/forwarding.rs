//! The routing middleware of node mode (see [`crate::forward`]): each
//! request goes to the node that serves its session.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use brig_core::node::{NodeRef, NodeStatus, Placement, Want};
use brig_core::session::SessionId;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::Forwarded;
use crate::forward::{
    body_session, is_mcp, mcp_call, misdirected, names_session_in_body, resumes, session_in_path, Asked, Forwarder,
    FORWARDED, MAX_HOPS, SERVED_BY,
};
use crate::state::AppState;

/// Where a request goes.
enum Plan {
    Here,
    There(NodeRef),
}

/// Middleware: routes each request to the node that serves it.
pub async fn route(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(node) = state.config.node.as_ref() else {
        return next.run(request).await;
    };
    let me = node.id.clone();
    let served_by = |mut response: Response| {
        if let Ok(value) = HeaderValue::from_str(&me) {
            response.headers_mut().entry(SERVED_BY).or_insert(value);
        }
        response
    };
    let Some(forwarder) = state.forwarder.clone() else {
        return served_by(next.run(request).await);
    };
    let (mut parts, body) = request.into_parts();
    if parts.headers.contains_key(FORWARDED) {
        return match forwarder.signer.verify(&parts) {
            Ok(()) => {
                parts.extensions.insert(Forwarded);
                served_by(next.run(Request::from_parts(parts, body)).await)
            }
            Err(why) => {
                tracing::warn!(why, "refused a forwarded request");
                ApiError::ForwardRefused(why).into_response()
            }
        };
    }
    match routed(&state, &forwarder, parts, body, next).await {
        Ok(response) => served_by(response),
        Err(err) => served_by(err.into_response()),
    }
}

async fn routed(
    state: &AppState,
    forwarder: &Forwarder,
    mut parts: Parts,
    body: Body,
    next: Next,
) -> Result<Response, ApiError> {
    let path = parts.uri.path().to_string();
    if let Some(id) = session_in_path(&path) {
        // Bodies here may be large uploads: decided before the body is read,
        // and streamed to wherever the session is.
        let creating = false;
        let resuming = resumes(&parts.method, &path);
        let plan = plan(
            state,
            forwarder,
            &mut parts,
            id,
            (creating, resuming),
            &Asked::default(),
        )
        .await?;
        return match plan {
            Plan::Here => Ok(next.run(Request::from_parts(parts, body)).await),
            Plan::There(to) => {
                forwarder
                    .send(&to, &parts, reqwest::Body::wrap_stream(body.into_data_stream()))
                    .await
            }
        };
    }
    if !forwardable(&parts.method, &path) {
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    // The caller first, as the handlers would: nobody's body is read before.
    admitted(state, &mut parts).await?;
    // The rest is small enough to keep, so that it can be sent on if the
    // session turns out to be elsewhere.
    let limit = state.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        // The handler answers 413.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    let mcp = is_mcp(&parts.method, &path);
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(err) if mcp => return Ok(crate::mcp::unread(limit, &err)),
        Err(err) if crate::mcp::is_over_limit(&err) => return Err(ApiError::PayloadTooLarge),
        Err(err) => {
            return Err(ApiError::invalid(
                "invalid_body",
                format!("the body could not be read: {err}"),
            ))
        }
    };
    if mcp {
        return Ok(mcp_routed(state, forwarder, parts, body, next).await);
    }
    let mut first = Plan::Here;
    if names_session_in_body(&parts.method, &path) {
        let (session, asked) = body_session(&body);
        let creating = true;
        match session {
            Some(id) => first = plan(state, forwarder, &mut parts, &id, (creating, true), &asked).await?,
            // A new session with a made-up id: wherever there is room.
            None if path == "/sessions" => first = place_new(state, forwarder, &mut parts, &asked).await?,
            None => {}
        }
    }
    let mut response = match first {
        Plan::Here => {
            next.run(Request::from_parts(parts.clone(), Body::from(body.clone())))
                .await
        }
        Plan::There(to) => forwarder.send(&to, &parts, body.clone().into()).await?,
    };
    // The session moved (or was made) elsewhere meanwhile: follow it.
    for _ in 1..MAX_HOPS {
        let Some(to) = misdirected(&response) else {
            return Ok(response);
        };
        if to.id == forwarder.signer.node {
            return Ok(response);
        }
        // A node the registry never heard of (a single host's record): the
        // 421 stands.
        if forwarder.fleet.node(&to.id).await?.is_none() {
            return Ok(response);
        }
        let to = live(forwarder, &to.id).await?;
        response = forwarder.send(&to, &parts, Bytes::clone(&body).into()).await?;
    }
    Ok(response)
}

/// An MCP request: a tool call naming a session goes whole to the node that
/// serves it, as its HTTP counterpart would (a new session to where
/// placement puts it); the rest is served here. What stops it on the way is
/// the tool result with `isError` the tool would give.
async fn mcp_routed(state: &AppState, forwarder: &Forwarder, mut parts: Parts, body: Bytes, next: Next) -> Response {
    let Some(call) = mcp_call(&body) else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let planned = match &call.session {
        Some(id) => {
            plan(
                state,
                forwarder,
                &mut parts,
                id,
                (call.creating, call.resumes),
                &call.asked,
            )
            .await
        }
        None if call.creating => place_new(state, forwarder, &mut parts, &call.asked).await,
        None => Ok(Plan::Here),
    };
    let sent = match planned {
        Ok(Plan::Here) => Ok(next
            .run(Request::from_parts(parts.clone(), Body::from(body.clone())))
            .await),
        Ok(Plan::There(to)) => forwarder.send(&to, &parts, body.clone().into()).await,
        Err(err) => Err(err),
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => return crate::mcp::refusal(call.id, err),
    };
    // The session moved between the lookup and the tool call (the tool's
    // refusal says `wrong_node`): it is followed, as HTTP's 421 is.
    let Some(session) = call.session.as_deref().and_then(|id| SessionId::parse(id).ok()) else {
        return response;
    };
    for _ in 1..MAX_HOPS {
        let misdirected;
        (response, misdirected) = wrong_node(response, &call.id).await;
        if !misdirected {
            return response;
        }
        let Some(principal) = parts.extensions.get::<Principal>() else {
            return response;
        };
        let to = match state.sessions.store().get(&principal.owner(), &session).await {
            Ok(Some(record)) => record.node,
            Ok(None) => None,
            Err(err) => return crate::mcp::refusal(call.id, err.into()),
        };
        let Some(to) = to.filter(|to| *to != forwarder.signer.node) else {
            return response;
        };
        response = match live(forwarder, &to).await {
            Ok(to) => match forwarder.send(&to, &parts, body.clone().into()).await {
                Ok(response) => response,
                Err(err) => return crate::mcp::refusal(call.id, err),
            },
            Err(err) => return crate::mcp::refusal(call.id, err),
        };
    }
    response
}

/// The largest MCP answer looked into for a `wrong_node` refusal (one is a
/// few hundred bytes).
const REFUSAL_BYTES: usize = 64 * 1024;

/// `response`, and whether it is an MCP tool's `wrong_node` refusal (a small
/// JSON answer is read to tell; any other is passed on untouched).
async fn wrong_node(response: Response, id: &serde_json::Value) -> (Response, bool) {
    use http_body::Body as _;
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let size = response.body().size_hint().exact().or(declared);
    if !response.status().is_success() || size.is_none_or(|size| size > REFUSAL_BYTES as u64) {
        return (response, false);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, REFUSAL_BYTES).await {
        Ok(bytes) => {
            let misdirected = crate::mcp::is_wrong_node(&bytes);
            (Response::from_parts(parts, Body::from(bytes)), misdirected)
        }
        Err(err) => (
            crate::mcp::refusal(id.clone(), ApiError::NodeUnreachable(err.to_string())),
            false,
        ),
    }
}

/// Authenticates the caller here (charging its rate limit once: the handler
/// takes the [`Principal`] from the request), then looks up the session.
/// `creating`: the request makes the session when there is none;
/// `resuming`: it resumes a suspended one (see [`resumes`]).
async fn plan(
    state: &AppState,
    forwarder: &Forwarder,
    parts: &mut Parts,
    id: &str,
    (creating, resuming): (bool, bool),
    asked: &Asked,
) -> Result<Plan, ApiError> {
    let principal = admitted(state, parts).await?;
    let Ok(id) = SessionId::parse(id) else {
        // The handler says what is wrong with it.
        return Ok(Plan::Here);
    };
    let sessions = &state.sessions;
    let me = &forwarder.signer.node;
    match sessions.store().get(&principal.owner(), &id).await? {
        // Suspended, and only read, renewed, suspended or deleted: any node
        // serves its record.
        Some(record) if record.is_parked() && !resuming => Ok(Plan::Here),
        // Suspended, its workspace where every node reads it: resumed where
        // placement sends it (the resume moves it there).
        Some(record) if record.is_parked() && state.config.snapshots.shared_between_nodes() => {
            place(
                state,
                forwarder,
                parts,
                &Want::of(&state.config.sandbox, &record.options),
            )
            .await
        }
        // Suspended, its workspace in its node's own snapshots: resumed there.
        Some(record) => match &record.node {
            Some(node) if node != me => Ok(Plan::There(live(forwarder, node).await?)),
            // Ours; or a single host's from before node mode, which the
            // handler refuses (421).
            _ => Ok(Plan::Here),
        },
        None if creating => place_new(state, forwarder, parts, asked).await,
        None => Ok(Plan::Here),
    }
}

/// A new session with the sandbox `asked`: placed, unless the handler
/// refuses what it asks for.
async fn place_new(
    state: &AppState,
    forwarder: &Forwarder,
    parts: &mut Parts,
    asked: &Asked,
) -> Result<Plan, ApiError> {
    let options = state.config.sandbox.session_options(
        asked.image.as_deref(),
        asked.runtime.as_deref(),
        asked.memory_limit.as_deref(),
        asked.cpu_limit,
    );
    match options {
        Ok(options) => place(state, forwarder, parts, &Want::of(&state.config.sandbox, &options)).await,
        Err(_) => Ok(Plan::Here),
    }
}

/// A new (or resumed) session goes to the live node with the most room for
/// it; 503 `capacity_exhausted` when nodes offer what it needs but none has
/// room, or none but this drained one does. When no node offers its runtime
/// and image, this one's own checks answer.
async fn place(state: &AppState, forwarder: &Forwarder, parts: &mut Parts, want: &Want) -> Result<Plan, ApiError> {
    admitted(state, parts).await?;
    let me = &forwarder.signer.node;
    match forwarder.fleet.place(want).await? {
        Placement::On(node) if node.id != *me => Ok(Plan::There(node)),
        Placement::On(_) => Ok(Plan::Here),
        Placement::Full => Err(ApiError::CapacityExhausted),
        Placement::Nowhere if forwarder.fleet.registry().draining(me).await? => Err(ApiError::CapacityExhausted),
        Placement::Nowhere => Ok(Plan::Here),
    }
}

/// Node `id` at the address it announces (never one a record or another
/// node's answer names); 503 `node_lost` for a node silent past the loss
/// timeout (or forgotten).
async fn live(forwarder: &Forwarder, id: &str) -> Result<NodeRef, ApiError> {
    match forwarder.fleet.node(id).await? {
        Some((node, NodeStatus::Live)) => Ok(NodeRef {
            id: node.node_id,
            addr: Some(node.addr),
        }),
        _ => Err(ApiError::NodeLost(id.to_string())),
    }
}

/// The requests whose session may be on another node that the handler alone
/// finds (besides `/sessions/{id}/…`): those naming it in their body (MCP's
/// in its tool's arguments), an execution or a context. Others (health,
/// snapshots, nodes) are served here.
fn forwardable(method: &axum::http::Method, path: &str) -> bool {
    names_session_in_body(method, path)
        || is_mcp(method, path)
        || path.starts_with("/executions/")
        || path.starts_with("/contexts/")
}

/// The caller, authenticated and admitted once per request.
async fn admitted(state: &AppState, parts: &mut Parts) -> Result<Principal, ApiError> {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return Ok(principal.clone());
    }
    let principal = crate::extract::admit(parts, state).await?;
    parts.extensions.insert(principal.clone());
    Ok(principal)
}
