//! `Idempotency-Key` on `/execute` and `/executions`: a retry with the same
//! key and body from the same principal gets the first answer (kept for
//! `IDEMPOTENCY_TTL_SECONDS`) instead of running the command again; the same
//! key with another body or endpoint is a 422; a duplicate that arrives while
//! the first still runs waits for it (a bounded time). A failed first request
//! is not kept, so its retry runs afresh.
//!
//! A handler reads top to bottom: [`Idempotency::try_processing`] → either
//! the saved answer, or a [`Claim`] on the key: run the request →
//! [`Idempotency::save`]. A claim dropped unsaved (the client went away and
//! its handler with it) releases the key, so the retry runs at once instead
//! of waiting for the marker to expire.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use brig_core::session::Owner;
use brig_core::store::{IdempotencyRecords, Kept, SavedAnswer};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

const HEADER: &str = "idempotency-key";

/// Set on an answer that is a replay of the first one.
const REPLAYED: &str = "idempotent-replayed";

/// How often a duplicate looks for the first request's answer.
const POLL: Duration = Duration::from_millis(100);

/// A request that sent a valid `Idempotency-Key`: the key (1-255 visible
/// ASCII characters) and what identifies "the same request" (route and body).
pub struct IdempotentRequest {
    key: String,
    fingerprint: String,
}

impl IdempotentRequest {
    /// The request's key, if it sent one; the body is hashed only then.
    pub fn from_headers(headers: &HeaderMap, route: &str, body: &impl Serialize) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get(HEADER) else {
            return Ok(None);
        };
        match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Some(IdempotentRequest {
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

/// What the handler does next.
pub enum NextAction {
    /// This is the first request with the key: run it, then [`Idempotency::save`].
    StartProcessing(Claim),
    /// The first request's answer, to return as it is.
    ReturnSavedResponse(Response),
}

/// The first request's hold on its key, from [`Idempotency::try_processing`]
/// to [`Idempotency::save`]. Dropped before that (the request's future was
/// dropped: its client disconnected, and its command was cancelled), it
/// releases the key in the background.
pub struct Claim {
    records: IdempotencyRecords,
    owner: Owner,
    request: IdempotentRequest,
    settled: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (records, owner, key) = (self.records.clone(), self.owner.clone(), self.request.key.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = records.release(&owner, &key).await {
                    tracing::warn!(%err, "could not release an abandoned Idempotency-Key; a retry waits for it to expire");
                }
            });
        }
    }
}

pub struct Idempotency {
    records: IdempotencyRecords,
    /// How long answers are kept.
    ttl: Duration,
}

impl Idempotency {
    pub fn new(records: IdempotencyRecords, ttl: Duration) -> Self {
        Idempotency { records, ttl }
    }

