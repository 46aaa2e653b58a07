//! Streamed transfers under a sandbox's `/workspace`: files of any size and
//! directories as tar, through the agent's one-shot modes (`brig-agent
//! put|get|tar-out|tar-in`, see the agent's `transfer` module) over an engine
//! exec, never the command channel, so any replica can serve them and
//! commands never queue behind a transfer.
//!
//! Bytes travel as protocol frames: `Data` chunks of at most
//! [`MAX_TUNNEL_CHUNK`] ended by `Shut` into the agent, `Data` then one
//! `FileDone` or `Error` out of it. An upload whose source fails midway is
//! never ended with `Shut`, so the agent keeps nothing of it. Neither side
//! holds more than a chunk: the exec's connection carries the backpressure.

use std::pin::Pin;
use std::time::Duration;

use brig_protocol::{Frame, FrameDecoder, MAX_TUNNEL_CHUNK};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::RuntimeError;

/// Longest wait for the next chunk either way before a transfer is given up.
pub const TRANSFER_IDLE: Duration = Duration::from_secs(60);

/// What to move, with a path relative to `/workspace` (already checked by
/// the caller's rules; the agent checks it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// A file in (its parents created), kept only once complete.
    Put(String),
    /// A file out.
    Get(String),
    /// A directory out as tar (empty: `/workspace`).
    TarOut(String),
    /// A tar extracted into a directory (created; empty: `/workspace`).
    TarIn(String),
}

impl Transfer {
    /// The agent's arguments for this transfer.
    pub fn agent_args(&self) -> [String; 2] {
        let (verb, path) = match self {
            Transfer::Put(path) => ("put", path),
            Transfer::Get(path) => ("get", path),
            Transfer::TarOut(path) => ("tar-out", path),
            Transfer::TarIn(path) => ("tar-in", path),
        };
        [verb.to_string(), path.clone()]
    }

    /// Whether bytes flow into the sandbox.
    pub fn uploads(&self) -> bool {
        matches!(self, Transfer::Put(_) | Transfer::TarIn(_))
    }
}

/// Bytes out of a sandbox, as they come.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RuntimeError>> + Send>>;

/// The agent's stdin and stdout for one transfer.
pub struct AgentIo {
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub output: ByteStream,
}

/// Sends `body` into a `Put` or `TarIn` transfer and waits for the agent's
/// verdict. A `body` error ends the upload without its end marker. The agent
/// may answer before the upload ends (a refused path, a full workspace): its
/// answer is taken at once, the rest of the body left unread.
pub async fn upload<E: std::fmt::Display>(
    io: AgentIo,
    body: impl Stream<Item = Result<Bytes, E>> + Send,
) -> Result<u64, RuntimeError> {
    let AgentIo { mut input, output } = io;
    let mut replies = Replies::new(output);
    let send = send_all(&mut input, body);
    let sent = tokio::select! {
        // The upload first: an answer only cuts it short while it waits.
        biased;
        sent = send => sent,
        early = replies.next() => return Err(answered_early(early)),
    };
    let sent = match sent {
        Ok(sent) => sent,
        // The agent stopped reading: its answer most likely says why.
        Err(RuntimeError::ChannelClosed) => {
            return Err(
                match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
                    Ok(answer) => answered_early(answer),
                    Err(_) => RuntimeError::ChannelClosed,
                },
            )
        }
        Err(err) => return Err(err),
    };
    match replies.next().await? {
        Some(Reply::Done) => Ok(sent),
        Some(Reply::Data(_)) => Err(RuntimeError::Protocol("data in answer to an upload".into())),
        None => Err(RuntimeError::ChannelClosed),
    }
}

/// What an answer that came before the end of an upload means.
fn answered_early(answer: Result<Option<Reply>, RuntimeError>) -> RuntimeError {
    match answer {
        Err(err) => err,
        Ok(Some(_)) => RuntimeError::Protocol("the agent answered before the upload ended".into()),
        Ok(None) => RuntimeError::ChannelClosed,
    }
}

