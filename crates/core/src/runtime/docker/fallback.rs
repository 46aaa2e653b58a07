//! One command through the engine's exec API and the agent's one-shot mode
//! (`brig-agent run --frames`): for a sandbox whose attach channel belongs to
//! another API process. The same supervisor runs the command (process group,
//! deadline, caps, leftovers), and its answer comes back as protocol frames on
//! the exec's stdout, decoded as strictly as the channel's.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use brig_protocol::{Frame, FrameDecoder, RunRequest, Stream};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::channel::{append_capped, check_fits, request_error, Finished};
use super::engine_error;
use crate::agent_binary::AGENT_PATH;
use crate::runtime::RuntimeError;

/// The request id `brig-agent run --frames` answers with.
const RUN_ID: u32 = 1;

fn command(request: &RunRequest) -> Vec<String> {
    let mut command = vec![AGENT_PATH.to_string(), "run".into(), "--frames".into()];
    command.extend(["--timeout-ms".into(), request.timeout_ms.to_string()]);
    command.extend(["--output-cap".into(), request.output_cap.to_string()]);
    command.extend(["--cwd".into(), request.cwd.clone()]);
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
) -> Result<Finished, RuntimeError> {
    check_fits(&request)?;
    if !request.env.is_empty() {
        return Err(RuntimeError::InvalidRequest(
            "environment additions need the attach channel".into(),
        ));
    }
    let options = CreateExecOptions {
        cmd: Some(command(&request)),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(!request.stdin.is_empty()),
        ..Default::default()
    };
    let created = docker.create_exec(container, options).await.map_err(|err| match err {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409, ..
        } => RuntimeError::SandboxNotFound,
        other => engine_error(other),
    })?;
    let run = async {
        let StartExecResults::Attached { mut output, mut input } =
            docker.start_exec(&created.id, None).await.map_err(engine_error)?
        else {
            return Err(RuntimeError::Engine("exec started detached".into()));
        };
        if !request.stdin.is_empty() {
            input
                .write_all(&request.stdin)
                .await
                .map_err(|_| RuntimeError::ChannelClosed)?;
            input.shutdown().await.map_err(|_| RuntimeError::ChannelClosed)?;
        }
        drop(input);
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
                    } => append_capped(&mut stdout, &data, request.output_cap),
                    Frame::Output {
                        id: RUN_ID,
                        stream: Stream::Stderr,
                        data,
                    } => append_capped(&mut stderr, &data, request.output_cap),
                    Frame::Exit { id: RUN_ID, result } => return Ok(Finished { result, stdout, stderr }),
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
    tokio::time::timeout(wait, run)
        .await
        .map_err(|_| RuntimeError::AgentUnresponsive)?
}