    /// Claims the key for a first request (held at most `running_for`), or
    /// returns the saved answer, waiting for an in-flight first request up to
    /// `running_for`.
    pub async fn try_processing(
        &self,
        owner: &Owner,
        request: IdempotentRequest,
        running_for: Duration,
    ) -> Result<NextAction, ApiError> {
        let give_up = tokio::time::Instant::now() + running_for;
        loop {
            if let Some(saved) = self.records.saved(owner, &request.key).await? {
                // The first ran; its answer was evicted: say so, never run it again.
                let Kept::Present(saved) = saved else {
                    return Err(ApiError::ResultEvicted);
                };
                if saved.fingerprint != request.fingerprint {
                    return Err(ApiError::invalid(
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with another request body or endpoint",
                    ));
                }
                let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
                let mut response = (status, Json(saved.body)).into_response();
                response
                    .headers_mut()
                    .insert(REPLAYED, HeaderValue::from_static("true"));
                return Ok(NextAction::ReturnSavedResponse(response));
            }
            if self.records.begin(owner, &request.key, running_for).await? {
                return Ok(NextAction::StartProcessing(Claim {
                    records: self.records.clone(),
                    owner: owner.clone(),
                    request,
                    settled: false,
                }));
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(ApiError::IdempotencyInProgress);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Keeps a successful first answer for retries, or releases the key after
    /// a failure so that a retry runs afresh; answers with `result` either way.
    pub async fn save<T: Serialize>(
        &self,
        mut claim: Claim,
        status: StatusCode,
        result: Result<T, ApiError>,
    ) -> Result<Response, ApiError> {
        let (owner, key) = (&claim.owner, &claim.request.key);
        let body = match result
            .and_then(|body| serde_json::to_value(body).map_err(|err| ApiError::Internal(err.to_string())))
        {
            Ok(body) => body,
            Err(err) => {
                if let Err(release) = self.records.release(owner, key).await {
                    tracing::warn!(%release, "could not release an Idempotency-Key; a retry waits for it to expire");
                }
                claim.settled = true;
                return Err(err);
            }
        };
        let answer = SavedAnswer {
            fingerprint: claim.request.fingerprint.clone(),
            status: status.as_u16(),
            body,
        };
        if let Err(err) = self.records.save(owner, key, &answer, self.ttl).await {
            tracing::error!(%err, "could not keep an idempotent answer; a retry would run again");
        }
        claim.settled = true;
        Ok((status, Json(answer.body)).into_response())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use brig_core::store::MemoryStore;
    use serde_json::json;

    use super::*;

    fn service() -> Arc<Idempotency> {
        Arc::new(Idempotency::new(
            IdempotencyRecords::new(Arc::new(MemoryStore::new()), 1 << 20),
            Duration::from_secs(3600),
        ))
    }

    fn request(key: &str, body: serde_json::Value) -> IdempotentRequest {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, key.parse().unwrap());
        IdempotentRequest::from_headers(&headers, "/execute", &body)
            .unwrap()
            .unwrap()
    }

    fn owner() -> Owner {
        Owner::of_principal("alice")
    }

    const WAIT: Duration = Duration::from_secs(60);

    /// The claim of a request that must be the first with its key.
    async fn claim(idempotency: &Idempotency, owner: &Owner, request: IdempotentRequest) -> Claim {
        match idempotency.try_processing(owner, request, WAIT).await.unwrap() {
            NextAction::StartProcessing(claim) => claim,
            NextAction::ReturnSavedResponse(_) => panic!("not the first with its key"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_gets_the_first_answer_marked_as_a_replay() {
        let idempotency = service();
        let first = claim(&idempotency, &owner(), request("k", json!({"command": "ls"}))).await;
        let answered = idempotency
            .save(first, StatusCode::ACCEPTED, Ok(json!({"n": 1})))
            .await
            .unwrap();
        assert!(answered.headers().get(REPLAYED).is_none());
        let retry = request("k", json!({"command": "ls"}));
        match idempotency.try_processing(&owner(), retry, WAIT).await.unwrap() {
            NextAction::ReturnSavedResponse(saved) => {
                assert_eq!(saved.status(), StatusCode::ACCEPTED);
                assert_eq!(saved.headers()[REPLAYED], "true");
            }
            NextAction::StartProcessing(_) => panic!("the retry ran again"),
        }
        // Another principal's key of the same name is its own.
        let bobs = request("k", json!({"command": "ls"}));
        claim(&idempotency, &Owner::of_principal("bob"), bobs).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_key_with_another_body_is_refused() {
        let idempotency = service();
        let first = claim(&idempotency, &owner(), request("k", json!({"command": "ls"}))).await;
        idempotency.save(first, StatusCode::OK, Ok(json!({}))).await.unwrap();
        let other = request("k", json!({"command": "id"}));
        match idempotency.try_processing(&owner(), other, WAIT).await {
            Err(ApiError::Invalid { code, .. }) => assert_eq!(code, "idempotency_key_reused"),
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted another body under the same key"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_waits_for_the_first_and_gives_up_at_its_limit() {
        let idempotency = service();
        let first = claim(&idempotency, &owner(), request("k", json!({}))).await;
        // The first never finishes: a duplicate gives up with a 409.
        let started = tokio::time::Instant::now();
        match idempotency
            .try_processing(&owner(), request("k", json!({})), Duration::from_secs(5))
            .await
        {
            Err(ApiError::IdempotencyInProgress) => {}
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("ran while the first still runs"),
        }
        assert!(started.elapsed() >= Duration::from_secs(5));
        // The first finishes while another duplicate waits: it gets the answer.
        let waiting = tokio::spawn({
            let idempotency = idempotency.clone();
            async move {
                idempotency
                    .try_processing(&owner(), request("k", json!({})), WAIT)
                    .await
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        idempotency
            .save(first, StatusCode::OK, Ok(json!({"done": true})))
            .await
            .unwrap();
        assert!(matches!(
            waiting.await.unwrap().unwrap(),
            NextAction::ReturnSavedResponse(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_first_is_not_kept_and_its_retry_runs_afresh() {
        let idempotency = service();
        let first = claim(&idempotency, &owner(), request("k", json!({}))).await;
        let failed = idempotency
            .save::<serde_json::Value>(first, StatusCode::OK, Err(ApiError::SandboxBusy))
            .await;
        assert!(matches!(failed, Err(ApiError::SandboxBusy)));
        claim(&idempotency, &owner(), request("k", json!({}))).await;
    }

    /// Red team L2: a first request whose client went away (its handler, and
    /// so its claim, dropped) held the key for minutes; its retry now runs at
    /// once.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_first_releases_its_key_for_the_retry() {
        let idempotency = service();
        let first = claim(&idempotency, &owner(), request("k", json!({}))).await;
        drop(first);
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        claim(&idempotency, &owner(), request("k", json!({}))).await;
        assert!(started.elapsed() < POLL * 2, "the retry waited {:?}", started.elapsed());
    }
}
