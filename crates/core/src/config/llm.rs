//! The LLM behind `/generate` and `/generate-and-execute`: any endpoint that
//! speaks OpenAI's chat-completions protocol (OpenAI, Together AI, vLLM,
//! Ollama). Off unless `LLM_BASE_URL` is set.

use std::time::Duration;

use secrecy::SecretString;

use super::Env;

#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// `LLM_BASE_URL`, without a trailing `/` (e.g. `https://api.openai.com/v1`);
    /// brig posts to `<base>/chat/completions`.
    pub base_url: String,
    /// `LLM_API_KEY`: sent only as `Authorization: Bearer`, never logged.
    pub api_key: Option<SecretString>,
    /// `LLM_MODEL`.
    pub model: String,
    /// `LLM_TIMEOUT_SECONDS` (default 60).
    pub timeout: Duration,
    /// `LLM_MAX_CODE_BYTES` (default 65536): larger generated code is refused.
    pub max_code_bytes: usize,
}

impl LlmConfig {
    pub(super) fn from_env(env: &mut Env<'_>) -> Option<Self> {
        let base_url = env.get("LLM_BASE_URL")?;
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            env.error("LLM_BASE_URL", "must be an http:// or https:// URL");
        }
        let model = env.get("LLM_MODEL").unwrap_or_else(|| {
            env.error("LLM_MODEL", "is required when LLM_BASE_URL is set");
            String::new()
        });
        let timeout = env.parse("LLM_TIMEOUT_SECONDS", Duration::from_secs(60), super::seconds);
        let max_code_bytes = env.parse("LLM_MAX_CODE_BYTES", 64 * 1024, |raw| {
            raw.parse::<usize>()
                .ok()
                .filter(|n| (1..=1024 * 1024).contains(n))
                .ok_or_else(|| "must be 1-1048576".into())
        });
        Some(LlmConfig {
            base_url,
            api_key: env.get("LLM_API_KEY").map(SecretString::from),
            model,
            timeout,
            max_code_bytes,
        })
    }
}
