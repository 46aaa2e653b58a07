//! `brig shell` and `brig exec -i [-t]`: a command whose stdin is this
//! terminal (or pipe), attached over the API's WebSocket
//! (`/executions/{id}/attach`). With `-t` the command runs under a terminal
//! in the sandbox, sized like this one (and resized with it), and this
//! terminal is put in raw mode for the while, so that Ctrl-C, arrows and
//! tab reach the sandbox's shell; it is restored however the session ends.

use std::io::{IsTerminal, Read, Write};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, Failure};

/// What to run, and how.
pub struct Interactive<'a> {
    pub session: &'a str,
    pub command: String,
    pub tty: bool,
    pub timeout: Option<f64>,
}

/// Runs it; its exit code (125 when brig itself failed on the way).
pub async fn run(client: &Client, what: Interactive<'_>) -> Result<u8, Failure> {
    let local_terminal = what.tty && std::io::stdin().is_terminal();
    let mut body = json!({"command": what.command, "session_id": what.session, "stdin": "pipe"});
    if what.tty {
        let (rows, cols) = window_size().unwrap_or((24, 80));
        body["tty"] = json!({"rows": rows, "cols": cols});
    }
    if let Some(timeout) = what.timeout {
        body["timeout"] = json!(timeout);
    }
    let started = client
        .request(reqwest::Method::POST, "/executions", Some(&body))
        .await?;
    let id = started["execution_id"].as_str().unwrap_or_default().to_string();
    let socket = client.websocket(&format!("/executions/{id}/attach")).await?;
    let raw = if local_terminal { RawMode::enable() } else { None };
    let ended = pump(socket, what.tty).await;
    drop(raw);
    let last = ended?;
    if let Some(exit) = last.get("exit") {
        return Ok(exit["exit_code"].as_i64().unwrap_or(125).clamp(0, 255) as u8);
    }
    Err(Failure::Api {
        status: reqwest::StatusCode::BAD_GATEWAY,
        error: last["error"]["error"].as_str().unwrap_or("attach_failed").to_string(),
        detail: last["error"]["detail"]
            .as_str()
            .unwrap_or("the attachment ended without the command's end")
            .to_string(),
    })
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Moves bytes until the server's last word (`{"exit"}` or `{"error"}`).
async fn pump(socket: Socket, tty: bool) -> Result<Value, Failure> {
    let (mut to_server, mut from_server) = socket.split();
    let (mut keys, mut typing) = (read_stdin(), true);
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|err| Failure::Local(format!("watching the window size: {err}")))?;
    let mut stdout = std::io::stdout();
    let lost = |err: tokio_tungstenite::tungstenite::Error| Failure::Transport(format!("the attachment broke: {err}"));
    loop {
        tokio::select! {
            message = from_server.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
                }
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap_or_default()),
                Some(Ok(Message::Close(_))) | None => {
                    return Err(Failure::Transport("the API closed the attachment".into()))
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(lost(err)),
            },
            typed = keys.recv(), if typing => match typed {
                Some(bytes) => to_server.send(Message::Binary(bytes.into())).await.map_err(lost)?,
                None => {
                    typing = false;
                    // Our stdin ended (a file or a pipe: a terminal in raw
                    // mode never ends): so does the command's, under a
                    // terminal as its EOF character.
                    let eof = json!({"eof": true}).to_string();
                    to_server.send(Message::Text(eof.into())).await.map_err(lost)?;
                }
            },
            _ = resized.recv(), if tty => {
                if let Some((rows, cols)) = window_size() {
                    let resize = json!({"resize": {"rows": rows, "cols": cols}}).to_string();
                    to_server.send(Message::Text(resize.into())).await.map_err(lost)?;
                }
            }
        }
    }
}

/// This process's stdin, read on a thread of its own (a terminal read
/// blocks), in chunks as they come.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// This terminal's size, if stdout (or stdin) is one.
fn window_size() -> Option<(u16, u16)> {
    let size = rustix::termios::tcgetwinsize(std::io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdin()))
        .ok()?;
    (size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// This terminal in raw mode until dropped.
struct RawMode(rustix::termios::Termios);

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}
