//! `SESSION_STORE`, `REDIS_URL` (or `REDIS_HOST`/`REDIS_PORT`).

use super::Env;

/// Where sessions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Redis { url: String },
    Memory,
}

impl StoreConfig {
    pub(super) fn from(env: &mut Env<'_>) -> Self {
        match env.get("SESSION_STORE").as_deref().map(str::trim) {
            None | Some("redis") => {
                let url = env.get("REDIS_URL").unwrap_or_else(|| {
                    let host = env.get("REDIS_HOST").unwrap_or_else(|| "localhost".into());
                    let port = env.get("REDIS_PORT").unwrap_or_else(|| "6379".into());
                    format!("redis://{host}:{port}/")
                });
                StoreConfig::Redis { url }
            }
            Some("memory") => StoreConfig::Memory,
            Some(_) => {
                env.error("SESSION_STORE", "must be redis or memory");
                StoreConfig::Memory
            }
        }
    }
}
