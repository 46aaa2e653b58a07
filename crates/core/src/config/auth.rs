//! Authentication settings: an HS256 JWT secret and/or API keys.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::Env;

/// The placeholder the seed service shipped in its examples.
const PLACEHOLDER_SECRET: &str = "change-me-in-production";

/// One API key and the principal it authenticates.
#[derive(Clone)]
pub struct ApiKey {
    pub principal: String,
    pub key: SecretString,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `JWT_SECRET`: HS256 key, at least 32 bytes.
    pub jwt_secret: Option<SecretString>,
    /// `JWT_LEEWAY_SECONDS`: clock skew tolerated on `exp`/`nbf` (default 5 s).
    pub jwt_leeway: Duration,
    /// `API_KEYS`: `name:key` or bare `key`, comma-separated.
    pub api_keys: Vec<ApiKey>,
}

impl AuthConfig {
    pub(super) fn from_env(env: &mut Env<'_>) -> Self {
        let jwt_secret = env.get("JWT_SECRET").map(SecretString::from);
        if let Some(secret) = &jwt_secret {
            let secret = secret.expose_secret();
            if secret == PLACEHOLDER_SECRET {
                env.error(
                    "JWT_SECRET",
                    "is the example placeholder; generate one with `openssl rand -hex 32`",
                );
            } else if secret.len() < 32 {
                env.error(
                    "JWT_SECRET",
                    "must be at least 32 bytes; generate one with `openssl rand -hex 32`",
                );
            }
        }
        let jwt_leeway = Duration::from_secs(env.parse("JWT_LEEWAY_SECONDS", 5u64, |raw| {
            raw.parse::<u64>()
                .ok()
                .filter(|s| *s <= 300)
                .ok_or_else(|| "must be 0-300 seconds".into())
        }));
        let api_keys = match env.get("API_KEYS") {
            None => Vec::new(),
            Some(raw) => parse_api_keys(&raw).unwrap_or_else(|message| {
                env.error("API_KEYS", message);
                Vec::new()
            }),
        };
        if jwt_secret.is_none() && api_keys.is_empty() {
            env.error(
                "API_KEYS",
                "no authentication configured: set API_KEYS (e.g. API_KEYS=ci-bot:$(openssl rand -hex 24)) \
                 and/or JWT_SECRET (at least 32 bytes)",
            );
        }
        AuthConfig {
            jwt_secret,
            jwt_leeway,
            api_keys,
        }
    }
}

fn parse_api_keys(raw: &str) -> Result<Vec<ApiKey>, String> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (principal, key) = match entry.split_once(':') {
            Some((name, key)) => (name.trim().to_string(), key.trim()),
            // A bare key is known by a hash prefix, never by the key itself.
            None => (
                format!("key-{}", &hex::encode(Sha256::digest(entry.as_bytes()))[..12]),
                entry,
            ),
        };
        if principal.is_empty() || key.is_empty() {
            return Err("entries are name:key or key, with neither part empty".into());
        }
        if keys.iter().any(|k| k.principal == principal) {
            return Err(format!("principal {principal:?} appears twice"));
        }
        keys.push(ApiKey {
            principal,
            key: SecretString::from(key.to_string()),
        });
    }
    Ok(keys)
}
