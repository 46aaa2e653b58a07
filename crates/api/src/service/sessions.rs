//! Opening a session with a client's options: `POST /sessions` and MCP's
//! `create_session` (checked the same way, answered in the same shape).

use brig_core::session::{SessionId, Sessions};
use brig_core::SandboxConfig;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::views::{CreateSessionBody, SessionView};

/// Opens (creates, or finds) the caller's session with the body's options,
/// clamped and checked against the configuration; `true` when it was created.
pub async fn open_session(
    sessions: &Sessions,
    sandbox: &SandboxConfig,
    principal: &Principal,
    body: CreateSessionBody,
) -> Result<(SessionView, bool), ApiError> {
    let id = match body.session_id {
        Some(id) => SessionId::parse(&id)?,
        None => SessionId::random(),
    };
    let options = sandbox.session_options(
        body.image.as_deref(),
        body.runtime.as_deref(),
        body.memory_limit.as_deref(),
        body.cpu_limit,
    )?;
    let (record, created) = sessions.open_with(&principal.owner(), &id, &options).await?;
    Ok((SessionView::of(&record, sandbox), created))
}
