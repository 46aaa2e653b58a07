//! `BRIG_NODE_ID`, `BRIG_NODE_ADDR`, `BRIG_NODE_SECRET`,
//! `NODE_HEARTBEAT_SECONDS`, `NODE_LOSS_SECONDS`, `NODE_MAX_SESSIONS`: this process as one node of
//! several, each owning its own engine, sharing one Redis (unset: single-host
//! mode, unchanged).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::env::{positive, seconds};
use super::{Env, StoreConfig};

/// This process's place among several nodes.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `BRIG_NODE_ID`: 1 to 63 of `a-z`, `0-9`, `-`; unique among the nodes.
    pub id: String,
    /// `BRIG_NODE_ADDR`: where the other nodes reach this one (`http://10.0.0.7:8000`).
    pub addr: String,
    /// `BRIG_NODE_SECRET`: signs the requests one node forwards to another
    /// (at least 32 characters, the same on every node). The worker, which
    /// neither forwards nor serves, needs none.
    pub secret: Option<SecretString>,
    /// `NODE_HEARTBEAT_SECONDS` (2): how often the node says it is alive.
    pub heartbeat: Duration,
    /// `NODE_LOSS_SECONDS` (10): silent this long, a node is lost.
    pub loss_after: Duration,
    /// `NODE_MAX_SESSIONS`: sessions this node takes (unset: `MAX_SESSIONS`,
    /// which bounds the whole fleet).
    pub max_sessions: Option<u64>,
    /// `BRIG_NODE_CA`: a PEM file of the certificates that alone are trusted
    /// for hops to `https://` node addresses (unset: the system's roots).
    /// Read when the configuration is.
    pub ca_pem: Option<Vec<u8>>,
}

/// The shortest `BRIG_NODE_SECRET` taken.
const MIN_SECRET: usize = 32;

fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl NodeConfig {
    /// `None` unless `BRIG_NODE_ID` is set; errors name the setting.
    /// `needs_addr`: brig-api must say where it is reached; the cleanup
    /// worker, which nobody reaches, need not.
    pub(crate) fn from_env(env: &mut Env<'_>, store: &StoreConfig, needs_addr: bool) -> Option<Self> {
        let id = env.get("BRIG_NODE_ID")?;
        if !valid_id(&id) {
            env.error("BRIG_NODE_ID", "must be 1-63 characters of a-z, 0-9 and -");
        }
        let addr = env.get("BRIG_NODE_ADDR").unwrap_or_default();
        if needs_addr && !(addr.starts_with("http://") || addr.starts_with("https://")) {
            env.error(
                "BRIG_NODE_ADDR",
                "must be set with BRIG_NODE_ID: the http(s) URL the other nodes reach this one at",
            );
        }
        if *store == StoreConfig::Memory {
            env.error(
                "SESSION_STORE",
                "nodes share one Redis: BRIG_NODE_ID needs SESSION_STORE=redis",
            );
        }
        let secret = env.get("BRIG_NODE_SECRET").map(SecretString::from);
        if needs_addr && secret.as_ref().is_none_or(|s| s.expose_secret().len() < MIN_SECRET) {
            env.error(
                "BRIG_NODE_SECRET",
                "must be set with BRIG_NODE_ID, at least 32 characters, the same on every node: it signs the requests nodes forward to each other",
            );
        }
        let heartbeat = env.parse("NODE_HEARTBEAT_SECONDS", Duration::from_secs(2), seconds);
        let loss_after = env.parse("NODE_LOSS_SECONDS", Duration::from_secs(10), seconds);
        if loss_after < heartbeat * 3 {
            env.error(
                "NODE_LOSS_SECONDS",
                "must be at least three heartbeats (NODE_HEARTBEAT_SECONDS)",
            );
        }
        let max_sessions = env.parse("NODE_MAX_SESSIONS", None, |raw| positive::<u64>(raw).map(Some));
        let ca_pem = env.get("BRIG_NODE_CA").and_then(|path| match std::fs::read(&path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                env.error("BRIG_NODE_CA", format!("{path} holds no PEM certificate"));
                None
            }
            Err(err) => {
                env.error("BRIG_NODE_CA", format!("{path} cannot be read: {err}"));
                None
            }
        });
        Some(NodeConfig {
            id,
            addr: addr.trim_end_matches('/').to_string(),
            secret,
            heartbeat,
            loss_after,
            max_sessions,
            ca_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn node(vars: &[(&str, &str)]) -> Result<Option<NodeConfig>, String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut env = Env::from_fn(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        let store = StoreConfig::from(&mut env);
        let node = NodeConfig::from_env(&mut env, &store, true);
        env.finish(node).map_err(|errors| errors.to_string())
    }

    #[test]
    fn single_host_unless_a_node_id_is_given() {
        assert!(node(&[]).unwrap().is_none());
    }

    #[test]
    fn a_node_needs_an_address_redis_and_a_loss_timeout_of_three_heartbeats() {
        let ok = node(&[
            ("BRIG_NODE_ID", "node-1"),
            ("BRIG_NODE_ADDR", "http://10.0.0.7:8000/"),
            ("BRIG_NODE_SECRET", SECRET),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(ok.addr, "http://10.0.0.7:8000");
        assert_eq!(ok.max_sessions, None);
        let capped = node(&[
            ("BRIG_NODE_ID", "node-1"),
            ("BRIG_NODE_ADDR", "http://10.0.0.7:8000/"),
            ("BRIG_NODE_SECRET", SECRET),
            ("NODE_MAX_SESSIONS", "50"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(capped.max_sessions, Some(50));
        assert_eq!(
            (ok.heartbeat, ok.loss_after),
            (Duration::from_secs(2), Duration::from_secs(10))
        );
        let err = node(&[("BRIG_NODE_ID", "Node_1")]).unwrap_err();
        assert!(
            err.contains("BRIG_NODE_ID") && err.contains("BRIG_NODE_ADDR") && err.contains("BRIG_NODE_SECRET"),
            "{err}"
        );
        let err = node(&[
            ("BRIG_NODE_ID", "n"),
            ("BRIG_NODE_ADDR", "http://a:1"),
            ("BRIG_NODE_SECRET", "short"),
            ("SESSION_STORE", "memory"),
            ("NODE_LOSS_SECONDS", "3"),
            ("NODE_MAX_SESSIONS", "0"),
        ])
        .unwrap_err();
        assert!(
            err.contains("SESSION_STORE")
                && err.contains("NODE_LOSS_SECONDS")
                && err.contains("BRIG_NODE_SECRET")
                && err.contains("NODE_MAX_SESSIONS"),
            "{err}"
        );
    }

    #[test]
    fn a_node_ca_is_a_readable_pem_file_of_certificates() {
        let dir = std::env::temp_dir().join(format!("brig-node-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (good, junk) = (dir.join("ca.pem"), dir.join("junk.pem"));
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(&good, pem).unwrap();
        std::fs::write(&junk, "not a certificate").unwrap();
        let with = |ca: &std::path::Path| {
            node(&[
                ("BRIG_NODE_ID", "n"),
                ("BRIG_NODE_ADDR", "https://n:8443"),
                ("BRIG_NODE_SECRET", SECRET),
                ("BRIG_NODE_CA", ca.to_str().unwrap()),
            ])
        };
        assert_eq!(with(&good).unwrap().unwrap().ca_pem.as_deref(), Some(pem.as_bytes()));
        let err = with(&junk).unwrap_err();
        assert!(
            err.contains("BRIG_NODE_CA") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = with(&dir.join("missing.pem")).unwrap_err();
        assert!(err.contains("BRIG_NODE_CA") && err.contains("cannot be read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
