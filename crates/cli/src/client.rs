//! The HTTP side of `brig`: requests with the caller's credentials, the API's
//! errors turned into one readable line, and the event stream of `--stream`.

use std::io::Write;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// Why `brig` itself failed.
#[derive(Debug)]
pub enum Failure {
    /// The API answered with an error: status, its stable code and detail.
    Api {
        status: StatusCode,
        error: String,
        detail: String,
    },
    /// The API reported an error inside an event stream, after its 200.
    Stream { error: String, detail: String },
    /// The API could not be reached or answered garbage.
    Transport(String),
    /// Something on this machine (a file, stdin).
    Local(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api { status, error, detail } => write!(f, "{} {error}: {detail}", status.as_u16()),
            Failure::Stream { error, detail } => write!(f, "{error}: {detail}"),
            Failure::Transport(detail) => write!(f, "cannot talk to the brig API: {detail}"),
            Failure::Local(detail) => f.write_str(detail),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `base` as messages show it: without a `user:password@`.
    shown: String,
    api_key: Option<String>,
    token: Option<String>,
}

/// Redirects are followed only within the origin they start from: the key
/// (`X-API-Key`, which reqwest does not know to strip) must never go to
/// another host, port or scheme.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(reqwest::Url::origin);
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|first| first == attempt.url().origin()) {
            attempt.follow()
        } else {
            let to = without_userinfo(attempt.url().as_str());
            attempt.error(format!(
                "refused a redirect to another origin ({to}): your credentials would go with it; \
                 set BRIG_URL to the address that answers"
            ))
        }
    })
}

/// What to do when the API wants credentials and none were given.
pub fn no_credentials() -> Failure {
    Failure::Local("no credentials: set BRIG_API_KEY (or BRIG_TOKEN for a JWT)".into())
}

/// A URL without the `user:password@` of its authority, for messages.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Percent-encodes one path segment (a session id).
pub fn path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Percent-encodes a file path, keeping its `/` separators.
pub fn file_path(path: &str) -> String {
    path.split('/').map(path_segment).collect::<Vec<_>>().join("/")
}

/// Percent-encodes a query value.
pub fn query_value(value: &str) -> String {
    path_segment(value)
}

