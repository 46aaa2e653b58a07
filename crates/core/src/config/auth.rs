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
    /// `API_KEYS_FILE`: more keys, in the same syntax (one or more per line,
    /// `#` comments), re-read on SIGHUP ([`AuthConfig::reload_keys`]).
    pub api_keys_file: Option<std::path::PathBuf>,
    /// `API_KEYS` as given, kept to combine with the file on reload.
    api_keys_env: Option<SecretString>,
    /// `AUTH_FAILURES_PER_MINUTE`: failed authentications one source address
    /// may make per minute before its requests are refused unchecked (429);
    /// 0 turns the limit off (for a proxy in front that does its own).
    pub failures_per_minute: u32,
    /// `JWT_SUBJECT_ALIASES`: `sub=name` pairs, comma-separated: a token with
    /// that subject is the API-key principal `name` (same sessions, limits
    /// and quotas). Without one, tokens and keys never share a principal.
    pub jwt_subject_aliases: Vec<(String, String)>,
}

/// The shortest key accepted (red team L5: one-character keys were): a
/// shorter one can be guessed. `openssl rand -hex 24` makes a good one.
pub const MIN_KEY_LEN: usize = 16;

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
        let api_keys_env = env.get("API_KEYS").map(SecretString::from);
        let api_keys_file = env.get("API_KEYS_FILE").map(std::path::PathBuf::from);
        let api_keys =
            keys_from(api_keys_env.as_ref(), api_keys_file.as_deref()).unwrap_or_else(|(variable, message)| {
                env.error(variable, message);
                Vec::new()
            });
        if jwt_secret.is_none() && api_keys.is_empty() {
            env.error(
                "API_KEYS",
                "no authentication configured: set API_KEYS (e.g. API_KEYS=ci-bot:$(openssl rand -hex 24)) \
                 or API_KEYS_FILE, and/or JWT_SECRET (at least 32 bytes)",
            );
        }
        let jwt_subject_aliases = match env.get("JWT_SUBJECT_ALIASES") {
            None => Vec::new(),
            Some(raw) => parse_aliases(&raw, &api_keys).unwrap_or_else(|message| {
                env.error("JWT_SUBJECT_ALIASES", message);
                Vec::new()
            }),
        };
        let failures_per_minute = env.parse("AUTH_FAILURES_PER_MINUTE", 30u32, |raw| {
            raw.parse::<u32>().map_err(|_| "must be a number (0: no limit)".into())
        });
        AuthConfig {
            jwt_secret,
            jwt_leeway,
            api_keys,
            api_keys_file,
            api_keys_env,
            failures_per_minute,
            jwt_subject_aliases,
        }
    }
}

impl AuthConfig {
    /// The keys of `API_KEYS` and of `API_KEYS_FILE` as the file reads now
    /// (SIGHUP): `Ok(None)` without a file; an error names what is wrong and
    /// leaves it to the caller to keep the keys in force.
    pub fn reload_keys(&self) -> Result<Option<Vec<ApiKey>>, String> {
        let Some(file) = &self.api_keys_file else {
            return Ok(None);
        };
        keys_from(self.api_keys_env.as_ref(), Some(file))
            .map(Some)
            .map_err(|(variable, message)| format!("{variable}: {message}"))
    }
}

