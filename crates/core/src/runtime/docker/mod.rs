//! [`DockerRuntime`]: sandboxes as hardened Docker containers, reached through
//! the agent over the container's attached stdio.
//!
//! - [`spec`]: the hardened container spec, its labels written and read.
//! - [`publish`]: the agent volume.
//! - [`channel`]: the attach channel and request multiplexing;
//!   [`channels`]: the registry of one channel per container.
//! - [`errors`]: engine answers as [`RuntimeError`]s.
//! - [`fallback`]: one command through `docker exec` and the agent's `run` mode.
//! - [`tunnel`]: egress tunnels over a channel, dialled by the [`EgressDialer`].

mod channel;
mod channels;
mod errors;
mod fallback;
mod publish;
pub mod spec;
mod tunnel;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StartContainerOptions,
};
use bollard::Docker;
use brig_protocol::RunRequest;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

pub(crate) use self::channel::request_error;
use self::channel::Channel;
pub(crate) use self::errors::{engine_error, is_status};
use self::spec::{info_from_labels, sandbox_info};
use crate::agent_binary::AgentBinary;
use crate::config::{DockerConfig, SandboxConfig};
use crate::runtime::transfer::{AgentIo, Transfer};
use crate::runtime::{Control, ControlReply, Host, RuntimeError, SandboxRuntime};
use crate::sandbox::egress::EgressDialer;
use crate::sandbox::{labels, CreateSandbox, ExecHooks, ExecOutcome, ExecRequest, SandboxInfo, SandboxOptions};
use brig_protocol::{FileReply, FileRequest};

/// How long a file operation may take (tmpfs, at most 1 MiB).
const FILE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Exit code reported for a command killed at its deadline, as timeout(1) does.
pub const TIMEOUT_EXIT_CODE: i32 = 124;

type ChannelSlot = Arc<tokio::sync::Mutex<Option<Arc<Channel>>>>;

/// The Docker implementation of [`SandboxRuntime`].
pub struct DockerRuntime {
    docker: Docker,
    config: SandboxConfig,
    /// The agent sandboxes run, and the volume it is published into; `None`
    /// in processes that never create a sandbox (the cleanup worker).
    agent: Option<(AgentBinary, String)>,
    /// Set once the agent is published; replaced by an empty cell when the
    /// volume turns out to be gone, so that it is published again.
    published: Mutex<Arc<OnceCell<()>>>,
    /// Engine id → the one channel to that container (one writer per channel).
    channels: Mutex<HashMap<String, ChannelSlot>>,
    /// Map size at which closed channels are swept next.
    sweep_at: AtomicUsize,
    /// Engine id → a relayed conversation with its agent, for sandboxes whose
    /// attach stream another replica owns (kept executions live in PID 1).
    relays: Mutex<HashMap<String, ChannelSlot>>,
    /// Answers the dials of the sandboxes' egress proxies (none: refused).
    egress: std::sync::OnceLock<std::sync::Weak<dyn EgressDialer>>,
}

impl DockerRuntime {
    /// Connects to the engine (negotiating the API version) and publishes `agent`.
    pub async fn connect(
        docker: &DockerConfig,
        config: SandboxConfig,
        agent: AgentBinary,
    ) -> Result<Self, RuntimeError> {
        let docker = docker.connect().await.map_err(engine_error)?;
        let runtime = DockerRuntime::new(docker, config, Some(agent));
        runtime.publish_agent().await?;
        Ok(runtime)
    }

    /// A runtime over an already connected client; the agent is published on
    /// first use (or by [`publish_agent`](Self::publish_agent)). Without an
    /// agent it lists, inspects and removes sandboxes but cannot create them.
    pub fn new(docker: Docker, config: SandboxConfig, agent: Option<AgentBinary>) -> Self {
        DockerRuntime {
            docker,
            config,
            agent: agent.map(|agent| (agent, agent.volume_name())),
            published: Mutex::default(),
            channels: Mutex::default(),
            sweep_at: AtomicUsize::new(64),
            relays: Mutex::default(),
            egress: std::sync::OnceLock::new(),
        }
    }

