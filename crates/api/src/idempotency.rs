//! `Idempotency-Key` on `POST /execute` and `POST /executions`: a retry with the
//! same key and body from the same principal gets the first answer (kept in the
//! store for `IDEMPOTENCY_TTL_SECONDS`) instead of running the command again; the
//! same key with another body is a 422; a duplicate that arrives while the first
//! still runs waits for it.
//!
//! Store keys: `idempotency:<owner>:<sha256 of the key>` → `{fingerprint,
//! status, body}` of a 2xx answer; `idempotency-run:<...>` → held (SET NX PX)
//! while the first request runs. A failed first request releases it, so a retry
//! runs afresh.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

const HEADER: &str = "idempotency-key";

/// Set on an answer that is a replay of the first one.
const REPLAYED: &str = "idempotent-replayed";

#[derive(Serialize, Deserialize)]
struct Stored {
    fingerprint: String,
    status: u16,
    body: serde_json::Value,
}

/// A request that sent an `Idempotency-Key`: the key, and what identifies
/// "the same request" (the route and the body).
pub struct Idempotent {
    key: String,
    fingerprint: String,
}

/// The request's key (1-255 visible ASCII characters), if it sent one; the
/// body is hashed only then.
pub fn from_request(headers: &HeaderMap, route: &str, body: &impl Serialize) -> Result<Option<Idempotent>, ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(Idempotent {
                key: key.to_string(),
                fingerprint: fingerprint(route, body),
            }))
        }
        _ => Err(ApiError::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )),
    }
}

fn fingerprint(route: &str, body: &impl Serialize) -> String {
    let body = serde_json::to_vec(body).unwrap_or_default();
    hex::encode(
        Sha256::new()
            .chain_update(route)
            .chain_update([0])
            .chain_update(body)
            .finalize(),
    )
}

/// Runs `first`: plainly without a key; with one, once per (principal, key),
/// replaying its 2xx answer to retries. `running_for` bounds how long the first
/// may hold the key (and duplicates wait).
pub async fn once<F, Fut>(
    state: &AppState,
    principal: &Principal,
    idempotent: Option<Idempotent>,
    running_for: Duration,
    first: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let Some(Idempotent { key, fingerprint }) = idempotent else {
        return first().await.map(|(status, body)| (status, Json(body)).into_response());
    };
    let store = state.sessions.store();
    let scope = format!(
        "{}:{}",
        principal.owner().as_str(),
        hex::encode(Sha256::digest(key.as_bytes()))
    );
    let (record_key, run_key) = (format!("idempotency:{scope}"), format!("idempotency-run:{scope}"));
    let store_error = |err| ApiError::from(brig_core::sessions::SessionError::Store(err));
    let give_up = Instant::now() + running_for;
    loop {
        if let Some(raw) = store.get_value(&record_key).await.map_err(store_error)? {
            let stored: Stored = serde_json::from_str(&raw).map_err(|err| ApiError::Internal(err.to_string()))?;
            if stored.fingerprint != fingerprint {
                return Err(ApiError::invalid(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request body or endpoint",
                ));
            }
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let mut response = (status, Json(stored.body)).into_response();
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            return Ok(response);
        }
        if store
            .set_once(&run_key, running_for)
            .await
            .map_err(store_error)?
            .is_none()
        {
            break;
        }
        if Instant::now() >= give_up {
            return Err(ApiError::Status {
                status: StatusCode::CONFLICT,
                code: "idempotency_in_progress",
                detail: "a request with this Idempotency-Key is still running".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match first().await {
        Ok((status, body)) => {
            let stored = Stored {
                fingerprint,
                status: status.as_u16(),
                body,
            };
            let json = serde_json::to_string(&stored).map_err(|err| ApiError::Internal(err.to_string()))?;
            if let Err(err) = store.put_value(&record_key, &json, state.config.idempotency_ttl).await {
                tracing::error!(%err, "could not keep an idempotent answer; a retry would run again");
            }
            Ok((status, Json(stored.body)).into_response())
        }
        Err(err) => {
            // Released: the retry of a failed request runs afresh.
            let _ = store.put_value(&run_key, "", Duration::from_millis(1)).await;
            Err(err)
        }
    }
}
