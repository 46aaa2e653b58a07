//! Opening a session with a client's options: `POST /sessions` and MCP's
//! `create_session` (checked the same way, answered in the same shape).

use std::time::Duration;

use brig_core::config::EgressConfig;
use brig_core::egress::AllowList;
use brig_core::session::{SessionId, Sessions};
use brig_core::snapshot::SnapshotStore;
use brig_core::SandboxConfig;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::views::{CreateSessionBody, SessionView};

/// What opening a session draws on: the sessions, the configuration that
/// bounds a client's options, and the snapshots a new session may start from.
pub struct SessionSetup<'a> {
    pub sessions: &'a Sessions,
    pub sandbox: &'a SandboxConfig,
    pub egress: &'a EgressConfig,
    /// What the policy file's roles let the caller's sessions be granted
    /// (`None`: no narrowing of `EGRESS_ALLOWED`).
    pub grant: Option<AllowList>,
    pub snapshots: &'a SnapshotStore,
    /// `MAX_SESSION_TTL_SECONDS`.
    pub max_ttl: Duration,
}

/// A session's asked-for idle TTL (`ttl_seconds`), within `max_ttl` (422 naming it).
pub fn checked_ttl(ttl_seconds: Option<u64>, max_ttl: Duration) -> Result<Option<Duration>, ApiError> {
    match ttl_seconds {
        None => Ok(None),
        Some(seconds) if seconds >= 1 && seconds <= max_ttl.as_secs() => Ok(Some(Duration::from_secs(seconds))),
        Some(seconds) => Err(ApiError::invalid(
            "invalid_ttl",
            format!(
                "ttl_seconds {seconds} is out of range: 1 to MAX_SESSION_TTL_SECONDS ({})",
                max_ttl.as_secs()
            ),
        )),
    }
}

/// Opens (creates, or finds) the caller's session with the body's options,
/// clamped and checked against the configuration; `true` when it was created.
pub async fn open_session(
    setup: SessionSetup<'_>,
    principal: &Principal,
    body: CreateSessionBody,
) -> Result<(SessionView, bool), ApiError> {
    let SessionSetup {
        sessions,
        sandbox,
        egress,
        grant,
        snapshots,
        max_ttl,
    } = setup;
    let id = match body.session_id {
        Some(id) => SessionId::parse(&id)?,
        None => SessionId::random(),
    };
    let mut options = sandbox.session_options(
        body.image.as_deref(),
        body.runtime.as_deref(),
        body.memory_limit.as_deref(),
        body.cpu_limit,
    )?;
    options.egress = checked_allow_list(egress, grant.as_ref(), &body.network.unwrap_or_default().allow)?;
    options.env = super::execute::checked_env(body.env.unwrap_or_default())?;
    let ttl = checked_ttl(body.ttl_seconds, max_ttl)?;
    let owner = principal.owner();
    if let Some(snapshot) = &body.from_snapshot {
        // Before anything is created: an unknown snapshot is a plain 404.
        snapshots.get(&owner, snapshot).await?;
    }
    let (record, opened) = sessions.open_for(&owner, &id, &options, ttl).await?;
    let created = opened.created();
    if let Some(snapshot) = &body.from_snapshot {
        if !created {
            return Err(ApiError::SessionExists(
                "the session exists: from_snapshot starts a new session; pick another session_id".into(),
            ));
        }
        if let Err(err) = super::snapshots::restore(sessions, snapshots, &owner, &id, snapshot).await {
            // Never a session that silently lacks its workspace.
            let _ = sessions.delete(&owner, &id).await;
            return Err(err);
        }
    }
    Ok((SessionView::of(&record, sandbox, sessions.default_ttl()), created))
}

/// A session's asked-for allow-list, checked: every entry must parse (422
/// naming it), lie within `EGRESS_ALLOWED` and within `grant`, what the policy
/// file's roles give the caller (`None`: no narrowing); 403 naming the setting
/// otherwise. Returned trimmed, as it is kept.
pub fn checked_allow_list(
    egress: &EgressConfig,
    grant: Option<&AllowList>,
    allow: &[String],
) -> Result<Vec<String>, ApiError> {
    if allow.is_empty() {
        return Ok(Vec::new());
    }
    let asked = AllowList::parse(allow).map_err(|err| ApiError::invalid("invalid_egress_pattern", err.to_string()))?;
    if !egress.enabled() {
        return Err(ApiError::EgressNotAllowed(
            "egress is off in this deployment: EGRESS_ALLOWED is empty".into(),
        ));
    }
    if let Some(outside) = egress.allowed.first_outside(&asked) {
        return Err(ApiError::EgressNotAllowed(format!(
            "{outside} is not within EGRESS_ALLOWED"
        )));
    }
    if let Some(outside) = grant.and_then(|grant| grant.first_outside(&asked)) {
        return Err(ApiError::EgressNotAllowed(format!(
            "{outside} is not granted to your roles by the policy file (ALLOWED_COMMANDS_PATH)"
        )));
    }
    Ok(asked.patterns().iter().map(ToString::to_string).collect())
}