    /// Who answers the sandboxes' egress dials from now on (once; weak, since
    /// the dialer usually holds this runtime).
    pub fn set_egress_dialer(&self, dialer: std::sync::Weak<dyn EgressDialer>) {
        let _ = self.egress.set(dialer);
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Whether the engine knows the OCI runtime `name` (`docker info` → Runtimes).
    pub async fn has_runtime(&self, name: &str) -> Result<bool, RuntimeError> {
        let info = self.docker.info().await.map_err(engine_error)?;
        Ok(info.runtimes.is_some_and(|runtimes| runtimes.contains_key(name)))
    }

    /// What keeps tenants' processes apart beyond the container (red team
    /// M1; SECURITY.md, "Tenant separation"): `gvisor` (each sandbox has its
    /// own kernel), `userns-remap` (the engine maps uid 1000 to an unprivileged
    /// host uid), or `shared-host-uid` (every sandbox runs as host uid 1000:
    /// per-user kernel limits are shared by tenants and with any host account
    /// of that uid).
    pub async fn tenant_separation(&self) -> Result<&'static str, RuntimeError> {
        if spec::is_gvisor(&self.config.runtime) {
            return Ok("gvisor");
        }
        let info = self.docker.info().await.map_err(engine_error)?;
        let remapped = info
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|option| option.split(',').any(|part| part == "name=userns"));
        Ok(if remapped { "userns-remap" } else { "shared-host-uid" })
    }

    /// The engine client (for tests and the benchmark).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The volume sandboxes mount the agent from (`None` without an agent).
    pub fn agent_volume(&self) -> Option<&str> {
        self.agent.as_ref().map(|(_, volume)| volume.as_str())
    }

    /// Publishes the agent into its volume, once per runtime (again after
    /// the volume was found gone).
    pub async fn publish_agent(&self) -> Result<(), RuntimeError> {
        let Some((agent, volume)) = &self.agent else {
            return Err(RuntimeError::NotReady(
                "this process carries no sandbox agent, so it cannot create sandboxes".into(),
            ));
        };
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner()).clone();
        published
            .get_or_try_init(|| {
                publish::publish_agent(&self.docker, *agent, &self.config.image, volume, &self.config.instance)
            })
            .await
            .map(drop)
    }

    /// Publishes the agent again if its volume is gone (removed by another
    /// build's [`remove_stale_agent_volumes`](Self::remove_stale_agent_volumes)
    /// while no container of ours mounted it, or by hand); `false` if the
    /// volume is there.
    async fn restore_agent_volume(&self) -> Result<bool, RuntimeError> {
        let Some(volume) = self.agent_volume() else {
            return Ok(false);
        };
        if !publish::volume_lost(&self.docker, volume).await {
            return Ok(false);
        }
        tracing::warn!(
            volume,
            "the sandbox agent's volume is gone (removed by hand or by another build's cleanup): publishing it again"
        );
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = Arc::default();
        publish::discard_stand_in(&self.docker, volume).await?;
        self.publish_agent().await.map(|()| true)
    }

    /// Removes other builds' agent volumes that no container mounts and that
    /// are older than `older_than` (each build publishes into its own); their
    /// names. Does nothing in a process without an agent, which could not
    /// tell its own build's volume from the others.
    pub async fn remove_stale_agent_volumes(
        &self,
        older_than: std::time::Duration,
    ) -> Result<Vec<String>, RuntimeError> {
        self.remove_stale_agent_volumes_among(older_than, None).await
    }

    /// [`remove_stale_agent_volumes`](Self::remove_stale_agent_volumes),
    /// only of the volumes named in `among` if given (tests sweep their own
    /// volumes beside other runs on the same engine).
    pub async fn remove_stale_agent_volumes_among(
        &self,
        older_than: std::time::Duration,
        among: Option<&[String]>,
    ) -> Result<Vec<String>, RuntimeError> {
        match self.agent_volume() {
            Some(own) => publish::remove_stale_volumes(&self.docker, own, older_than, among).await,
            None => Ok(Vec::new()),
        }
    }

    /// `brig-<instance>-<hash of owner and session>`: deterministic, so that two
    /// concurrent creations of one session collide in the engine (409) instead
    /// of producing two containers; hashed, so ids never reach `docker ps` raw.
    fn container_name(&self, request: &CreateSandbox) -> String {
        let mut hasher = Sha256::new();
        hasher.update(request.owner.as_bytes());
        hasher.update([0]);
        hasher.update(request.session_id.as_bytes());
        format!(
            "brig-{}-{}",
            self.config.instance,
            &hex::encode(hasher.finalize())[..24]
        )
    }

    async fn inspect_raw(&self, id: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(info) => Ok(Some(info)),
            Err(err) if is_status(&err, 404) => Ok(None),
            Err(err) => Err(engine_error(err)),
        }
    }

    /// Creates and starts container `name` with `labels` and opens its channel;
    /// a name clash means someone else created it: theirs is used (`false`).
    /// A failure because the agent's volume is gone republishes it and tries
    /// once more.
    async fn create_named(
        &self,
        name: &str,
        options: &SandboxOptions,
        labels: HashMap<String, String>,
    ) -> Result<(SandboxInfo, bool), RuntimeError> {
        match self.create_started(name, options, labels.clone()).await {
            Err(err) if !matches!(err, RuntimeError::ImageMissing(_)) && self.restore_agent_volume().await? => {
                self.create_started(name, options, labels).await
            }
            outcome => outcome,
        }
    }

    async fn create_started(
        &self,
        name: &str,
        options: &SandboxOptions,
        labels: HashMap<String, String>,
    ) -> Result<(SandboxInfo, bool), RuntimeError> {
        self.publish_agent().await?;
        let volume = self.agent_volume().unwrap_or_default();
        let body = spec::sandbox_container(&self.config, options, volume, labels);
        let image = body.image.clone().unwrap_or_default();
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let (id, created) = match self.docker.create_container(Some(options), body).await {
            Ok(response) => (response.id, true),
            // Someone (another request, another replica) created it first: use theirs.
            Err(err) if is_status(&err, 409) => (self.wait_for_existing(name).await?, false),
            Err(err) if is_status(&err, 404) => return Err(RuntimeError::ImageMissing(image)),
            Err(err) => return Err(engine_error(err)),
        };
        match self.docker.start_container(&id, None::<StartContainerOptions>).await {
            Ok(()) => {}
            Err(err) if is_status(&err, 304) => {}
            Err(err) => {
                let _ = self.remove(&id).await;
                return Err(engine_error(err));
            }
        }
        if let Err(err) = self.channel(&id).await {
            // A container of ours whose agent never answered is of no use.
            if created {
                let _ = self.remove(&id).await;
            }
            return Err(err);
        }
        let raw = self.inspect_raw(&id).await?.ok_or(RuntimeError::SandboxNotFound)?;
        let info = sandbox_info(&raw, &self.config.instance).ok_or(RuntimeError::SandboxNotFound)?;
        Ok((info, created))
    }

    /// Names of unclaimed warm-pool spares start with this.
    fn pool_prefix(&self) -> String {
        format!("brig-{}-pool-", self.config.instance)
    }

    /// The id of container `name`, which another creator holds: the engine
    /// reserves the name before the container can be inspected, so retry briefly.
    async fn wait_for_existing(&self, name: &str) -> Result<String, RuntimeError> {
        for _ in 0..100 {
            if let Some(id) = self.inspect_raw(name).await?.and_then(|existing| existing.id) {
                return Ok(id);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(RuntimeError::Engine(
            format!("container {name} is reserved but never appeared").into(),
        ))
    }

    /// A running sandbox of this instance: its full id.
    async fn resolve(&self, id: &str) -> Result<String, RuntimeError> {
        if self.channels.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id) {
            return Ok(id.to_string());
        }
        let info = self
            .inspect_raw(id)
            .await?
            .and_then(|raw| sandbox_info(&raw, &self.config.instance));
        match info {
            Some(info) if info.running => Ok(info.id),
            _ => Err(RuntimeError::SandboxNotFound),
        }
    }
}