impl Client {
    /// Credentials may be missing: `/health` and `/ready` need none, and any
    /// other call then fails saying what to set.
    pub fn new(base: &str, api_key: Option<&str>, token: Option<&str>) -> Result<Self, Failure> {
        let scheme = base.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(Failure::Local(format!(
                "BRIG_URL (--url) must start with http:// or https://, e.g. http://localhost:8000; got {base:?}"
            )));
        }
        let base = base.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .redirect(same_origin_redirects())
            .build()
            .map_err(|err| Failure::Local(format!("cannot set up HTTP: {err}")))?;
        Ok(Client {
            http,
            shown: without_userinfo(&base),
            base,
            api_key: api_key.map(String::from),
            token: token.map(String::from),
        })
    }

    /// What went wrong on the way, with what to check.
    pub fn transport(&self, err: &reqwest::Error) -> Failure {
        let mut causes = vec![err.to_string()];
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let hint = if err.is_connect() {
            ": is brig-api running there? (BRIG_URL)"
        } else if err.is_timeout() {
            ": it did not answer in time"
        } else {
            ""
        };
        // reqwest's own text names the URL too: show it without credentials.
        let causes = causes.join(": ").replace(&self.base, &self.shown);
        Failure::Transport(format!("{}: {causes}{hint}", self.shown))
    }

    pub fn has_credentials(&self) -> bool {
        self.api_key.is_some() || self.token.is_some()
    }

    fn builder(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match (&self.api_key, &self.token) {
            (Some(key), _) => request.header("x-api-key", key),
            (None, Some(token)) => request.bearer_auth(token),
            (None, None) => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = request.send().await.map_err(|err| self.transport(&err))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED && !self.has_credentials() {
            return Err(no_credentials());
        }
        let body: Value = response.json().await.unwrap_or_default();
        Err(Failure::Api {
            status,
            error: body["error"].as_str().unwrap_or("http_error").to_string(),
            detail: body["detail"].as_str().unwrap_or("no detail").to_string(),
        })
    }

    /// A JSON request; the JSON answer (`null` for an empty one).
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        self.request_with_status(method, path, body)
            .await
            .map(|(_, value)| value)
    }

    /// [`Client::request`], with the answer's status.
    pub async fn request_with_status(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let mut request = self.builder(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self.send(request).await?;
        let status = response.status();
        let text = response.text().await.map_err(|err| self.transport(&err))?;
        if text.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_str(&text).map_err(|err| Failure::Transport(format!("not JSON: {err}")))?;
        Ok((status, value))
    }

    /// Posts one JSON-RPC message to `/mcp` as it is; the status and body,
    /// whatever they are (the MCP bridge reads both).
    pub async fn mcp(&self, message: String) -> Result<(StatusCode, Vec<u8>), Failure> {
        let response = self
            .builder(Method::POST, "/mcp")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(message)
            .send()
            .await
            .map_err(|err| self.transport(&err))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| self.transport(&err))?;
        Ok((status, body.to_vec()))
    }

    /// Opens the WebSocket at `path` (the API's scheme, `ws` or `wss`),
    /// with this client's credentials.
    pub async fn websocket(
        &self,
        path: &str,
    ) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, Failure>
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Error;
        let url = format!("ws{}{path}", self.base.strip_prefix("http").unwrap_or(&self.base));
        let mut request = url
            .into_client_request()
            .map_err(|err| Failure::Local(format!("{}: {err}", self.shown)))?;
        let credentials = match (&self.api_key, &self.token) {
            (Some(key), _) => Some(("x-api-key", key.clone())),
            (None, Some(token)) => Some(("authorization", format!("Bearer {token}"))),
            (None, None) => None,
        };
        if let Some((name, value)) = credentials {
            let value = value
                .parse()
                .map_err(|_| Failure::Local("credentials are not a valid header".into()))?;
            request.headers_mut().insert(name, value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(Error::Http(response)) => {
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|body| serde_json::from_slice(body).ok())
                    .unwrap_or_default();
                let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                if status == StatusCode::UNAUTHORIZED && !self.has_credentials() {
                    return Err(no_credentials());
                }
                Err(Failure::Api {
                    status,
                    error: body["error"].as_str().unwrap_or("http_error").to_string(),
                    detail: body["detail"].as_str().unwrap_or("no detail").to_string(),
                })
            }
            Err(err) => Err(Failure::Transport(format!("{}: {err}", self.shown))),
        }
    }

    pub async fn put_file(&self, path: &str, data: Vec<u8>) -> Result<(), Failure> {
        self.send(self.builder(Method::PUT, path).body(data)).await.map(drop)
    }

    /// PUT with a streamed body.
    pub async fn put_stream(&self, path: &str, body: reqwest::Body) -> Result<(), Failure> {
        self.send(self.builder(Method::PUT, path).body(body)).await.map(drop)
    }

    /// GET, the answer's body still to read (a failure status is an error).
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, Failure> {
        self.send(self.builder(Method::GET, path)).await
    }

    pub async fn get_file(&self, path: &str) -> Result<Vec<u8>, Failure> {
        let response = self.send(self.builder(Method::GET, path)).await?;
        let bytes = response.bytes().await.map_err(|err| self.transport(&err))?;
        Ok(bytes.to_vec())
    }

    /// `POST /execute` as Server-Sent Events: output printed as it arrives,
    /// the `exit` event's result returned.
    pub async fn execute_streaming(&self, body: &Value) -> Result<Value, Failure> {
        let request = self
            .builder(Method::POST, "/execute")
            .header("accept", "text/event-stream")
            .json(body);
        let mut response = self.send(request).await?;
        // Bytes, not text: a chunk may end inside a UTF-8 character; an event
        // (ending in a blank line) never does.
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
                let raw: Vec<u8> = buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&raw);
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                let data: Value = serde_json::from_str(&data).unwrap_or_default();
                match event.as_str() {
                    "stdout" => print_chunk(&mut std::io::stdout(), &data),
                    "stderr" => print_chunk(&mut std::io::stderr(), &data),
                    "exit" => return Ok(data),
                    "error" => {
                        return Err(Failure::Stream {
                            error: data["error"].as_str().unwrap_or("error").to_string(),
                            detail: data["detail"].as_str().unwrap_or_default().to_string(),
                        })
                    }
                    _ => {}
                }
            }
            match response.chunk().await {
                Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
                Ok(None) => return Err(Failure::Transport("the stream ended without a result".into())),
                Err(err) => return Err(self.transport(&err)),
            }
        }
    }
}

fn print_chunk(out: &mut impl Write, data: &Value) {
    let _ = out
        .write_all(data["data"].as_str().unwrap_or_default().as_bytes())
        .and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_the_urls_credentials() {
        assert_eq!(without_userinfo("http://u:p@host:8000/x@y"), "http://host:8000/x@y");
        assert_eq!(without_userinfo("https://host"), "https://host");
        let client = Client::new("http://me:secret@127.0.0.1:9", Some("k"), None).unwrap();
        let err = transport_error(&client);
        assert!(!err.contains("secret"), "{err}");
    }

    /// Red team L6: the key went along on a redirect to another origin.
    #[test]
    fn credentials_never_follow_a_redirect_to_another_origin() {
        use std::io::{Read, Write};
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let elsewhere_port = elsewhere.local_addr().unwrap().port();
        elsewhere.set_nonblocking(true).unwrap();
        let redirecting = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = redirecting.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = redirecting.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere_port}/sessions\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(answer.as_bytes()).unwrap();
        });
        let client = Client::new(&format!("http://127.0.0.1:{port}"), Some("secret-key"), None).unwrap();
        let err = transport_error(&client);
        server.join().unwrap();
        assert!(err.contains("refused a redirect to another origin"), "{err}");
        assert!(
            elsewhere.accept().is_err(),
            "the other origin was contacted (with the key)"
        );
    }

    /// The failure's message of `GET /sessions` through `client`.
    fn transport_error(client: &Client) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(client.request(Method::GET, "/sessions", None))
            .unwrap_err()
            .to_string()
    }
}
