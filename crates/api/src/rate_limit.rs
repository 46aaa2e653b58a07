//! Per-principal rate limiting (governor's GCRA): `RATE_LIMIT_REQUESTS` per
//! `RATE_LIMIT_WINDOW_SECONDS`, as a burst that refills evenly. Keyed only after
//! authentication, so unauthenticated traffic never creates state; idle keys are
//! pruned periodically so memory stays bounded by the active principals.
//!
//! Failed authentications are limited per source address instead
//! ([`AuthFailures`], red team L5): past `AUTH_FAILURES_PER_MINUTE`, an
//! address's requests are refused before their credentials are checked, so
//! guessing keys costs a minute per budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brig_core::shutdown::Shutdown;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter as Governor};

use crate::error::ApiError;

type Limiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

pub struct RateLimiter {
    limiter: Limiter,
    clock: DefaultClock,
    burst: u32,
    period: Duration,
}

/// A principal's quota after a request, for the `RateLimit-*` headers (IETF
/// draft names): the burst, what is left of it, and seconds until it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

impl RateInfo {
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", self.reset_secs.to_string()),
        ]
    }
}

/// Where the `Principal` extractor leaves the quota
/// state, for [`headers`] to copy onto the response.
#[derive(Clone, Default)]
pub struct RateSlot(Arc<std::sync::Mutex<Option<RateInfo>>>);

impl RateSlot {
    pub fn set(&self, info: RateInfo) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    fn take(&self) -> Option<RateInfo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Middleware: `RateLimit-Limit`, `-Remaining` and `-Reset` on every response
/// to an authenticated request (429s included).
pub async fn headers(mut request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let slot = RateSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(info) = slot.take() {
        for (name, value) in info.headers() {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

impl RateLimiter {
    pub fn new(requests: u32, window: Duration) -> Self {
        let burst = NonZeroU32::new(requests.max(1)).expect("max(1) is non-zero");
        let period = (window / burst.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .expect("period is non-zero")
            .allow_burst(burst);
        RateLimiter {
            limiter: Governor::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            clock: DefaultClock::default(),
            burst: burst.get(),
            period,
        }
    }

    /// Admits one request of `principal`, or says when to retry; either way
    /// with the quota's state for the response headers.
    pub fn check(&self, principal: &str) -> (Result<(), ApiError>, RateInfo) {
        match self.limiter.check_key(&principal.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill = self.period * (self.burst - remaining.min(self.burst));
                let info = RateInfo {
                    limit: self.burst,
                    remaining,
                    reset_secs: refill.as_secs_f64().ceil() as u64,
                };
                (Ok(()), info)
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after_secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let info = RateInfo {
                    limit: self.burst,
                    remaining: 0,
                    reset_secs: retry_after_secs,
                };
                (Err(ApiError::RateLimited { retry_after_secs }), info)
            }
        }
    }

    /// Keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }

    /// Drops keys whose state is back to "full burst available".
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// State that forgets what is idle.
pub trait Prune: Send + Sync + 'static {
    fn prune(&self);
}

impl Prune for RateLimiter {
    fn prune(&self) {
        RateLimiter::prune(self);
    }
}

impl Prune for AuthFailures {
    fn prune(&self) {
        AuthFailures::prune(self);
    }
}

/// Prunes `state` every `every` until it is dropped or `shutdown` cancels.
pub fn spawn_pruner<T: Prune>(state: &Arc<T>, every: Duration, shutdown: &Shutdown) {
    let weak = Arc::downgrade(state);
    shutdown.spawn_loop(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(state) => state.prune(),
                None => return,
            }
        }
    });
}

/// Failed authentications per source address (an IPv6 address counts by
/// its /64, which one host usually holds whole).
pub struct AuthFailures {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    /// Addresses that used up their budget, and until when they wait.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl AuthFailures {
    /// `per_minute` failures per address (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|burst| {
            let quota = Quota::with_period(Duration::from_secs(60) / burst.get())
                .expect("period is non-zero")
                .allow_burst(burst);
            Governor::keyed(quota)
        });
        AuthFailures {
            limiter,
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses an address that used up its failures, before any check.
    pub fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let key = brig_core::http_server::source(ip);
        match blocked.get(&key) {
            Some(until) if *until > Instant::now() => Err(ApiError::AuthRateLimited {
                retry_after_secs: until.duration_since(Instant::now()).as_secs_f64().ceil().max(1.0) as u64,
            }),
            Some(_) => {
                blocked.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let key = brig_core::http_server::source(ip);
        if let Err(not_until) = limiter.check_key(&key) {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            blocked.insert(key, Instant::now() + wait);
            tracing::warn!(source = %key, "failed authentications past AUTH_FAILURES_PER_MINUTE: refusing this address for {} s", wait.as_secs());
        }
    }

    /// Forgets addresses whose budget is full again and whose wait is over.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_failures_is_refused_unchecked_and_others_are_not() {
        let failures = AuthFailures::new(3);
        let (attacker, other): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        for _ in 0..3 {
            failures.admit(attacker).unwrap();
            failures.failed(attacker);
        }
        failures.admit(attacker).unwrap();
        failures.failed(attacker);
        match failures.admit(attacker) {
            Err(ApiError::AuthRateLimited { retry_after_secs }) => assert!((1..=20).contains(&retry_after_secs)),
            other => panic!("{other:?}"),
        }
        failures.admit(other).unwrap();
        // One host's IPv6 /64 is one address; the off switch limits nothing.
        let (a, b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::ffff:2".parse().unwrap());
        for _ in 0..4 {
            failures.failed(a);
        }
        assert!(failures.admit(b).is_err());
        let off = AuthFailures::new(0);
        for _ in 0..1000 {
            off.failed(attacker);
        }
        off.admit(attacker).unwrap();
    }

    #[test]
    fn idle_principals_are_pruned_so_state_stays_bounded() {
        let limiter = RateLimiter::new(2, Duration::from_millis(100));
        for i in 0..500 {
            limiter.check(&format!("principal-{i}")).0.unwrap();
        }
        assert_eq!(limiter.tracked(), 500);
        std::thread::sleep(Duration::from_millis(150));
        limiter.prune();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_burst_is_the_configured_request_count() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        for left in (0..3).rev() {
            let (admitted, info) = limiter.check("p");
            admitted.unwrap();
            assert_eq!((info.limit, info.remaining), (3, left));
            assert_eq!(info.reset_secs, 20 * (3 - left) as u64);
        }
        match limiter.check("p") {
            (Err(ApiError::RateLimited { retry_after_secs }), info) => {
                assert!((1..=20).contains(&retry_after_secs));
                assert_eq!((info.remaining, info.reset_secs), (0, retry_after_secs));
            }
            other => panic!("{other:?}"),
        }
    }
}