#[async_trait]
impl SandboxRuntime for DockerRuntime {
    #[tracing::instrument(skip_all, fields(session = %request.session_id))]
    async fn create(&self, request: &CreateSandbox) -> Result<(SandboxInfo, bool), RuntimeError> {
        let labels = spec::sandbox_labels(&self.config, request, unix_now());
        self.create_named(&self.container_name(request), &request.options, labels)
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn create_spare(&self, store: &str) -> Result<SandboxInfo, RuntimeError> {
        let name = format!("{}{}", self.pool_prefix(), hex::encode(rand::random::<[u8; 6]>()));
        let labels = spec::pool_labels(&self.config, store, unix_now());
        Ok(self.create_named(&name, &SandboxOptions::default(), labels).await?.0)
    }

    fn is_spare(&self, sandbox: &SandboxInfo) -> bool {
        sandbox.pool && sandbox.name.starts_with(&self.pool_prefix())
    }

    #[tracing::instrument(skip_all, fields(session = %request.session_id))]
    async fn claim(&self, spare: &str, request: &CreateSandbox) -> Result<(), RuntimeError> {
        let name = self.container_name(request);
        let rename = || {
            let options = RenameContainerOptionsBuilder::default().name(&name).build();
            self.docker.rename_container(spare, options)
        };
        let renamed = match rename().await {
            // The name is held by an orphan of this session (see Sessions): replace it.
            Err(err) if is_status(&err, 409) => {
                self.remove(&name).await?;
                rename().await
            }
            other => other,
        };
        // No inspect afterwards: it would add a millisecond to every pooled
        // session start, and a spare that died meanwhile shows up at the first
        // command as SandboxNotFound, which the session flow repairs.
        match renamed {
            Ok(()) => Ok(()),
            Err(err) if is_status(&err, 404) => Err(RuntimeError::SandboxNotFound),
            Err(err) => Err(engine_error(err)),
        }
    }

    fn sandbox_name(&self, request: &CreateSandbox) -> String {
        self.container_name(request)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(sandbox = %id))]
    async fn exec_with(&self, id: &str, request: ExecRequest, hooks: ExecHooks) -> Result<ExecOutcome, RuntimeError> {
        let id = self.resolve(id).await?;
        let channel = self.channel(&id).await?;
        let wait = request.timeout + self.config.agent_grace;
        Ok(channel.run(run_request(request), wait, &hooks).await?.into_outcome())
    }

