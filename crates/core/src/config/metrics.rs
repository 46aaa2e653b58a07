//! `METRICS_TOKEN`, `METRICS_PORT`, `METRICS_HOST`: who may scrape, and where.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Env;

/// Who may scrape, from `METRICS_TOKEN` and `METRICS_PORT`.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub token: Option<SecretString>,
    pub port: Option<u16>,
    /// `METRICS_HOST`: where `METRICS_PORT` listens (default `127.0.0.1`).
    pub host: String,
}

impl MetricsConfig {
    pub(crate) fn from_env(env: &mut Env<'_>) -> Self {
        let token = env.get("METRICS_TOKEN").map(SecretString::from);
        if let Some(token) = &token {
            if token.expose_secret().len() < 16 {
                env.error("METRICS_TOKEN", "must be at least 16 characters");
            }
        }
        let port = env.get("METRICS_PORT").map(|raw| {
            raw.parse::<u16>().ok().filter(|p| *p > 0).unwrap_or_else(|| {
                env.error("METRICS_PORT", "must be a port number 1-65535");
                0
            })
        });
        let host = env.get("METRICS_HOST").unwrap_or_else(|| "127.0.0.1".into());
        MetricsConfig { token, port, host }
    }

    /// Whether a request with `authorization` may read the metrics.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            // No token: only the separate metrics port serves them.
            return self.port.is_some();
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        // Digest against digest, as for API keys: neither the token's length
        // nor its content leaks through timing.
        let (presented, expected) = (
            Sha256::digest(presented.as_bytes()),
            Sha256::digest(token.expose_secret().as_bytes()),
        );
        presented.ct_eq(&expected).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_allowed() {
        let config = MetricsConfig {
            token: Some(SecretString::from("a-metrics-token-1234")),
            ..MetricsConfig::default()
        };
        assert!(config.allows(Some("Bearer a-metrics-token-1234")));
        for wrong in [
            None,
            Some(""),
            Some("Bearer a-metrics-token-123"),
            Some("a-metrics-token-1234"),
        ] {
            assert!(!config.allows(wrong), "{wrong:?}");
        }
    }
}