/// Writes `body` as `Data` frames, then `Shut`; the bytes sent.
async fn send_all<E: std::fmt::Display>(
    input: &mut Pin<Box<dyn AsyncWrite + Send>>,
    body: impl Stream<Item = Result<Bytes, E>> + Send,
) -> Result<u64, RuntimeError> {
    let mut body = std::pin::pin!(body);
    let mut sent = 0u64;
    loop {
        let chunk = tokio::time::timeout(TRANSFER_IDLE, body.next())
            .await
            .map_err(|_| RuntimeError::InvalidRequest("the upload stalled".into()))?;
        let chunk = match chunk {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => {
                return Err(RuntimeError::InvalidRequest(format!(
                    "the upload was interrupted: {err}"
                )));
            }
        };
        for piece in chunk.chunks(MAX_TUNNEL_CHUNK) {
            let frame = Frame::Data {
                id: 1,
                data: piece.to_vec(),
            };
            write(input, &frame.encode()).await?;
            sent += piece.len() as u64;
        }
    }
    write(input, &Frame::Shut { id: 1 }.encode()).await?;
    input.flush().await.map_err(|_| RuntimeError::ChannelClosed)?;
    Ok(sent)
}

async fn write(input: &mut Pin<Box<dyn AsyncWrite + Send>>, bytes: &[u8]) -> Result<(), RuntimeError> {
    match tokio::time::timeout(TRANSFER_IDLE, input.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(RuntimeError::ChannelClosed),
        Err(_) => Err(RuntimeError::AgentUnresponsive),
    }
}

/// The bytes of a `Get` or `TarOut` transfer. The first chunk is awaited
/// here, so that a missing file or a refused path is an error before any
/// byte is promised to a client; afterwards an error ends the stream.
pub async fn download(io: AgentIo) -> Result<ByteStream, RuntimeError> {
    let mut replies = Replies::new(io.output);
    let first = replies.next().await?;
    let rest = futures_util::stream::unfold(replies, |mut replies| async move {
        match replies.next().await {
            Ok(Some(Reply::Data(data))) => Some((Ok(data), replies)),
            Ok(Some(Reply::Done)) => None,
            Ok(None) => Some((Err(RuntimeError::ChannelClosed), replies)),
            Err(err) => Some((Err(err), replies)),
        }
    });
    // After an error the stream ends: the client sees a cut transfer.
    let rest = rest.scan(false, |failed, item| {
        let out = if *failed { None } else { Some(item) };
        if matches!(out, Some(Err(_))) {
            *failed = true;
        }
        futures_util::future::ready(out)
    });
    let head: ByteStream = match first {
        Some(Reply::Data(data)) => Box::pin(futures_util::stream::once(async move { Ok(data) }).chain(rest)),
        Some(Reply::Done) => Box::pin(futures_util::stream::empty()),
        None => return Err(RuntimeError::ChannelClosed),
    };
    Ok(head)
}

enum Reply {
    Data(Bytes),
    Done,
}

/// The agent's frames, read as they come (each wait bounded).
struct Replies {
    output: ByteStream,
    decoder: FrameDecoder,
    /// The first bytes, until a frame is decoded: what the engine wrote if
    /// the agent never started.
    head: Option<Vec<u8>>,
}

impl Replies {
    fn new(output: ByteStream) -> Self {
        Replies {
            output,
            decoder: FrameDecoder::new(),
            head: Some(Vec::new()),
        }
    }

    /// The next reply; `Ok(None)` when the agent's output ended without one.
    async fn next(&mut self) -> Result<Option<Reply>, RuntimeError> {
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                let frame = match (frame, self.head.take()) {
                    (Ok(frame), _) => frame,
                    (Err(_), Some(head)) => return Err(super::exec_not_started(&head)),
                    (Err(err), None) => return Err(RuntimeError::Protocol(err.to_string())),
                };
                return match frame {
                    Frame::Data { id: 1, data } => Ok(Some(Reply::Data(Bytes::from(data)))),
                    Frame::FileDone { id: 1, .. } => Ok(Some(Reply::Done)),
                    Frame::Error { code, message, .. } => Err(super::docker::request_error(code, message)),
                    other => Err(RuntimeError::Protocol(format!(
                        "unexpected frame for request {} in a transfer",
                        other.id()
                    ))),
                };
            }
            match tokio::time::timeout(TRANSFER_IDLE, self.output.next()).await {
                Err(_) => return Err(RuntimeError::AgentUnresponsive),
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) => {
                    let chunk = chunk?;
                    if let Some(head) = self.head.as_mut().filter(|head| head.len() < EXEC_MESSAGE) {
                        head.extend_from_slice(&chunk[..chunk.len().min(EXEC_MESSAGE - head.len())]);
                    }
                    self.decoder.push(&chunk);
                }
            }
        }
    }
}

