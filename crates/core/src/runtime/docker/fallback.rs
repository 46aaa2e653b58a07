//! One command through the engine's exec API and the agent's one-shot mode
//! (`brig-agent run --frames`): for a sandbox whose attach channel belongs to
//! another API process. The same supervisor runs the command (process group,
//! deadline, caps, leftovers), and its answer comes back as protocol frames on
//! the exec's stdout, decoded as strictly as the channel's.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use brig_protocol::{FileReply, FileRequest, Frame, FrameDecoder, RunRequest, Stream};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::channel::{append_capped, check_fits, request_error, Finished};
use super::engine_error;
use crate::agent_binary::AGENT_PATH;
use crate::runtime::transfer::{AgentIo, Transfer};
use crate::runtime::RuntimeError;
use crate::sandbox::ExecHooks;

/// The request id `brig-agent run --frames` answers with.
const RUN_ID: u32 = 1;

fn command(request: &RunRequest, tag: &str) -> Vec<String> {
    let mut command = vec![AGENT_PATH.to_string(), "run".into(), "--frames".into()];
    command.extend(["--tag".into(), tag.into()]);
    command.extend(["--timeout-ms".into(), request.timeout_ms.to_string()]);
    command.extend(["--output-cap".into(), request.output_cap.to_string()]);
    command.extend(["--cwd".into(), request.cwd.clone()]);
    for (key, value) in &request.env {
        command.extend(["--env".into(), format!("{key}={value}")]);
    }
    if !request.stdin.is_empty() {
        command.push("--stdin".into());
    }
    command.push("--".into());
    command.extend(request.argv.iter().cloned());
    command
}

pub(crate) async fn exec(
    docker: &Docker,
    container: &str,
    request: RunRequest,
    wait: Duration,
    hooks: &ExecHooks,
) -> Result<Finished, RuntimeError> {
    check_fits(&request)?;
    if request.keep.is_some() {
        return Err(RuntimeError::InvalidRequest(
            "a kept execution runs over the sandbox's channel, not an engine exec".into(),
        ));
    }
    // Names this run for `brig-agent kill-tag` (cancel): hex with a letter.
    let tag = format!("c{}", hex::encode(rand::random::<[u8; 12]>()));
    let run = async {
        let mut output = start(docker, container, command(&request, &tag), &request.stdin).await?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut decoder = FrameDecoder::new();
        while let Some(chunk) = output.next().await {
            let LogOutput::StdOut { message } = chunk.map_err(|_| RuntimeError::ChannelClosed)? else {
                continue;
            };
            decoder.push(&message);
            while let Some(frame) = decoder.next_frame() {
                match frame.map_err(|err| RuntimeError::Protocol(err.to_string()))? {
                    Frame::Output {
                        id: RUN_ID,
                        stream: Stream::Stdout,
                        data,
                    } => hooks.emit(Stream::Stdout, append_capped(&mut stdout, &data, request.output_cap)),
                    Frame::Output {
                        id: RUN_ID,
                        stream: Stream::Stderr,
                        data,
                    } => hooks.emit(Stream::Stderr, append_capped(&mut stderr, &data, request.output_cap)),
                    Frame::Exit { id: RUN_ID, mut result } => {
                        // The one-shot agent saw a SIGKILL from `kill-tag`, not a cancel.
                        result.cancelled |= hooks.cancel.as_ref().is_some_and(|c| c.is_cancelled());
                        return Ok(Finished { result, stdout, stderr });
                    }
                    Frame::Error {
                        id: RUN_ID,
                        code,
                        message,
                    } => return Err(request_error(code, message)),
                    other => {
                        return Err(RuntimeError::Protocol(format!(
                            "unexpected frame for request {}",
                            other.id()
                        )))
                    }
                }
            }
        }
        Err(RuntimeError::ChannelClosed)
    };
    let run = async {
        tokio::pin!(run);
        tokio::select! {
            finished = &mut run => return finished,
            () = hooks.cancelled() => {}
        }
        kill_tagged(docker, container, &tag).await;
        run.await
    };
    tokio::time::timeout(wait, run)
        .await
        .map_err(|_| RuntimeError::AgentUnresponsive)?
}

