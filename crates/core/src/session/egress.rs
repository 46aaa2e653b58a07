//! Egress for sessions: which sandbox belongs to which session (a store key
//! per container, written when the container is recorded), the proxy
//! environment of a session's commands, and [`SessionDialer`], which answers
//! a sandbox's dial: the session's allow-list (its own patterns and
//! `EGRESS_DEFAULT`), brig's own resolution, the decision of
//! [`crate::egress::decide`], then the dial of exactly the addresses decided
//! on. Every decision and every tunnel's end is an audit line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brig_protocol::EGRESS_PROXY_PORT;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::ids::{Owner, SessionId};
use super::record::SessionRecord;
use crate::config::EgressConfig;
use crate::egress::{decide, AllowList, Verdict};
use crate::sandbox::egress::{DialOutcome, EgressDialer, TunnelEnd, TunnelLimits};
use crate::store::SessionStore;

/// How long brig's resolver may take for one name.
const RESOLVE_WAIT: Duration = Duration::from_secs(5);

/// How long one dial may take, all addresses together.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The store key naming the session of `container`.
pub(crate) fn owner_key(container: &str) -> String {
    format!("egress:{container}")
}

/// What [`owner_key`] holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SandboxOwner {
    pub owner: Owner,
    pub session_id: String,
}

/// The variables a command of a session with egress gets: every common
/// spelling points at the agent's proxy, loopback excepted.
pub fn proxy_env() -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{EGRESS_PROXY_PORT}");
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .map(|name| (name.to_string(), proxy.clone()))
    .collect();
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.into(), "localhost,127.0.0.1".into()));
    }
    env
}

/// The patterns a session may reach: `EGRESS_DEFAULT` and its own (checked
/// when they were set; entries that no longer parse, from an older build's
/// record, are left out: never widened).
pub fn effective_allow_list(config: &EgressConfig, own: &[String]) -> AllowList {
    let own = own
        .iter()
        .filter_map(|entry| AllowList::parse(std::slice::from_ref(entry)).ok())
        .fold(AllowList::default(), |list, entry| list.extended(&entry));
    config.default.extended(&own)
}

/// Answers sandboxes' dials from the session records in the store.
pub struct SessionDialer {
    store: Arc<dyn SessionStore>,
    /// This process, as a holder of channel leases.
    replica: String,
    config: EgressConfig,
    /// The host's own addresses (never dialled unless private ones are allowed).
    own: Vec<IpAddr>,
}

impl SessionDialer {
    pub(crate) fn new(store: Arc<dyn SessionStore>, replica: String, config: EgressConfig, own: Vec<IpAddr>) -> Self {
        SessionDialer {
            store,
            replica,
            config,
            own,
        }
    }

    /// The session of `container`, if it has one with egress.
    async fn session_of(&self, container: &str) -> Result<SessionRecord, String> {
        let unknown = || "this sandbox's session has no egress".to_string();
        let raw = self
            .store
            .get_value(&owner_key(container))
            .await
            .map_err(|_| "the session store is unavailable".to_string())?
            .ok_or_else(unknown)?;
        let owner: SandboxOwner = serde_json::from_str(&raw).map_err(|_| unknown())?;
        let id = SessionId::parse(&owner.session_id).map_err(|_| unknown())?;
        let record = self
            .store
            .get(&owner.owner, &id)
            .await
            .map_err(|_| "the session store is unavailable".to_string())?
            .filter(|record| record.container() == Some(container))
            .ok_or_else(|| "this sandbox's session is gone".to_string())?;
        Ok(record)
    }

    async fn decide_and_dial(
        &self,
        record: &SessionRecord,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), String> {
        let list = effective_allow_list(&self.config, &record.options.egress);
        if list.is_empty() {
            return Err("this session has no egress allow-list".into());
        }
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        let resolved: Vec<IpAddr> = if literal {
            Vec::new()
        } else {
            if !list.worth_resolving(host, port) {
                return Err(format!("{host}:{port} is not in the session's allow-list"));
            }
            match tokio::time::timeout(RESOLVE_WAIT, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
                Ok(Err(_)) => Vec::new(),
                Err(_) => return Err(format!("{host} did not resolve in time")),
            }
        };
        let addresses = match decide(&list, host, port, &resolved, self.config.allow_private, &self.own) {
            Verdict::Dial(addresses) => addresses,
            Verdict::Refuse(why) => return Err(why),
        };
        let dial = async {
            let mut last = String::new();
            for ip in addresses {
                let address = SocketAddr::new(ip, port);
                match TcpStream::connect(address).await {
                    Ok(stream) => return Ok((stream, address)),
                    Err(err) => last = format!("{address}: {err}"),
                }
            }
            Err(format!("connection failed ({last})"))
        };
        tokio::time::timeout(CONNECT_WAIT, dial)
            .await
            .unwrap_or_else(|_| Err(format!("{host}:{port} did not accept in time")))
    }
}

#[async_trait]
impl EgressDialer for SessionDialer {
    async fn dial(&self, container: &str, host: &str, port: u16) -> DialOutcome {
        // Only the lease holder answers: another API process attached to the
        // same sandbox (both see its frames) stays silent.
        match self
            .store
            .lease_channel(container, &self.replica, super::CHANNEL_LEASE)
            .await
        {
            Ok(true) => {}
            Ok(false) => return DialOutcome::NotMine,
            Err(_) => return DialOutcome::Refused("the session store is unavailable".into()),
        }
        let record = match self.session_of(container).await {
            Ok(record) => record,
            Err(why) => {
                audit_refused(None, host, port, &why);
                return DialOutcome::Refused(why);
            }
        };
        match self.decide_and_dial(&record, host, port).await {
            Ok((stream, address)) => {
                metrics::counter!(crate::metrics::EGRESS_CONNECTIONS, "outcome" => "allowed").increment(1);
                tracing::info!(
                    target: "brig::audit",
                    owner = %record.owner.as_str(), session_id = %record.session_id,
                    host, port, address = %address, allowed = true,
                    "egress"
                );
                let (owner, session, host) = (
                    record.owner.as_str().to_string(),
                    record.session_id.clone(),
                    host.to_string(),
                );
                DialOutcome::Connected {
                    stream,
                    address,
                    on_end: Box::new(move |end: TunnelEnd| {
                        metrics::counter!(crate::metrics::EGRESS_BYTES, "direction" => "up").increment(end.bytes_up);
                        metrics::counter!(crate::metrics::EGRESS_BYTES, "direction" => "down")
                            .increment(end.bytes_down);
                        tracing::info!(
                            target: "brig::audit",
                            owner, session_id = %session, host, port, address = %address,
                            bytes_up = end.bytes_up, bytes_down = end.bytes_down,
                            duration_ms = end.duration.as_secs_f64() * 1000.0, reason = end.reason,
                            "egress closed"
                        );
                    }),
                }
            }
            Err(why) => {
                audit_refused(Some(&record), host, port, &why);
                DialOutcome::Refused(why)
            }
        }
    }

    fn limits(&self) -> TunnelLimits {
        self.config.limits
    }
}

fn audit_refused(record: Option<&SessionRecord>, host: &str, port: u16, why: &str) {
    metrics::counter!(crate::metrics::EGRESS_CONNECTIONS, "outcome" => "denied").increment(1);
    tracing::info!(
        target: "brig::audit",
        owner = record.map(|r| r.owner.as_str()).unwrap_or_default(),
        session_id = record.map(|r| r.session_id.as_str()).unwrap_or_default(),
        host, port, allowed = false, reason = why,
        "egress"
    );
}
