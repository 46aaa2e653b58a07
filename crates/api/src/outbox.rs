//! Answer bytes each principal has not read yet (red team H4).
//!
//! A large answer is handed to the connection in chunks, so what a client
//! has not read stays counted against its principal until it reads it or
//! its connection is dropped (the server drops a connection whose client
//! reads nothing for `HTTP_WRITE_TIMEOUT_SECONDS`). While a principal has
//! `MAX_UNREAD_RESPONSE_BYTES` or more waiting, its new requests get 429
//! `unread_responses`: a tenant that asks and never reads cannot fill
//! brig-api's memory, and other principals do not notice it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};

use crate::error::ApiError;

/// Answers smaller than this are written whole and not counted.
const CHUNK: usize = 64 << 10;

pub struct Outbox {
    limit: u64,
    unread: Mutex<HashMap<Arc<str>, u64>>,
}

impl Outbox {
    pub fn new(limit: u64) -> Self {
        Outbox {
            limit,
            unread: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses `principal` while it leaves `MAX_UNREAD_RESPONSE_BYTES` unread.
    pub fn admit(&self, principal: &str) -> Result<(), ApiError> {
        if self.unread(principal) >= self.limit {
            return Err(ApiError::UnreadResponses);
        }
        Ok(())
    }

    /// Bytes `principal` has not read yet.
    pub fn unread(&self, principal: &str) -> u64 {
        self.table().get(principal).copied().unwrap_or(0)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.unread.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `bytes` more for `principal`, unless that would take it past
    /// the limit while it already has answers unread (one answer larger than
    /// the limit by itself still goes out). Checked and counted at once, so
    /// that answers finishing together cannot all slip in.
    fn try_add(&self, principal: &Arc<str>, bytes: u64) -> bool {
        let mut table = self.table();
        let unread = table.entry(Arc::clone(principal)).or_default();
        if *unread > 0 && *unread + bytes > self.limit {
            return false;
        }
        *unread += bytes;
        true
    }

    fn sub(&self, principal: &str, bytes: u64) {
        let mut table = self.table();
        if let Some(count) = table.get_mut(principal) {
            *count = count.saturating_sub(bytes);
            if *count == 0 {
                table.remove(principal);
            }
        }
    }
}

/// Where the `Principal` extractor names the caller, for [`track`].
#[derive(Clone, Default)]
pub struct OutboxSlot(Arc<Mutex<Option<Arc<str>>>>);

impl OutboxSlot {
    pub fn set(&self, principal: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(principal.into());
    }

    fn take(&self) -> Option<Arc<str>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Middleware: counts an authenticated request's large answer against its
/// principal until the client has read it.
pub async fn track(
    State(outbox): State<Arc<Outbox>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let slot = OutboxSlot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let Some(principal) = slot.take() else {
        return response;
    };
    // Only whole answers (JSON, a file) are counted; streams are produced as
    // they are read and never pile up.
    match response.body().size_hint().exact() {
        Some(size) if size > CHUNK as u64 => {}
        _ => return response,
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = collected.to_bytes();
    if !outbox.try_add(&principal, bytes.len() as u64) {
        // Requests admitted together, whose answers would pile up past the
        // limit: this one is dropped (the command ran; an Idempotency-Key's
        // retry gets the kept answer).
        return ApiError::UnreadResponses.into_response();
    }
    Response::from_parts(
        parts,
        Body::new(Unread {
            rest: bytes,
            outbox,
            principal,
        }),
    )
}

/// An answer handed out a chunk at a time, counted until handed out.
struct Unread {
    rest: Bytes,
    outbox: Arc<Outbox>,
    principal: Arc<str>,
}

impl http_body::Body for Unread {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let take = self.rest.len().min(CHUNK);
        let chunk = self.rest.split_to(take);
        self.outbox.sub(&self.principal, take as u64);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        self.outbox.sub(&self.principal, self.rest.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn unread(outbox: &Arc<Outbox>, size: usize) -> Unread {
        let principal: Arc<str> = "alice".into();
        // Counted as the middleware would, without its limit.
        *outbox.table().entry(Arc::clone(&principal)).or_default() += size as u64;
        Unread {
            rest: Bytes::from(vec![7; size]),
            outbox: Arc::clone(outbox),
            principal,
        }
    }

    #[tokio::test]
    async fn unread_bytes_count_until_read_or_dropped() {
        let outbox = Arc::new(Outbox::new(300 << 10));
        let mut body = unread(&outbox, 200 << 10);
        assert!(outbox.admit("alice").is_ok());
        let dropped = unread(&outbox, 150 << 10);
        assert_eq!(outbox.admit("alice").unwrap_err().code(), "unread_responses");
        assert!(outbox.admit("bob").is_ok(), "other principals are not affected");
        drop(dropped);
        assert!(outbox.admit("alice").is_ok());
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), CHUNK);
        assert_eq!(outbox.unread("alice"), (200 << 10) - CHUNK as u64);
        let mut total = first.len();
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(total, 200 << 10);
        assert_eq!(outbox.unread("alice"), 0);
        drop(body);
        assert!(outbox.table().is_empty(), "no entry outlives its answers");
    }

    /// Answers of requests admitted together: past the limit, the ones that
    /// would pile up are refused; one answer alone may exceed it.
    #[test]
    fn answers_finishing_together_cannot_all_pile_up() {
        let outbox = Outbox::new(100);
        let alice: Arc<str> = "alice".into();
        assert!(outbox.try_add(&alice, 500), "one answer alone goes out");
        assert!(!outbox.try_add(&alice, 1));
        outbox.sub("alice", 500);
        assert!(outbox.try_add(&alice, 60));
        assert!(outbox.try_add(&alice, 40));
        assert!(!outbox.try_add(&alice, 1));
        assert!(outbox.try_add(&"bob".into(), 60), "bob is not affected");
    }
}
