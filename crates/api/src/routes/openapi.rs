//! The OpenAPI document, generated from the handlers' annotations and the
//! bodies' types (utoipa), served at `GET /openapi.json`.
//!
//! Errors are one shape everywhere (`{"error", "detail"}`); the statuses every
//! endpoint can answer with are added to each operation here rather than
//! repeated on each handler.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{
    contexts, execute, execution_attach, execution_output, executions, files, generate, health, nodes, sessions,
    snapshots,
};

/// Every error: a stable code and a message.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// Stable, machine-readable (e.g. `command_not_allowed`).
    error: String,
    /// For people.
    detail: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "brig",
        description = "Runs untrusted commands in hardened, per-session Docker sandboxes.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        execute::execute,
        executions::start,
        executions::get,
        executions::cancel,
        executions::stdin,
        executions::signal,
        executions::of_session,
        execution_output::output,
        execution_output::events,
        execution_attach::attach,
        execution_attach::resize,
        contexts::create,
        contexts::run,
        contexts::interrupt,
        contexts::delete,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::delete,
        sessions::suspend,
        sessions::renew,
        sessions::get_network,
        sessions::put_network,
        files::put,
        files::get,
        files::delete,
        files::list,
        files::get_archive,
        files::put_archive,
        snapshots::create,
        snapshots::list,
        snapshots::get,
        snapshots::delete,
        generate::generate,
        generate::generate_and_execute,
        nodes::list,
        nodes::drain,
        health::health,
        health::ready,
        mcp,
        metrics,
        document,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security, &CommonErrors),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key from API_KEYS",
            ))),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("METRICS_TOKEN"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("HS256, exp and sub required; sub is the principal"))
                    .build(),
            ),
        );
    }
}

/// The error statuses any operation can answer with, by whether it is
/// authenticated (`security` set) or not.
struct CommonErrors;

const AUTHENTICATED_ERRORS: [(&str, &str); 14] = [
    (
        "400",
        "The request could not be read (e.g. a path that is not valid UTF-8)",
    ),
    ("401", "Missing or invalid credentials"),
    ("403", "Not allowed by the allowlist or policy"),
    (
        "404",
        "Unknown (or another principal's) session, execution or file; a feature that is off",
    ),
    (
        "409",
        "A file operation that does not apply; an idempotent request still running",
    ),
    (
        "410",
        "A kept result (an execution's, an idempotent answer) evicted to keep the principal within \
         RESULT_STORE_QUOTA_BYTES",
    ),
    ("413", "Body or file too large"),
    ("415", "Body not application/json"),
    ("422", "Invalid input"),
    (
        "429",
        "Rate limit, failed authentications from the address, session quota, cooldown, busy sandbox or \
         unread answers; see Retry-After",
    ),
    ("500", "Internal error"),
    ("502", "The sandbox agent or the LLM provider failed"),
    ("503", "A dependency is unavailable; see Retry-After"),
    ("504", "The LLM did not answer in time"),
];

const PUBLIC_ERRORS: [(&str, &str); 1] = [("503", "Not ready: names the failing dependency")];

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let errors: &[(&str, &str)] = if operation.security.is_some() {
                    &AUTHENTICATED_ERRORS
                } else {
                    &PUBLIC_ERRORS
                };
                for (status, description) in errors {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(error_response(description)));
                }
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapiDocument", tag = "health",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `POST /mcp` is served by the MCP service (crate::mcp); this only describes it.
#[utoipa::path(post, path = "/mcp", operation_id = "callMcp", tag = "mcp", security(("api_key" = []), ("bearer" = [])),
    request_body(content = Object, description = "A JSON-RPC 2.0 message of the Model Context Protocol \
        (initialize, tools/list, tools/call with execute, create_session, delete_session, list_sessions, \
        read_file, write_file); send Accept: application/json, text/event-stream"),
    responses(
        (status = 200, description = "The JSON-RPC answer", body = Object),
        (status = 202, description = "A notification was accepted"),
    ))]
#[allow(dead_code)]
fn mcp() {}

/// `GET /metrics` (crate::metrics); this only describes it.
#[utoipa::path(get, path = "/metrics", operation_id = "scrapeMetrics", tag = "health", security(("metrics_token" = [])),
    responses((status = 200, description = "Prometheus text format; 404 unless METRICS_TOKEN is set \
        (or on METRICS_PORT)", body = String, content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}
