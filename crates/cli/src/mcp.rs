//! `brig mcp`: the MCP server of a brig API over stdio, for MCP clients that
//! start their servers as processes (desktop apps, agent frameworks). Each
//! JSON-RPC message read from stdin (one per line) is posted to `/mcp` with
//! the caller's credentials; each answer is written to stdout as one line.
//! Requests run concurrently (a ping is not stuck behind a long `execute`),
//! at most [`IN_FLIGHT`] at a time. What the bridge itself cannot deliver (the
//! API unreachable, a 401, a 429) is answered to a request as a JSON-RPC error
//! carrying its id, so the client says why; for a notification it goes to
//! stderr. A line over [`MAX_LINE`] bytes is skipped, answered with an error
//! (its id unread: null). Ends when stdin does, once every answer is written.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

use crate::client::{Client, Failure};

/// Requests posted at once.
const IN_FLIGHT: usize = 16;

/// JSON-RPC's code for an error of the server side (the bridge and the API).
const SERVER_ERROR: i64 = -32000;
/// JSON-RPC's code for a message that is not a valid request.
const INVALID_REQUEST: i64 = -32600;
/// The longest line (one message) read from stdin, and what a longer one is.
const MAX_LINE: usize = 32 << 20;
const TOO_LONG: &str = "a message over 32 MiB";

/// A line of stdin.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    /// Longer than the bound (skipped to its end), or not UTF-8.
    Refused(&'static str),
}

/// The next line of `input` (without its newline), holding at most `max`
/// bytes of it: the rest of a longer one is read and dropped. `None` at the end.
async fn next_line(input: &mut (impl AsyncBufRead + Unpin), max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut over = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            if line.is_empty() && !over {
                return Ok(None);
            }
            break;
        }
        let (chunk, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !over && line.len() + chunk.len() <= max {
            line.extend_from_slice(chunk);
        } else {
            over = true;
            line = Vec::new();
        }
        let used = ended.unwrap_or(available.len());
        input.consume(used);
        if ended.is_some() {
            break;
        }
    }
    if over {
        return Ok(Some(Line::Refused(TOO_LONG)));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(
        String::from_utf8(line).map_or(Line::Refused("a message that is not UTF-8"), Line::Text),
    ))
}

pub async fn bridge(client: Client) -> Result<u8, Failure> {
    let stdout = Arc::new(Mutex::new(tokio::io::stdout()));
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    while let Some(line) = next_line(&mut stdin, MAX_LINE)
        .await
        .map_err(|err| Failure::Local(format!("reading stdin: {err}")))?
    {
        let line = match line {
            Line::Text(line) => line,
            Line::Refused(why) => {
                eprintln!("brig mcp: skipped {why}");
                let refusal = json!({
                    "jsonrpc": "2.0",
                    "id": null,
                    "error": {"code": INVALID_REQUEST, "message": format!("brig: {why}")},
                });
                let mut out = stdout.lock().await;
                let _ = out.write_all(format!("{refusal}\n").as_bytes()).await;
                let _ = out.flush().await;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (client, stdout) = (client.clone(), stdout.clone());
        tasks.spawn(async move {
            let answers = forward(&client, line).await;
            let mut out = stdout.lock().await;
            for answer in answers {
                let _ = out.write_all(format!("{answer}\n").as_bytes()).await;
            }
            let _ = out.flush().await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(0)
}

/// Posts one message; the messages to write back (none for a notification
/// the API accepted).
async fn forward(client: &Client, line: String) -> Vec<Value> {
    // The id, when the line is JSON with one: errors of the bridge carry it.
    let id = serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|message| message.get("id").cloned());
    let failure = match client.mcp(line).await {
        Ok((status, _)) if status == reqwest::StatusCode::UNAUTHORIZED && !client.has_credentials() => {
            crate::client::no_credentials().to_string()
        }
        Ok((status, body)) => match answers(&body) {
            Some(answers) => return answers,
            None if body.iter().all(u8::is_ascii_whitespace) && status.is_success() => return Vec::new(),
            None => {
                let text = String::from_utf8_lossy(&body);
                let detail: Value = serde_json::from_str(&text).unwrap_or_default();
                match (detail["error"].as_str(), detail["detail"].as_str()) {
                    (Some(error), Some(detail)) => format!("{} {error}: {detail}", status.as_u16()),
                    _ => format!("{} {}", status.as_u16(), text.trim()),
                }
            }
        },
        Err(failure) => failure.to_string(),
    };
    match id {
        Some(id) => vec![json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": SERVER_ERROR, "message": format!("brig: {failure}")},
        })],
        None => {
            eprintln!("brig mcp: {failure}");
            Vec::new()
        }
    }
}

/// JSON-RPC messages in an answer: a JSON body, or the `data:` lines of an
/// event stream. `None` when there are none (an API error, an empty body).
fn answers(body: &[u8]) -> Option<Vec<Value>> {
    let text = std::str::from_utf8(body).ok()?;
    let is_message = |value: &Value| value.get("jsonrpc").is_some();
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return is_message(&value).then(|| vec![value]);
    }
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter(is_message)
        .collect();
    (!events.is_empty()).then_some(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_whole_up_to_the_bound_and_longer_ones_are_skipped() {
        let input = b"{\"id\":1}\r\n0123456789abcdef\nshort\n\xff\ntail";
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut read = Vec::new();
        while let Some(line) = next_line(&mut reader, 10).await.unwrap() {
            read.push(line);
        }
        assert_eq!(
            read,
            vec![
                Line::Text("{\"id\":1}".into()),
                Line::Refused(TOO_LONG),
                Line::Text("short".into()),
                Line::Refused("a message that is not UTF-8"),
                Line::Text("tail".into()),
            ]
        );
    }

    #[test]
    fn answers_come_from_json_bodies_or_event_streams_and_never_from_api_errors() {
        let message = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert_eq!(answers(message.to_string().as_bytes()), Some(vec![message.clone()]));
        let stream = format!("event: message\ndata: {message}\n\n");
        assert_eq!(answers(stream.as_bytes()), Some(vec![message]));
        assert_eq!(answers(br#"{"error": "unauthorized", "detail": "no key"}"#), None);
        assert_eq!(answers(b""), None);
        assert_eq!(answers(b"Not Acceptable"), None);
    }
}