    #[tracing::instrument(skip_all, fields(sandbox = %id))]
    async fn exec_via_engine(
        &self,
        id: &str,
        request: ExecRequest,
        hooks: ExecHooks,
    ) -> Result<ExecOutcome, RuntimeError> {
        let id = self.resolve(id).await?;
        let wait = request.timeout + self.config.agent_grace;
        // A kept execution must live in PID 1, where readers find it.
        if request.keep.is_some() {
            let relay = self.relay(&id).await?;
            return Ok(relay.run(run_request(request), wait, &hooks).await?.into_outcome());
        }
        Ok(fallback::exec(&self.docker, &id, run_request(request), wait, &hooks)
            .await?
            .into_outcome())
    }

    async fn file(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError> {
        let id = self.resolve(id).await?;
        self.channel(&id).await?.file(request, FILE_WAIT).await
    }

    async fn control(&self, id: &str, control: Control) -> Result<ControlReply, RuntimeError> {
        let id = self.resolve(id).await?;
        let channel = self.channel(&id).await?;
        control_over(&channel, control).await
    }

    async fn control_via_engine(&self, id: &str, control: Control) -> Result<ControlReply, RuntimeError> {
        let id = self.resolve(id).await?;
        let relay = self.relay(&id).await?;
        control_over(&relay, control).await
    }

    async fn file_via_engine(&self, id: &str, request: FileRequest) -> Result<FileReply, RuntimeError> {
        let id = self.resolve(id).await?;
        fallback::file(&self.docker, &id, request, FILE_WAIT).await
    }

    async fn transfer(&self, id: &str, transfer: &Transfer) -> Result<AgentIo, RuntimeError> {
        let id = self.resolve(id).await?;
        fallback::transfer(&self.docker, &id, transfer).await
    }

    #[tracing::instrument(skip_all, fields(sandbox = %id))]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.forget_channel(id);
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if is_status(&err, 404) => Ok(()),
            Err(err) => Err(engine_error(err)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<SandboxInfo>, RuntimeError> {
        Ok(self
            .inspect_raw(id)
            .await?
            .and_then(|raw| sandbox_info(&raw, &self.config.instance)))
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::INSTANCE, self.config.instance),
            ],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self.docker.list_containers(Some(options)).await.map_err(engine_error)?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                let paused = state == "paused";
                let name = c.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
                info_from_labels(c.id?, name, (state == "running" || paused, paused), labels)
            })
            .collect())
    }

    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), RuntimeError> {
        let done = if frozen {
            self.docker.pause_container(id).await
        } else {
            self.docker.unpause_container(id).await
        };
        match done {
            Ok(()) => Ok(()),
            // 404: gone; 409: already so (or not running: nothing to freeze).
            Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(()),
            Err(err) => Err(engine_error(err)),
        }
    }

    async fn ready(&self) -> Result<(), RuntimeError> {
        let not_ready = |what: &str, err: &dyn std::fmt::Display| RuntimeError::NotReady(format!("{what}: {err}"));
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(not_ready("docker", &err)),
            Err(_) => return Err(RuntimeError::NotReady("docker: no answer within 2 s".into())),
        }
        let runtime = &self.config.runtime;
        match self.has_runtime(runtime).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(RuntimeError::NotReady(format!(
                    "docker: the container runtime {runtime:?} (CONTAINER_RUNTIME) is not registered with the \
                     engine (docker info → Runtimes); see README, gVisor"
                )))
            }
            Err(err) => return Err(not_ready("docker", &err)),
        }
        self.publish_agent()
            .await
            .map_err(|err| not_ready("agent volume", &err))?;
        self.restore_agent_volume()
            .await
            .map(drop)
            .map_err(|err| not_ready("agent volume", &err))
    }

    async fn host(&self, images: &[String]) -> Result<Host, RuntimeError> {
        let info = self.docker.info().await.map_err(engine_error)?;
        // One at a time (the list is the operator's); an image the engine
        // cannot say it holds is not offered.
        let mut held = Vec::with_capacity(images.len());
        for image in images {
            match self.docker.inspect_image(image).await {
                Ok(_) => held.push(image.clone()),
                Err(err) if is_status(&err, 404) => {}
                Err(err) => tracing::warn!(%image, error = %err, "the engine did not say whether it holds the image"),
            }
        }
        Ok(Host {
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
            nano_cpus: info.ncpu.unwrap_or(0).max(0) as u64 * 1_000_000_000,
            images: held,
        })
    }
}

/// `control` over `channel`, within its wait.
async fn control_over(channel: &Channel, control: Control) -> Result<ControlReply, RuntimeError> {
    let wait = control.wait();
    let stdin = matches!(control, Control::Stdin { .. });
    match channel.control(control, wait).await {
        // A command that does not read its stdin is not a wedged agent: the
        // bytes wait in its queue (sending them again would repeat them).
        Err(RuntimeError::AgentUnresponsive) if stdin => Ok(ControlReply::Queued),
        other => other,
    }
}

fn run_request(request: ExecRequest) -> RunRequest {
    RunRequest {
        argv: request.argv,
        cwd: request.working_dir,
        env: request.env,
        stdin: request.stdin,
        timeout_ms: request.timeout.as_millis().max(1) as u64,
        output_cap: request.output_cap,
        keep: request.keep,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
