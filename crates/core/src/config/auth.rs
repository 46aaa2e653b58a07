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
    /// `API_KEYS`: `name:key` or bare `key`, comma-separated. A principal may
    /// have several keys (rotation: `me:old,me:new`); a key belongs to one.
    pub api_keys: Vec<ApiKey>,
}

/// Keys shorter than this are accepted, but brig-api warns about them (they
/// can be guessed; `openssl rand -hex 24` makes a good one).
pub const SHORT_KEY: usize = 16;

impl AuthConfig {
    /// The principals with a key shorter than [`SHORT_KEY`] (never the keys).
    pub fn short_keys(&self) -> Vec<&str> {
        self.api_keys
            .iter()
            .filter(|k| k.key.expose_secret().chars().count() < SHORT_KEY)
            .map(|k| k.principal.as_str())
            .collect()
    }

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
        // Several keys per principal are fine (rotation); one key for two
        // principals would make the caller ambiguous.
        if let Some(other) = keys.iter().find(|k| k.key.expose_secret() == key) {
            return Err(format!(
                "one key is given to two principals ({:?} and {principal:?})",
                other.principal
            ));
        }
        keys.push(ApiKey {
            principal,
            key: SecretString::from(key.to_string()),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_may_have_several_keys_but_a_key_one_principal() {
        let keys = parse_api_keys("me:old-key-0123456789, me:new-key-0123456789, ci:abc").unwrap();
        let principals: Vec<&str> = keys.iter().map(|k| k.principal.as_str()).collect();
        assert_eq!(principals, ["me", "me", "ci"]);
        let shared = parse_api_keys("me:same-key, you:same-key").unwrap_err();
        assert!(
            shared.contains("two principals") && !shared.contains("same-key"),
            "{shared}"
        );
        let config = AuthConfig {
            jwt_secret: None,
            jwt_leeway: Duration::ZERO,
            api_keys: keys,
        };
        assert_eq!(config.short_keys(), ["ci"]);
    }
}
