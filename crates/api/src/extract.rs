//! What handlers take from a request besides its body: the authenticated
//! [`Principal`] (which also charges its rate limit), and path parameters
//! parsed into domain types.
//!
//! The extractor needs only the [`Authenticator`] and the limits
//! ([`AuthFailures`] per source address; [`RateLimiter`] and [`Outbox`] per
//! principal), through `FromRef`, never the whole application state.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use brig_core::policy::WorkspacePath;
use brig_core::session::SessionId;

use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;
use crate::outbox::{Outbox, OutboxSlot};
use crate::rate_limit::{AuthFailures, RateLimiter, RateSlot};

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    Arc<RateLimiter>: FromRef<S>,
    Arc<Outbox>: FromRef<S>,
    Arc<AuthFailures>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Admitted already by the routing of node mode.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        admit(parts, state).await
    }
}

/// A request another node forwarded, its signature checked (node mode): the
/// caller was admitted there, so its rate limit and failed authentications
/// are not counted again here (and its source is that node, not the caller).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

/// Authenticates the caller and admits it: failed authentications per source
/// address, the principal's rate limit and its unread answers.
pub async fn admit<S>(parts: &mut Parts, state: &S) -> Result<Principal, ApiError>
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
    Arc<RateLimiter>: FromRef<S>,
    Arc<Outbox>: FromRef<S>,
    Arc<AuthFailures>: FromRef<S>,
{
    if parts.extensions.get::<Forwarded>().is_some() {
        return Arc::<Authenticator>::from_ref(state).authenticate(&parts.headers);
    }
    // Where the connection came from (the server records it; absent when
    // the router is called in-process).
    let source = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let failures = Arc::<AuthFailures>::from_ref(state);
    if let Some(ip) = source {
        failures.admit(ip)?;
    }
    let principal = match Arc::<Authenticator>::from_ref(state).authenticate(&parts.headers) {
        Ok(principal) => principal,
        Err(err) => {
            if let Some(ip) = source {
                failures.failed(ip);
            }
            return Err(err);
        }
    };
    let (admitted, info) = Arc::<RateLimiter>::from_ref(state).check(&principal.id);
    // The router's rate-limit layer copies this onto the response.
    if let Some(slot) = parts.extensions.get::<RateSlot>() {
        slot.set(info);
    }
    admitted?;
    // The router's outbox layer counts this principal's unread answer.
    if let Some(slot) = parts.extensions.get::<OutboxSlot>() {
        slot.set(&principal.id);
    }
    Arc::<Outbox>::from_ref(state).admit(&principal.id)?;
    Ok(principal)
}

/// A session id from the path: one that cannot be valid cannot exist either,
/// so it is a 404 like an unknown one.
pub fn session_in_path(id: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(id).map_err(|_| ApiError::NotFound("session"))
}

/// A path under `/workspace` (422 `invalid_path` otherwise).
pub fn workspace_path(raw: &str, allow_empty: bool) -> Result<String, ApiError> {
    WorkspacePath::parse(raw, allow_empty)
        .map(|path| path.as_str().to_string())
        .map_err(|detail| ApiError::invalid("invalid_path", detail))
}