/// The keys of `API_KEYS` and `API_KEYS_FILE` together (a key may belong to
/// one principal across both), or the variable to blame and why.
fn keys_from(
    env: Option<&SecretString>,
    file: Option<&std::path::Path>,
) -> Result<Vec<ApiKey>, (&'static str, String)> {
    let mut raw = env.map(|keys| keys.expose_secret().to_string()).unwrap_or_default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ("API_KEYS_FILE", format!("cannot read {}: {err}", path.display())))?;
        let entries: Vec<&str> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .collect();
        let from_file = entries.join(",");
        // The file's entries are checked alone first, so an error names it.
        parse_api_keys(&from_file).map_err(|message| ("API_KEYS_FILE", message))?;
        raw = format!("{raw},{from_file}");
    }
    parse_api_keys(&raw).map_err(|message| ("API_KEYS", message))
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
        if key.chars().count() < MIN_KEY_LEN {
            return Err(format!(
                "the key of {principal:?} is shorter than {MIN_KEY_LEN} characters and can be guessed; \
                 make one with `openssl rand -hex 24`"
            ));
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

fn parse_aliases(raw: &str, keys: &[ApiKey]) -> Result<Vec<(String, String)>, String> {
    let mut aliases: Vec<(String, String)> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((subject, principal)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not sub=name"));
        };
        let (subject, principal) = (subject.trim(), principal.trim());
        if subject.is_empty() {
            return Err(format!("{entry:?} has an empty subject"));
        }
        if !keys.iter().any(|k| k.principal == principal) {
            return Err(format!("{principal:?} is not a principal of API_KEYS"));
        }
        if aliases.iter().any(|(s, _)| s == subject) {
            return Err(format!("subject {subject:?} is mapped twice"));
        }
        aliases.push((subject.to_string(), principal.to_string()));
    }
    Ok(aliases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_aliases_name_existing_key_principals_once() {
        let keys = parse_api_keys("alice:alice-key-0123456789,ci:ci-key-0123456789").unwrap();
        assert_eq!(
            parse_aliases("user-17=alice, ci = ci", &keys).unwrap(),
            [("user-17".to_string(), "alice".to_string()), ("ci".into(), "ci".into())]
        );
        for (raw, problem) in [
            ("user-17", "not sub=name"),
            ("=alice", "empty subject"),
            ("x=mallory", "not a principal"),
            ("x=alice,x=ci", "mapped twice"),
        ] {
            let err = parse_aliases(raw, &keys).unwrap_err();
            assert!(err.contains(problem), "{raw}: {err}");
        }
    }

    #[test]
    fn a_principal_may_have_several_keys_but_a_key_one_principal() {
        let keys = parse_api_keys("me:old-key-0123456789, me:new-key-0123456789").unwrap();
        let principals: Vec<&str> = keys.iter().map(|k| k.principal.as_str()).collect();
        assert_eq!(principals, ["me", "me"]);
        let shared = parse_api_keys("me:same-key-0123456789, you:same-key-0123456789").unwrap_err();
        assert!(
            shared.contains("two principals") && !shared.contains("same-key"),
            "{shared}"
        );
    }

    #[test]
    fn a_keys_file_adds_keys_and_its_mistakes_are_named() {
        let path = std::env::temp_dir().join(format!("brig-keys-{}", rand::random::<u64>()));
        std::fs::write(&path, "# rotated monthly\nci:ci-key-0123456789abcdef  # the CI\n\nops:ops-key-0123456789, ops:ops-new-0123456789\n").unwrap();
        let env = SecretString::from("me:me-key-0123456789abcdef".to_string());
        let keys = keys_from(Some(&env), Some(&path)).unwrap();
        let principals: Vec<&str> = keys.iter().map(|k| k.principal.as_str()).collect();
        assert_eq!(principals, ["me", "ci", "ops", "ops"]);
        std::fs::write(&path, "weak:abc\n").unwrap();
        assert_eq!(keys_from(Some(&env), Some(&path)).unwrap_err().0, "API_KEYS_FILE");
        std::fs::write(&path, "other:me-key-0123456789abcdef\n").unwrap();
        let (variable, message) = keys_from(Some(&env), Some(&path)).unwrap_err();
        assert!(
            variable == "API_KEYS" && message.contains("two principals"),
            "{variable}: {message}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(keys_from(Some(&env), Some(&path)).unwrap_err().0, "API_KEYS_FILE");
    }

    #[test]
    fn a_key_that_can_be_guessed_is_refused_without_showing_it() {
        for raw in ["weak:a", "ci:abc,me:long-enough-key-0123", "short-key"] {
            let err = parse_api_keys(raw).unwrap_err();
            assert!(err.contains("shorter than 16"), "{raw}: {err}");
            assert!(
                !err.contains(":a") && !err.contains("abc") && !err.contains("short-key"),
                "{err}"
            );
        }
        assert!(parse_api_keys("ci:0123456789abcdef").is_ok());
    }
}
