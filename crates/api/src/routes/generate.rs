//! `POST /generate` and `POST /generate-and-execute`: a task in natural
//! language becomes code through the configured LLM; the second also runs it
//! exactly like `{"code", "language"}` on `/execute` (same allowlist or policy,
//! limits and sessions). Off (404 `not_enabled`) unless `LLM_BASE_URL` is set.

use axum::extract::State;
use axum::Json;
use brig_core::session::SessionId;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::llm::{Generated, Llm};
use crate::service::execute::ExecuteInput;
use crate::state::AppState;

/// Longest task description sent to the model.
const MAX_QUERY_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    pub query: String,
    pub language: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateAndExecuteBody {
    pub query: String,
    pub language: Option<String>,
    pub session_id: Option<String>,
    pub timeout: Option<f64>,
    pub memory_limit: Option<String>,
    pub cpu_limit: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GenerateResponse {
    pub query: String,
    pub language: String,
    pub generated_code: String,
    /// The model's safety assessment: reported, not relied on.
    pub validation_result: Option<String>,
    pub explanation: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GenerateAndExecuteResponse {
    pub query: String,
    pub generated_code: String,
    pub validation_result: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub timed_out: bool,
    pub execution_time: f64,
    pub session_id: String,
}

/// The language of a generation request that names none.
const DEFAULT_LANGUAGE: &str = "python";

fn llm(state: &AppState) -> Result<&Llm, ApiError> {
    state.llm.as_deref().ok_or(ApiError::NotEnabled(
        "code generation is off: set LLM_BASE_URL (and LLM_MODEL) to enable it",
    ))
}

/// Checks the query and language, then asks the model.
async fn generate_code(
    state: &AppState,
    query: &str,
    language: Option<String>,
) -> Result<(String, Generated), ApiError> {
    let llm = llm(state)?;
    if query.trim().is_empty() || query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("query must be 1-{MAX_QUERY_BYTES} bytes"),
        ));
    }
    let language = language.unwrap_or_else(|| DEFAULT_LANGUAGE.into());
    if state.execute.limits().languages.interpreter(&language).is_none() {
        return Err(ApiError::invalid(
            "invalid_language",
            format!("unknown language {language:?} (LANGUAGES)"),
        ));
    }
    let generated = llm.generate(query, &language).await?;
    Ok((language, generated))
}

#[utoipa::path(post, path = "/generate", operation_id = "generateCode", tag = "generate", security(("api_key" = []), ("bearer" = [])),
    request_body = GenerateBody,
    responses((status = 200, description = "Code from the LLM, not run", body = GenerateResponse)))]
pub async fn generate(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<GenerateBody>,
) -> Result<Json<GenerateResponse>, ApiError> {
    let (language, generated) = generate_code(&state, &body.query, body.language).await?;
    tracing::info!(
        target: "brig::audit",
        principal = %principal.id, language, code_bytes = generated.code.len(), "generate"
    );
    Ok(Json(GenerateResponse {
        query: body.query,
        language,
        generated_code: generated.code,
        validation_result: generated.safety_assessment,
        explanation: generated.explanation,
    }))
}

#[utoipa::path(post, path = "/generate-and-execute", operation_id = "generateAndExecute", tag = "generate", security(("api_key" = []), ("bearer" = [])),
    request_body = GenerateAndExecuteBody,
    responses((status = 200, description = "Code from the LLM, run in the sandbox", body = GenerateAndExecuteResponse)))]
pub async fn generate_and_execute(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<GenerateAndExecuteBody>,
) -> Result<Json<GenerateAndExecuteResponse>, ApiError> {
    let session_id = match &body.session_id {
        Some(id) => id.clone(),
        None => SessionId::random().to_string(),
    };
    let options = state
        .config
        .sandbox
        .session_options(None, None, body.memory_limit.as_deref(), body.cpu_limit)?;
    // Everything the client sent is checked before the model is paid for:
    // the run's own validation (session id, timeout, the interpreter against
    // the allowlist or policy), with a stand-in for the code to come.
    llm(&state)?;
    let input = |code: String, language: Option<String>| ExecuteInput {
        session_id: session_id.clone(),
        code: Some(code),
        language: Some(language.unwrap_or_else(|| DEFAULT_LANGUAGE.into())),
        timeout: body.timeout,
        ..ExecuteInput::default()
    };
    state
        .execute
        .validate(&principal, input(String::new(), body.language.clone()))?;
    let (language, generated) = generate_code(&state, &body.query, body.language.clone()).await?;
    let validated = state
        .execute
        .validate(&principal, input(generated.code.clone(), Some(language)))?;
    if !options.is_default() {
        state
            .sessions
            .open_with(&principal.owner(), &validated.session_id, &options)
            .await?;
    }
    let executed = state.execute.run(&principal, validated, state.shutdown.token()).await?;
    let result = executed.result;
    Ok(Json(GenerateAndExecuteResponse {
        query: body.query,
        generated_code: generated.code,
        validation_result: generated.safety_assessment,
        stdout: result.stdout,
        stderr: result.stderr,
        exit_code: result.exit_code,
        timed_out: result.timed_out,
        execution_time: result.execution_time,
        session_id: executed.session_id,
    }))
}