/// How much of an engine's message (an exec that never started) is kept.
const EXEC_MESSAGE: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_saying(frames: Vec<Frame>) -> AgentIo {
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // Split the wire oddly, as a connection would.
        let chunks: Vec<Result<Bytes, RuntimeError>> = wire.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        AgentIo {
            input: Box::pin(tokio::io::sink()),
            output: Box::pin(futures_util::stream::iter(chunks)),
        }
    }

    /// Docker writes an exec's start failure into its output (seen under
    /// schemathesis: "frame length 1329809696", which is "OCI "): the
    /// sandbox could not serve, which is no protocol violation of the agent's.
    #[tokio::test]
    async fn an_exec_the_engine_could_not_start_is_an_unavailable_sandbox() {
        let message = "OCI runtime exec failed: exec failed: container_linux.go:380: starting container process \
                       caused: process_linux.go:130: executing setns process caused: exit status 1: unknown\r\n";
        let io = AgentIo {
            input: Box::pin(tokio::io::sink()),
            output: Box::pin(futures_util::stream::iter([Ok(Bytes::from(message))])),
        };
        assert!(matches!(download(io).await, Err(RuntimeError::ChannelClosed)));
        // After a first frame, garbage is the agent's: a protocol violation.
        let mut wire = Frame::Data {
            id: 1,
            data: b"x".to_vec(),
        }
        .encode();
        wire.extend_from_slice(message.as_bytes());
        let io = AgentIo {
            input: Box::pin(tokio::io::sink()),
            output: Box::pin(futures_util::stream::iter([Ok(Bytes::from(wire))])),
        };
        let chunks: Vec<_> = download(io).await.unwrap().collect().await;
        assert!(
            matches!(chunks.last(), Some(Err(RuntimeError::Protocol(_)))),
            "{chunks:?}"
        );
    }

    #[tokio::test]
    async fn a_download_yields_the_data_and_ends_at_done() {
        let io = agent_saying(vec![
            Frame::Data {
                id: 1,
                data: b"hello ".to_vec(),
            },
            Frame::Data {
                id: 1,
                data: b"world".to_vec(),
            },
            Frame::FileDone {
                id: 1,
                reply: brig_protocol::FileReply::Done,
            },
        ]);
        let chunks: Vec<_> = download(io).await.unwrap().collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"hello world");
    }

    #[tokio::test]
    async fn an_error_before_the_data_is_an_error_and_after_it_cuts_the_stream() {
        let io = agent_saying(vec![Frame::Error {
            id: 1,
            code: brig_protocol::ErrorCode::FileNotFound,
            message: "nope: No such file".into(),
        }]);
        assert!(matches!(download(io).await, Err(RuntimeError::FileNotFound(_))));
        let io = agent_saying(vec![Frame::Data {
            id: 1,
            data: b"part".to_vec(),
        }]);
        let chunks: Vec<_> = download(io).await.unwrap().collect().await;
        assert_eq!(chunks.len(), 2);
        assert!(matches!(chunks[1], Err(RuntimeError::ChannelClosed)), "no Done: cut");
    }

    #[tokio::test]
    async fn an_upload_is_framed_and_a_failed_source_is_reported() {
        let done = || {
            agent_saying(vec![Frame::FileDone {
                id: 1,
                reply: brig_protocol::FileReply::Done,
            }])
        };
        let big = Bytes::from(vec![1u8; MAX_TUNNEL_CHUNK * 2 + 5]);
        let sent = upload(done(), futures_util::stream::iter([Ok::<_, String>(big)]))
            .await
            .unwrap();
        assert_eq!(sent, (MAX_TUNNEL_CHUNK * 2 + 5) as u64);
        let failed = upload(
            done(),
            futures_util::stream::iter([Err::<Bytes, _>("reset".to_string())]),
        )
        .await;
        assert!(matches!(failed, Err(RuntimeError::InvalidRequest(m)) if m.contains("interrupted")));
        let refused = agent_saying(vec![Frame::Error {
            id: 1,
            code: brig_protocol::ErrorCode::FileTooLarge,
            message: "x: No space left on device".into(),
        }]);
        let err = upload(
            refused,
            futures_util::stream::iter([Ok::<_, String>(Bytes::from_static(b"x"))]),
        )
        .await;
        assert!(matches!(err, Err(RuntimeError::FileTooLarge(_))), "{err:?}");
    }
}
