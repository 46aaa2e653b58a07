//! The HTTP server's own bounds: how long a client may take to send a
//! request or to read the answer, how many connections may be open, and how
//! many response bytes one principal may leave unread.

use std::time::Duration;

use super::{parse_size, positive, seconds, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: time to send a request's headers, from
    /// the moment the server waits for them; an idle keep-alive connection
    /// is closed after the same time.
    pub header_timeout: Duration,
    /// `HTTP_BODY_TIMEOUT_SECONDS`: time to send a request's body.
    pub body_timeout: Duration,
    /// `HTTP_WRITE_TIMEOUT_SECONDS`: how long an answer may wait for a client
    /// that does not read before the connection is dropped.
    pub write_timeout: Duration,
    /// `MAX_CONNECTIONS`: connections served at once; past it, new ones wait
    /// in the listen backlog.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_IP`: connections one source address may hold
    /// (0: no limit, for a proxy in front); past it, new ones are closed.
    pub max_connections_per_ip: usize,
    /// `MAX_UNREAD_RESPONSE_BYTES`: answer bytes one principal may have
    /// waiting for it to read; past it, its requests get 429 `unread_responses`.
    pub max_unread_response_bytes: u64,
}

impl HttpConfig {
    pub(crate) fn from(env: &mut Env<'_>) -> Self {
        HttpConfig {
            header_timeout: env.parse("HTTP_HEADER_TIMEOUT_SECONDS", Duration::from_secs(10), seconds),
            body_timeout: env.parse("HTTP_BODY_TIMEOUT_SECONDS", Duration::from_secs(30), seconds),
            write_timeout: env.parse("HTTP_WRITE_TIMEOUT_SECONDS", Duration::from_secs(15), seconds),
            max_connections: env.parse("MAX_CONNECTIONS", 1024usize, positive),
            max_connections_per_ip: env.parse("MAX_CONNECTIONS_PER_IP", 256usize, |raw| {
                raw.parse::<usize>()
                    .map_err(|_| "must be a number (0: no limit)".into())
            }),
            max_unread_response_bytes: env.parse("MAX_UNREAD_RESPONSE_BYTES", 64u64 << 20, |raw| {
                parse_size("MAX_UNREAD_RESPONSE_BYTES", raw).map_err(|e| e.message)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(vars: &[(&str, &str)]) -> (HttpConfig, Vec<&'static str>) {
        let mut env = Env::from_fn(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()));
        let config = HttpConfig::from(&mut env);
        let errors = env.finish(()).err().map(|e| e.0).unwrap_or_default();
        (config, errors.iter().map(|e| e.variable).collect())
    }

    #[test]
    fn defaults_bound_every_connection() {
        let (config, errors) = parsed(&[]);
        assert!(errors.is_empty());
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.write_timeout, Duration::from_secs(15));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.max_connections_per_ip, 256);
        assert_eq!(config.max_unread_response_bytes, 64 << 20);
    }

    #[test]
    fn bad_values_are_named() {
        let (config, errors) = parsed(&[
            ("HTTP_HEADER_TIMEOUT_SECONDS", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS_PER_IP", "-1"),
            ("MAX_UNREAD_RESPONSE_BYTES", "8m"),
        ]);
        assert_eq!(
            errors,
            [
                "HTTP_HEADER_TIMEOUT_SECONDS",
                "MAX_CONNECTIONS",
                "MAX_CONNECTIONS_PER_IP"
            ]
        );
        assert_eq!(config.max_unread_response_bytes, 8 << 20);
        let (config, errors) = parsed(&[("MAX_CONNECTIONS_PER_IP", "0")]);
        assert!(errors.is_empty());
        assert_eq!(config.max_connections_per_ip, 0);
    }
}
