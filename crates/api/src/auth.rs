//! Who is calling: `X-API-Key` (compared in constant time) or
//! `Authorization: Bearer` with an API key (for clients that can send nothing
//! else) or a JWT (HS256 only, `exp` and `sub` required, small explicit
//! leeway). The extractor (in `extract.rs`) also charges the
//! principal's rate limit, so limits apply only to authenticated callers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::{header, HeaderMap};
use brig_core::config::AuthConfig;
use brig_core::policy::rules::Caller;
use brig_core::session::Owner;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Longest `sub` accepted.
const MAX_SUBJECT_LEN: usize = 256;

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `X-API-Key`: roles come from the policy file's `api_key_roles`.
    ApiKey,
    /// A bearer JWT, with the roles its `role`/`roles` claims carry.
    Token { roles: Vec<String> },
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The API key's name, or the token's `sub`.
    pub name: String,
    /// Who this is across brig (sessions, files, rate limit, quotas, logs):
    /// the key's name, or `jwt:<sub>` for a token. Key names hold no `:`, so
    /// a token never stands for a key's principal (red team M3: `sub:
    /// "alice"` owned API key alice's sessions) unless the operator maps its
    /// subject to one with `JWT_SUBJECT_ALIASES`.
    pub id: String,
    pub credential: Credential,
}

impl Principal {
    /// Whose sessions, executions and idempotency keys these are. A key's
    /// principal keeps the owner it always had.
    pub fn owner(&self) -> Owner {
        Owner::of_principal(&self.id)
    }

    /// The caller as the command rules see it.
    pub fn caller(&self) -> Caller<'_> {
        match &self.credential {
            Credential::ApiKey => Caller::ApiKey { name: &self.name },
            Credential::Token { roles } => Caller::Token { roles },
        }
    }
}

pub struct Authenticator {
    /// SHA-256 of each key: compared digest to digest, so neither the length
    /// nor the content of a key leaks through timing. Replaced whole on
    /// SIGHUP when `API_KEYS_FILE` is set ([`Authenticator::reload_keys`]).
    api_keys: RwLock<Arc<KeyDigests>>,
    /// Where the keys come from, to read them again.
    config: AuthConfig,
    jwt: Option<(DecodingKey, Validation)>,
    /// `JWT_SUBJECT_ALIASES`: token subjects that act as a key's principal.
    aliases: HashMap<String, String>,
}

/// Each key's principal and the SHA-256 of the key.
type KeyDigests = Vec<(String, [u8; 32])>;

fn digests(keys: &[brig_core::config::ApiKey]) -> KeyDigests {
    keys.iter()
        .map(|key| {
            (
                key.principal.clone(),
                Sha256::digest(key.key.expose_secret().as_bytes()).into(),
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    roles: Option<RolesClaim>,
}

/// `roles` as one string or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum RolesClaim {
    One(String),
    Many(Vec<String>),
}

/// Most roles one token may carry, and longest role name.
const MAX_ROLES: usize = 32;

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let api_keys = RwLock::new(Arc::new(digests(&config.api_keys)));
        let jwt = config.jwt_secret.as_ref().map(|secret| {
            // Pinned: a token naming any other algorithm (none, RS256 with our
            // secret as a "public key", ...) is refused.
            let mut validation = Validation::new(Algorithm::HS256);
            validation.leeway = config.jwt_leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_required_spec_claims(&["exp", "sub"]);
            (DecodingKey::from_secret(secret.expose_secret().as_bytes()), validation)
        });
        let aliases = config.jwt_subject_aliases.iter().cloned().collect();
        Authenticator {
            api_keys,
            config: config.clone(),
            jwt,
            aliases,
        }
    }

    /// Reads `API_KEYS_FILE` again: `Ok(Some(n))` with the number of keys now
    /// in force, `Ok(None)` without a file. A file that cannot be read or
    /// holds a mistake changes nothing (the error says what is wrong).
    /// Principals keep their sessions across a rotation: they are named by
    /// the principal, not the key.
    pub fn reload_keys(&self) -> Result<Option<usize>, String> {
        let Some(keys) = self.config.reload_keys()? else {
            return Ok(None);
        };
        let count = keys.len();
        *self.api_keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(digests(&keys));
        Ok(Some(count))
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if let Some(key) = headers.get("x-api-key") {
            return self.api_key(key.as_bytes());
        }
        let Some(authorization) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "missing credentials: send X-API-Key or Authorization: Bearer",
            ));
        };
        let authorization = authorization
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization"))?;
        let token = match authorization.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::Unauthorized("Authorization must use the Bearer scheme")),
        };
        // Many MCP clients can send nothing but a bearer: an API key is accepted
        // there too (compared the same way, in constant time).
        if let Some(principal) = self.match_api_key(token.as_bytes()) {
            return Ok(principal);
        }
        self.jwt(token)
    }

    fn api_key(&self, presented: &[u8]) -> Result<Principal, ApiError> {
        self.match_api_key(presented)
            .ok_or(ApiError::Unauthorized("invalid API key"))
    }

    /// The principal of the API key `presented`, if it is one.
    fn match_api_key(&self, presented: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Check every key, whatever matches, so timing does not tell which did.
        let mut found = None;
        let keys = self.api_keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (principal, expected) in keys.iter() {
            if bool::from(expected.ct_eq(&digest)) {
                found = Some(principal);
            }
        }
        found.map(|name| Principal {
            name: name.clone(),
            id: name.clone(),
            credential: Credential::ApiKey,
        })
    }

    fn jwt(&self, token: &str) -> Result<Principal, ApiError> {
        let Some((key, validation)) = &self.jwt else {
            return Err(ApiError::Unauthorized(
                "invalid bearer: not an API key, and JWTs are not enabled here (JWT_SECRET)",
            ));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?
            .claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_LEN || claims.sub.chars().any(char::is_control) {
            return Err(ApiError::Unauthorized("invalid token subject"));
        }
        let mut roles: Vec<String> = claims.role.into_iter().collect();
        match claims.roles {
            Some(RolesClaim::One(role)) => roles.push(role),
            Some(RolesClaim::Many(many)) => roles.extend(many),
            None => {}
        }
        if roles.len() > MAX_ROLES
            || roles
                .iter()
                .any(|role| role.is_empty() || role.len() > MAX_SUBJECT_LEN || role.chars().any(char::is_control))
        {
            return Err(ApiError::Unauthorized("invalid token roles"));
        }
        let id = match self.aliases.get(&claims.sub) {
            Some(principal) => principal.clone(),
            None => format!("jwt:{}", claims.sub),
        };
        Ok(Principal {
            name: claims.sub,
            id,
            credential: Credential::Token { roles },
        })
    }
}
