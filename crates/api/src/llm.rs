//! A chat-completions client for `/generate`: one prompt asking for a JSON
//! object `{code, safety_assessment, explanation}`, with a fallback to the
//! first fenced code block. The model's output is untrusted input: what it
//! says about safety is reported, never relied on; the sandbox is the boundary.
//!
//! Only the client's query and brig's fixed instructions are sent; the key goes
//! in the `Authorization` header and nowhere else, and is never logged.

use std::time::Duration;

use brig_core::config::LlmConfig;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

/// What the model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub code: String,
    /// The model's own safety assessment (`None` on the fenced-block fallback).
    pub safety_assessment: Option<String>,
    pub explanation: Option<String>,
}

/// Why no code came back.
#[derive(Debug, PartialEq, Eq)]
pub enum LlmError {
    /// No answer within `LLM_TIMEOUT_SECONDS`.
    Timeout,
    /// The provider could not be reached, or answered with an error status.
    Unavailable { status: Option<u16>, detail: String },
    /// The provider answered, but not with usable code.
    BadReply(String),
}

impl From<LlmError> for ApiError {
    fn from(err: LlmError) -> Self {
        match err {
            LlmError::Timeout => ApiError::LlmTimeout,
            LlmError::Unavailable { status, detail } => ApiError::LlmUnavailable(match status {
                Some(status) => format!("the language model provider answered {status}: {detail}"),
                None => format!("the language model provider is unreachable: {detail}"),
            }),
            LlmError::BadReply(detail) => ApiError::LlmBadReply(detail),
        }
    }
}

pub struct Llm {
    client: reqwest::Client,
    config: LlmConfig,
}

/// Largest provider reply read.
const MAX_REPLY_BYTES: usize = 4 << 20;

/// The body, read no further than `limit` bytes: `None` past it. A provider
/// (or whoever sits on a plain-http path to it) cannot make brig hold more.
async fn read_at_most(mut response: reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

impl Llm {
    pub fn new(config: LlmConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Llm { client, config }
    }

    fn prompt(language: &str) -> String {
        format!(
            "You write {language} programs. The program runs non-interactively, as an unprivileged user, \
             in a sandbox without network access; it reads nothing from stdin and prints its results. \
             Answer with exactly one JSON object and nothing else: \
             {{\"code\": \"<the complete {language} program>\", \
             \"safety_assessment\": \"<one sentence: what the program does to the system, and whether that is safe>\", \
             \"explanation\": \"<one sentence: how the program answers the task>\"}}"
        )
    }

    /// Asks the model for a `language` program that does `query`.
    pub async fn generate(&self, query: &str, language: &str) -> Result<Generated, LlmError> {
        let body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": Self::prompt(language)},
                {"role": "user", "content": query},
            ],
            "temperature": 0,
        });
        let mut request = self
            .client
            .post(format!("{}/chat/completions", self.config.base_url))
            .json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = read_at_most(response, MAX_REPLY_BYTES).await.map_err(transport)?;
        if !status.is_success() {
            let detail = body.as_deref().unwrap_or_default();
            return Err(LlmError::Unavailable {
                status: Some(status.as_u16()),
                detail: String::from_utf8_lossy(&detail[..detail.len().min(200)]).into_owned(),
            });
        }
        let Some(bytes) = body else {
            return Err(LlmError::BadReply("reply larger than 4 MiB".into()));
        };
        let completion: Completion = serde_json::from_slice(&bytes)
            .map_err(|err| LlmError::BadReply(format!("not a chat completion: {err}")))?;
        let content = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .ok_or_else(|| LlmError::BadReply("no message content".into()))?;
        let generated = parse_reply(&content)?;
        if generated.code.len() > self.config.max_code_bytes {
            return Err(LlmError::BadReply(format!(
                "generated code of {} bytes exceeds LLM_MAX_CODE_BYTES ({})",
                generated.code.len(),
                self.config.max_code_bytes
            )));
        }
        Ok(generated)
    }
}

/// Reqwest's errors name the URL (never the key, which is a header).
fn transport(err: reqwest::Error) -> LlmError {
    if err.is_timeout() {
        LlmError::Timeout
    } else {
        LlmError::Unavailable {
            status: None,
            detail: err.without_url().to_string(),
        }
    }
}

/// The JSON object the prompt asks for (bare or in a fence), or else the
/// first fenced code block.
pub fn parse_reply(content: &str) -> Result<Generated, LlmError> {
    let fenced = first_fenced_block(content);
    let candidates = [Some(content.trim()), fenced.map(|(_, body)| body)];
    for candidate in candidates.into_iter().flatten() {
        if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(candidate) {
            let text = |field: &str| object.get(field).and_then(Value::as_str).map(String::from);
            if let Some(code) = text("code").filter(|code| !code.trim().is_empty()) {
                return Ok(Generated {
                    code,
                    safety_assessment: text("safety_assessment"),
                    explanation: text("explanation"),
                });
            }
        }
    }
    match fenced {
        Some((tag, body)) if !body.trim().is_empty() && tag != "json" => Ok(Generated {
            code: body.to_string(),
            safety_assessment: None,
            explanation: None,
        }),
        _ => Err(LlmError::BadReply(
            "neither the JSON object asked for nor a fenced code block".into(),
        )),
    }
}

/// The info string and body of the first ``` fenced block.
fn first_fenced_block(content: &str) -> Option<(&str, &str)> {
    let start = content.find("```")? + 3;
    let rest = &content[start..];
    let line_end = rest.find('\n')?;
    let tag = rest[..line_end].trim();
    let body = &rest[line_end + 1..];
    let end = body.find("```")?;
    Some((tag, &body[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bare_or_fenced_then_a_fenced_block_then_nothing() {
        let json = r#"{"code": "print(1)", "safety_assessment": "harmless", "explanation": "prints"}"#;
        let parsed = parse_reply(json).unwrap();
        assert_eq!(parsed.code, "print(1)");
        assert_eq!(parsed.safety_assessment.as_deref(), Some("harmless"));
        assert_eq!(parse_reply(&format!("Sure:\n```json\n{json}\n```")).unwrap(), parsed);
        let prose = "Here you go:\n```python\nimport sys\nprint(2)\n```\nEnjoy.";
        let fallback = parse_reply(prose).unwrap();
        assert_eq!(fallback.code, "import sys\nprint(2)\n");
        assert_eq!(fallback.safety_assessment, None);
        for garbage in [
            "",
            "no code here",
            "```\n```",
            "{\"code\": 5}",
            "```json\n{\"x\": 1}\n```",
            "```python",
        ] {
            assert!(
                matches!(parse_reply(garbage), Err(LlmError::BadReply(_))),
                "{garbage:?}"
            );
        }
    }
}
