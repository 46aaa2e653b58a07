//! Egress: `EGRESS_ALLOWED`, `EGRESS_DEFAULT`, `EGRESS_ALLOW_PRIVATE`,
//! `EGRESS_MAX_CONNECTIONS`, `EGRESS_MAX_BYTES`, `EGRESS_IDLE_TIMEOUT_SECONDS`.

use std::time::Duration;

use super::{parse_size, positive, seconds, Env};
use crate::egress::AllowList;
use crate::sandbox::egress::TunnelLimits;

/// What sessions may reach, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    /// `EGRESS_ALLOWED`: the patterns a session may be granted; empty: egress is off.
    pub allowed: AllowList,
    /// `EGRESS_DEFAULT`: the patterns every session has (within `allowed`).
    pub default: AllowList,
    /// `EGRESS_ALLOW_PRIVATE`: loopback, private, link-local and the host's
    /// own addresses may be dialled (tests, LANs); the metadata service never.
    pub allow_private: bool,
    /// `EGRESS_MAX_CONNECTIONS`, `EGRESS_MAX_BYTES`, `EGRESS_IDLE_TIMEOUT_SECONDS`:
    /// per sandbox.
    pub limits: TunnelLimits,
}

impl EgressConfig {
    /// Whether any session may have egress at all.
    pub fn enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    pub(super) fn from(env: &mut Env<'_>) -> Self {
        let patterns = |name: &'static str, env: &mut Env<'_>| {
            env.parse(name, AllowList::default(), |raw| {
                let entries: Vec<&str> = raw.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
                AllowList::parse(&entries).map_err(|err| err.to_string())
            })
        };
        let allowed = patterns("EGRESS_ALLOWED", env);
        let default = patterns("EGRESS_DEFAULT", env);
        if let Some(outside) = allowed.first_outside(&default) {
            env.error(
                "EGRESS_DEFAULT",
                format!("{outside} is not within EGRESS_ALLOWED (every default must be allowed)"),
            );
        }
        let allow_private = env.parse("EGRESS_ALLOW_PRIVATE", false, |raw| match raw {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err("must be true or false".into()),
        });
        let limits = TunnelLimits {
            max_connections: env.parse("EGRESS_MAX_CONNECTIONS", 32usize, positive),
            max_bytes: env.parse("EGRESS_MAX_BYTES", 1u64 << 30, |raw| {
                parse_size("EGRESS_MAX_BYTES", raw).map_err(|e| e.message)
            }),
            idle: env.parse("EGRESS_IDLE_TIMEOUT_SECONDS", Duration::from_secs(120), seconds),
        };
        EgressConfig {
            allowed,
            default,
            allow_private,
            limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parsed(vars: &[(&str, &str)]) -> Result<EgressConfig, Vec<&'static str>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut env = Env::from_fn(move |name| vars.get(name).cloned());
        let config = EgressConfig::from(&mut env);
        env.finish(config)
            .map_err(|errors| errors.0.iter().map(|e| e.variable).collect())
    }

    #[test]
    fn egress_is_off_unless_allowed_and_defaults_must_be_allowed() {
        let off = parsed(&[]).unwrap();
        assert!(!off.enabled() && off.default.is_empty() && !off.allow_private);
        let on = parsed(&[
            ("EGRESS_ALLOWED", "*.example.com, pypi.org:443"),
            ("EGRESS_DEFAULT", "pypi.org:443"),
            ("EGRESS_ALLOW_PRIVATE", "true"),
        ])
        .unwrap();
        assert!(on.enabled() && on.allow_private);
        assert_eq!(on.default.patterns().len(), 1);
        assert_eq!(
            parsed(&[("EGRESS_ALLOWED", "pypi.org"), ("EGRESS_DEFAULT", "example.com")]).unwrap_err(),
            vec!["EGRESS_DEFAULT"]
        );
        assert_eq!(
            parsed(&[("EGRESS_ALLOWED", "exa mple.com")]).unwrap_err(),
            vec!["EGRESS_ALLOWED"]
        );
        assert_eq!(
            parsed(&[("EGRESS_ALLOW_PRIVATE", "yes")]).unwrap_err(),
            vec!["EGRESS_ALLOW_PRIVATE"]
        );
    }
}
