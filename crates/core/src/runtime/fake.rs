//! An in-process [`SandboxRuntime`] for unit tests of the orchestration
//! (sessions, pool, reaper, executions): no engine, no agent, time from tokio
//! (so tests run under `tokio::time::pause()`). Never a substitute for the
//! runtime tests against the real engine; it lets the logic above the seam be
//! tested on its own, including failures that are hard to provoke for real.
//!
//! Commands it understands: `echo ARGS...` (prints them), `sleep SECONDS`
//! (honours the deadline and cancellation), anything else exits 0 silently.
//! Every `exec_with` (the channel) and `exec_via_engine` (the engine's exec) is
//! recorded, so tests can see which path a command took.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use brig_protocol::{FileReply, FileRequest, Stream};

use super::{Control, ControlReply, Host, RuntimeError, SandboxRuntime};
use crate::sandbox::{labels, CreateSandbox, ExecHooks, ExecOutcome, ExecRequest, SandboxInfo};

/// How a command reached its sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// This process's channel (`exec_with`).
    Channel,
    /// The engine's exec (`exec_via_engine`).
    Detached,
}

#[derive(Default)]
struct State {
    /// Engine id → sandbox.
    sandboxes: HashMap<String, SandboxInfo>,
    next_id: u64,
    /// Sandboxes whose agent never answers.
    wedged: HashSet<String>,
    /// (sandbox id, path) of every command, in order.
    commands: Vec<(String, Path)>,
    /// Files per sandbox: path → bytes.
    files: HashMap<String, HashMap<String, Vec<u8>>>,
    creations: usize,
    not_ready: Option<String>,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    /// How long a creation takes (so concurrent creations overlap).
    create_delay: Duration,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creations take `delay` (tokio time).
    pub fn with_create_delay(delay: Duration) -> Self {
        FakeRuntime {
            create_delay: delay,
            ..Self::default()
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sandbox disappears, as if removed from outside or lost with the engine.
    pub fn lose(&self, id: &str) {
        self.state().sandboxes.remove(id);
    }

    /// The sandbox's agent stops answering.
    pub fn wedge(&self, id: &str) {
        self.state().wedged.insert(id.to_string());
    }

    /// Every command so far: (sandbox id, path).
    pub fn commands(&self) -> Vec<(String, Path)> {
        self.state().commands.clone()
    }

    /// Sandboxes that exist now.
    pub fn sandbox_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.state().sandboxes.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Containers this runtime created (spares included).
    pub fn creations(&self) -> usize {
        self.state().creations
    }

    /// `ready()` fails with `reason` (or succeeds again with `None`).
    pub fn set_not_ready(&self, reason: Option<&str>) {
        self.state().not_ready = reason.map(String::from);
    }

    fn new_sandbox(&self, name: String, owner: &str, session_id: &str, pool: bool, store: &str) -> SandboxInfo {
        let mut state = self.state();
        state.next_id += 1;
        state.creations += 1;
        let info = SandboxInfo {
            id: format!("fake{:04}", state.next_id),
            name,
            owner: owner.into(),
            session_id: session_id.into(),
            pool,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            running: true,
            paused: false,
            labels: if store.is_empty() {
                HashMap::new()
            } else {
                HashMap::from([(labels::STORE.to_string(), store.to_string())])
            },
        };
        state.sandboxes.insert(info.id.clone(), info.clone());
        info
    }

    async fn run(
        &self,
        id: &str,
        request: ExecRequest,
        hooks: ExecHooks,
        path: Path,
    ) -> Result<ExecOutcome, RuntimeError> {
        let wedged = {
            let mut state = self.state();
            if !state.sandboxes.contains_key(id) {
                return Err(RuntimeError::SandboxNotFound);
            }
            state.commands.push((id.to_string(), path));
            state.wedged.contains(id)
        };
        if wedged {
            // The API's own deadline (the command's plus a grace) gives up.
            tokio::time::sleep(request.timeout + Duration::from_secs(5)).await;
            return Err(RuntimeError::AgentUnresponsive);
        }
        let mut outcome = ExecOutcome::spawn_failure("");
        outcome.exit_code = 0;
        outcome.stderr.clear();
        outcome.stderr_bytes = 0;
        match request.argv.first().map(String::as_str) {
            Some("echo") => {
                let line = format!("{}\n", request.argv[1..].join(" ")).into_bytes();
                hooks.emit(Stream::Stdout, &line);
                outcome.stdout_bytes = line.len() as u64;
                outcome.stdout = line;
            }
            Some("sleep") => {
                let secs: f64 = request.argv.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
                let nap = Duration::from_secs_f64(secs);
                tokio::select! {
                    _ = tokio::time::sleep(nap.min(request.timeout)) => {
                        if nap > request.timeout {
                            outcome.timed_out = true;
                            outcome.exit_code = 124;
                            outcome.signal = Some(9);
                        }
                    }
                    _ = hooks.cancelled() => {
                        outcome.cancelled = true;
                        outcome.exit_code = 137;
                        outcome.signal = Some(9);
                    }
                }
            }
            _ => {}
        }
        Ok(outcome)
    }
}

#[async_trait]
impl SandboxRuntime for FakeRuntime {
    async fn create(&self, request: &CreateSandbox) -> Result<(SandboxInfo, bool), RuntimeError> {
        let name = self.sandbox_name(request);
        if !self.create_delay.is_zero() {
            tokio::time::sleep(self.create_delay).await;
        }
        if let Some(existing) = self.state().sandboxes.values().find(|s| s.name == name) {
            return Ok((existing.clone(), false));
        }
        Ok((
            self.new_sandbox(name, &request.owner, &request.session_id, false, &request.store),
            true,
        ))
    }

    async fn create_spare(&self, store: &str) -> Result<SandboxInfo, RuntimeError> {
        let name = format!("spare-{}", self.state().next_id + 1);
        Ok(self.new_sandbox(name, "", "", true, store))
    }

    fn is_spare(&self, sandbox: &SandboxInfo) -> bool {
        sandbox.pool && sandbox.name.starts_with("spare-")
    }

    async fn claim(&self, spare: &str, request: &CreateSandbox) -> Result<(), RuntimeError> {
        let name = self.sandbox_name(request);
        let mut state = self.state();
        state.sandboxes.retain(|id, s| s.name != name || id == spare);
        let sandbox = state.sandboxes.get_mut(spare).ok_or(RuntimeError::SandboxNotFound)?;
        sandbox.name = name;
        Ok(())
    }

    fn sandbox_name(&self, request: &CreateSandbox) -> String {
        format!("fake-{}-{}", request.owner, request.session_id)
    }

    async fn exec_with(&self, id: &str, request: ExecRequest, hooks: ExecHooks) -> Result<ExecOutcome, RuntimeError> {
        self.run(id, request, hooks, Path::Channel).await
    }

    async fn exec_via_engine(
        &self,
        id: &str,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.run(id, request, hooks, Path::Detached).await
    }

    /// The fake keeps no executions: the integration tests cover them.
    async fn control(&self, id: &str, _control: Control) -> Result<ControlReply, RuntimeError> {
        if !self.state().sandboxes.contains_key(id) {
            return Err(RuntimeError::SandboxNotFound);
        }
        Err(RuntimeError::ExecutionNotFound)
    }

    async fn control_via_engine(&self, id: &str, control: Control) -> Result<ControlReply, RuntimeError> {
        self.control(id, control).await
    }

    async fn file(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError> {
        let mut state = self.state();
        if !state.sandboxes.contains_key(id) {
            return Err(RuntimeError::SandboxNotFound);
        }
        let files = state.files.entry(id.to_string()).or_default();
        match request {
            FileRequest::Write { path, data } => {
                files.insert(path, data);
                Ok(FileReply::Done)
            }
            FileRequest::Read { path } => files
                .get(&path)
                .cloned()
                .map(FileReply::Data)
                .ok_or(RuntimeError::FileNotFound(path)),
            FileRequest::Delete { path } => files
                .remove(&path)
                .map(|_| FileReply::Done)
                .ok_or(RuntimeError::FileNotFound(path)),
            FileRequest::List { .. } => Ok(FileReply::Entries {
                entries: Vec::new(),
                truncated: false,
            }),
        }
    }

    async fn file_via_engine(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError> {
        self.file(id, request).await
    }

    /// Whole-workspace transfers (`TarOut`, `TarIn` of `/workspace`) move
    /// the sandbox's files as one JSON document in the agent's frames, so
    /// that suspend and resume can be tested above the seam; a file's stream
    /// is the engine's business (the e2e suite tests it).
    async fn transfer(
        &self,
        id: &str,
        transfer: &crate::runtime::transfer::Transfer,
    ) -> Result<crate::runtime::transfer::AgentIo, RuntimeError> {
        use crate::runtime::transfer::{AgentIo, Transfer};
        use brig_protocol::{Frame, FrameDecoder};
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;

        if !self.state().sandboxes.contains_key(id) {
            return Err(RuntimeError::SandboxNotFound);
        }
        let done = Frame::FileDone {
            id: 1,
            reply: FileReply::Done,
        }
        .encode();
        match transfer {
            Transfer::TarOut(path) if path.is_empty() => {
                let files = self.state().files.get(id).cloned().unwrap_or_default();
                let mut out = Frame::Data {
                    id: 1,
                    data: serde_json::to_vec(&files).expect("a map of files serialises"),
                }
                .encode();
                out.extend(done);
                Ok(AgentIo {
                    input: Box::pin(tokio::io::sink()),
                    output: Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(out))])),
                })
            }
            Transfer::TarIn(path) if path.is_empty() => {
                let (input, mut agent) = tokio::io::duplex(64 * 1024);
                let (state, id) = (Arc::clone(&self.state), id.to_string());
                let (answer, answered) = tokio::sync::oneshot::channel::<Vec<u8>>();
                // Reads the upload to its end marker, keeps it, then answers;
                // an upload cut short keeps nothing and gets no answer.
                tokio::spawn(async move {
                    let (mut decoder, mut body, mut buffer) = (FrameDecoder::new(), Vec::new(), vec![0u8; 8192]);
                    loop {
                        let n = agent.read(&mut buffer).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        decoder.push(&buffer[..n]);
                        while let Some(frame) = decoder.next_frame() {
                            match frame {
                                Ok(Frame::Data { data, .. }) => body.extend(data),
                                Ok(Frame::Shut { .. }) => {
                                    let Ok(files) = serde_json::from_slice::<HashMap<String, Vec<u8>>>(&body) else {
                                        return;
                                    };
                                    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                                    state.files.entry(id).or_default().extend(files);
                                    let _ = answer.send(done);
                                    return;
                                }
                                _ => return,
                            }
                        }
                    }
                });
                let output = futures_util::stream::once(answered)
                    .filter_map(|answer| async move { answer.ok().map(|bytes| Ok(bytes::Bytes::from(bytes))) });
                Ok(AgentIo {
                    input: Box::pin(input),
                    output: Box::pin(output),
                })
            }
            other => Err(RuntimeError::Engine(
                format!("the fake runtime does not stream {other:?}").into(),
            )),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.sandboxes.remove(id);
        state.files.remove(id);
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<SandboxInfo>, RuntimeError> {
        Ok(self.state().sandboxes.get(id).cloned())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        Ok(self.state().sandboxes.values().cloned().collect())
    }

    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), RuntimeError> {
        if let Some(sandbox) = self.state().sandboxes.get_mut(id) {
            sandbox.paused = frozen;
        }
        Ok(())
    }

    async fn ready(&self) -> Result<(), RuntimeError> {
        match &self.state().not_ready {
            Some(reason) => Err(RuntimeError::NotReady(reason.clone())),
            None => Ok(()),
        }
    }

    /// A host of 4 GiB and 2 CPUs holding every image.
    async fn host(&self, images: &[String]) -> Result<Host, RuntimeError> {
        Ok(Host {
            memory_bytes: 4 << 30,
            nano_cpus: 2_000_000_000,
            images: images.to_vec(),
        })
    }
}