/// One file operation through `brig-agent file`: the request frame on the
/// exec's stdin, the answer frame on its stdout.
pub(crate) async fn file(
    docker: &Docker,
    container: &str,
    request: FileRequest,
    wait: Duration,
) -> Result<FileReply, RuntimeError> {
    let request = Frame::File { id: RUN_ID, request }.encode();
    let run = async {
        let mut output = start(docker, container, vec![AGENT_PATH.to_string(), "file".into()], &request).await?;
        let (mut decoder, mut seen) = (FrameDecoder::new(), Vec::new());
        while let Some(chunk) = output.next().await {
            let LogOutput::StdOut { message } = chunk.map_err(|_| RuntimeError::ChannelClosed)? else {
                continue;
            };
            decoder.push(&message);
            seen.extend_from_slice(&message[..message.len().min(512usize.saturating_sub(seen.len()))]);
            if let Some(frame) = decoder.next_frame() {
                // Its one frame is the first: bytes that are none are the engine's.
                let frame = frame.map_err(|_| crate::runtime::exec_not_started(&seen))?;
                return match frame {
                    Frame::FileDone { id: RUN_ID, reply } => Ok(reply),
                    Frame::Error { code, message, .. } => Err(request_error(code, message)),
                    other => Err(RuntimeError::Protocol(format!(
                        "unexpected frame for request {}",
                        other.id()
                    ))),
                };
            }
        }
        Err(RuntimeError::ChannelClosed)
    };
    tokio::time::timeout(wait, run)
        .await
        .map_err(|_| RuntimeError::AgentUnresponsive)?
}

pub(super) type ExecOutput =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Starts `cmd` in `container` through the engine's exec, feeds it `stdin`
/// (then closes it) and returns its output.
async fn start(docker: &Docker, container: &str, cmd: Vec<String>, stdin: &[u8]) -> Result<ExecOutput, RuntimeError> {
    let (mut input, output) = start_attached(docker, container, cmd, !stdin.is_empty(), None).await?;
    if !stdin.is_empty() {
        input.write_all(stdin).await.map_err(|_| RuntimeError::ChannelClosed)?;
        input.shutdown().await.map_err(|_| RuntimeError::ChannelClosed)?;
    }
    Ok(output)
}

pub(super) type ExecInput = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Starts `cmd` in `container` through the engine's exec, its stdin open if
/// `stdin`.
async fn start_attached(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
    stdin: bool,
    user: Option<String>,
) -> Result<(ExecInput, ExecOutput), RuntimeError> {
    let options = CreateExecOptions {
        cmd: Some(cmd),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(stdin),
        user,
        ..Default::default()
    };
    let created = docker.create_exec(container, options).await.map_err(|err| match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409, ..
        } => RuntimeError::SandboxNotFound,
        other => engine_error(other),
    })?;
    let StartExecResults::Attached { output, input } =
        docker.start_exec(&created.id, None).await.map_err(engine_error)?
    else {
        return Err(RuntimeError::Engine("exec started detached".into()));
    };
    Ok((input, output))
}

/// `brig-agent relay` in `container`, as [`RELAY_UID`](brig_protocol::RELAY_UID):
/// its stdin and stdout are a conversation with the sandbox's PID 1.
pub(super) async fn start_relay(docker: &Docker, container: &str) -> Result<(ExecInput, ExecOutput), RuntimeError> {
    let user = format!("{0}:{0}", brig_protocol::RELAY_UID);
    let cmd = vec![AGENT_PATH.to_string(), "relay".into()];
    start_attached(docker, container, cmd, true, Some(user)).await
}

/// A streamed transfer (see [`crate::runtime::transfer`]): the agent's
/// one-shot mode with its stdin and stdout.
pub(crate) async fn transfer(docker: &Docker, container: &str, transfer: &Transfer) -> Result<AgentIo, RuntimeError> {
    let mut cmd = vec![AGENT_PATH.to_string()];
    cmd.extend(transfer.agent_args());
    let (input, output) = start_attached(docker, container, cmd, transfer.uploads(), None).await?;
    let output = output.filter_map(|chunk| async move {
        match chunk {
            Ok(LogOutput::StdOut { message }) => Some(Ok(message)),
            Ok(LogOutput::StdErr { message }) => {
                tracing::debug!(stderr = %String::from_utf8_lossy(&message), "transfer agent");
                None
            }
            Ok(_) => None,
            Err(_) => Some(Err(RuntimeError::ChannelClosed)),
        }
    });
    Ok(AgentIo {
        input,
        output: Box::pin(output),
    })
}

/// Cancels the one-shot run tagged `tag`: `brig-agent kill-tag` through a
/// second exec. Best effort: if it fails the command still ends at its deadline.
async fn kill_tagged(docker: &Docker, container: &str, tag: &str) {
    let options = CreateExecOptions {
        cmd: Some(vec![AGENT_PATH.to_string(), "kill-tag".into(), tag.into()]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let killed = async {
        let created = docker.create_exec(container, options).await?;
        if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&created.id, None).await? {
            while output.next().await.is_some() {}
        }
        Ok::<_, bollard::errors::Error>(())
    };
    if let Err(err) = killed.await {
        tracing::warn!(container, %err, "could not cancel a one-shot run");
    }
}
