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
