//! The hardened container spec (README: "Security model", the hardening contract). Every
//! security-relevant field is set explicitly, even where it equals the engine's
//! default, so that a changed default can never loosen a sandbox.

use std::collections::HashMap;

use bollard::models::ContainerInspectResponse;
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};

use crate::agent_binary::{AGENT_MOUNT, AGENT_PATH};
use crate::config::SandboxConfig;
use crate::sandbox::budget::{tmpfs_inodes, SHM_BYTES, SYSV_SHM_BYTES};
use crate::sandbox::{labels, CreateSandbox, SandboxInfo, SandboxOptions};

fn tmpfs_options(access: &str, size: u64) -> String {
    format!("rw,{access},nosuid,nodev,size={size},nr_inodes={}", tmpfs_inodes(size))
}

/// Whether `runtime` is gVisor, by the name it is registered under (`runsc`,
/// `runsc-kvm`, `gvisor`, ...).
pub fn is_gvisor(runtime: &str) -> bool {
    runtime.contains("runsc") || runtime.contains("gvisor")
}

/// Host tasks gVisor's sentry and gofer need besides the guest's (~38 idle).
const GVISOR_HOST_PIDS_BASE: i64 = 128;

/// Host tasks per guest task under gVisor's ptrace platform (~8 measured).
const GVISOR_HOST_PIDS_PER_TASK: i64 = 10;

/// The container's `PidsLimit` and, under gVisor, an `nproc` limit.
///
/// Under runc the pids cgroup holds the tenant's processes and threads
/// directly (and `nproc` would count uid 1000 across every container on the
/// host, so it is not set). Under gVisor the cgroup holds the sentry's host
/// threads: hitting it kills the whole sandbox. There the sentry enforces
/// `RLIMIT_NPROC` inside the sandbox (EAGAIN, like the pids cgroup under runc),
/// and the cgroup stays as a host backstop sized for the guest's limit.
fn task_limits(pids_limit: i64, gvisor: bool) -> (i64, Option<ResourcesUlimits>) {
    if gvisor {
        let host = GVISOR_HOST_PIDS_BASE + pids_limit * GVISOR_HOST_PIDS_PER_TASK;
        (host, Some(ulimit("nproc", pids_limit)))
    } else {
        (pids_limit, None)
    }
}

/// The uid:gid every sandbox process runs as.
pub const SANDBOX_USER: &str = "1000:1000";

/// The labels of a new sandbox.
pub fn sandbox_labels(config: &SandboxConfig, request: &CreateSandbox, created_unix: u64) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (labels::MANAGED.into(), "true".into()),
        (labels::INSTANCE.into(), config.instance.clone()),
        (labels::OWNER.into(), request.owner.clone()),
        (labels::SESSION.into(), request.session_id.clone()),
        (labels::CREATED.into(), created_unix.to_string()),
    ]);
    with_store(&mut labels, &request.store);
    with_limits(&mut labels, config, &request.options);
    labels
}

/// The labels of a new warm-pool spare: no owner, no session.
pub fn pool_labels(config: &SandboxConfig, store: &str, created_unix: u64) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (labels::MANAGED.into(), "true".into()),
        (labels::INSTANCE.into(), config.instance.clone()),
        (labels::POOL.into(), "true".into()),
        (labels::CREATED.into(), created_unix.to_string()),
    ]);
    with_store(&mut labels, store);
    with_limits(&mut labels, config, &SandboxOptions::default());
    labels
}

fn with_store(labels: &mut HashMap<String, String>, store: &str) {
    if !store.is_empty() {
        labels.insert(labels::STORE.into(), store.into());
    }
}

/// The sandbox's memory and CPU limits (as [`sandbox_container`] sets them).
fn with_limits(labels: &mut HashMap<String, String>, config: &SandboxConfig, options: &SandboxOptions) {
    let (memory, nano_cpus) = config.limits(options);
    labels.insert(labels::MEMORY.into(), memory.to_string());
    labels.insert(labels::NANO_CPUS.into(), nano_cpus.to_string());
}

/// The create body of a sandbox container: agent as PID 1 on attached stdio.
pub fn sandbox_container(
    config: &SandboxConfig,
    options: &SandboxOptions,
    agent_volume: &str,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let (memory, nano_cpus) = config.limits(options);
    let runtime = options.runtime.clone().unwrap_or_else(|| config.runtime.clone());
    let (pids_limit, nproc) = task_limits(config.pids_limit, is_gvisor(&runtime));
    let mut ulimits = vec![
        ulimit("nofile", config.nofile),
        ulimit("fsize", config.fsize_bytes),
        ulimit("core", 0),
        // No POSIX message queues: their bytes are counted per host uid, which
        // every sandbox shares, and they outlive the command that made them
        // (red team M1: one tenant's queues left every other without any).
        ulimit("msgqueue", 0),
    ];
    ulimits.extend(nproc);
    ContainerCreateBody {
        image: Some(options.image.clone().unwrap_or_else(|| config.image.clone())),
        user: Some(SANDBOX_USER.into()),
        entrypoint: Some(vec![AGENT_PATH.into(), "serve".into()]),
        cmd: Some(vec![]),
        // The agent builds each command's environment itself; the container's own
        // holds nothing but what the image set.
        env: Some(vec![]),
        working_dir: Some("/workspace".into()),
        hostname: Some("sandbox".into()),
        open_stdin: Some(true),
        stdin_once: Some(false),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        network_disabled: Some(true),
        labels: Some(labels),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            // The engine gives a tmpfs the mode of the image's directory at that
            // path (copy-up), so images must ship /tmp as 1777 (they all do).
            // `/dev/shm` is a tmpfs of ours (IpcMode `none` mounts none) so that
            // its inodes are capped like the others'.
            tmpfs: Some(HashMap::from([
                ("/tmp".into(), tmpfs_options("noexec", config.tmp_bytes)),
                (
                    "/workspace".into(),
                    format!(
                        "{},uid=1000,gid=1000,mode=0700",
                        tmpfs_options("exec", config.workspace_bytes)
                    ),
                ),
                (
                    "/dev/shm".into(),
                    format!("{},mode=1777", tmpfs_options("noexec", SHM_BYTES)),
                ),
            ])),
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(agent_volume.into()),
                target: Some(AGENT_MOUNT.into()),
                read_only: Some(true),
                ..Default::default()
            }]),
            binds: Some(vec![]),
            devices: Some(vec![]),
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec![]),
            privileged: Some(false),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(nano_cpus),
            pids_limit: Some(pids_limit),
            ulimits: Some(ulimits),
            // A private IPC namespace without the engine's /dev/shm; SysV
            // shared memory in it is capped (the sysctls are per namespace).
            ipc_mode: Some("none".into()),
            runtime: Some(runtime),
            sysctls: Some(HashMap::from([
                ("kernel.shmmax".into(), SYSV_SHM_BYTES.to_string()),
                ("kernel.shmall".into(), (SYSV_SHM_BYTES / 4096).to_string()),
                ("kernel.shmmni".into(), "64".into()),
            ])),
            pid_mode: Some(String::new()),
            userns_mode: Some(String::new()),
            uts_mode: Some(String::new()),
            publish_all_ports: Some(false),
            init: Some(false),
            oom_kill_disable: Some(false),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            auto_remove: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A created-but-never-started container that mounts the agent volume writable,
/// used only as the target of the archive upload that publishes the agent.
pub fn publisher_container(image: &str, agent_volume: &str, instance: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec![AGENT_PATH.into()]),
        cmd: Some(vec![]),
        network_disabled: Some(true),
        labels: Some(HashMap::from([
            (labels::MANAGED.into(), "true".into()),
            (labels::INSTANCE.into(), instance.into()),
            ("brig.role".into(), "agent-publisher".into()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            mounts: Some(vec![Mount {
                typ: Some(MountType::VOLUME),
                source: Some(agent_volume.into()),
                target: Some(AGENT_MOUNT.into()),
                read_only: Some(false),
                ..Default::default()
            }]),
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ulimit(name: &str, value: i64) -> ResourcesUlimits {
    ResourcesUlimits {
        name: Some(name.into()),
        soft: Some(value),
        hard: Some(value),
    }
}

/// A brig sandbox of `instance`, or `None` for any other container.
pub(super) fn sandbox_info(raw: &ContainerInspectResponse, instance: &str) -> Option<SandboxInfo> {
    let labels = raw.config.as_ref()?.labels.clone().unwrap_or_default();
    if labels.get(labels::INSTANCE).map(String::as_str) != Some(instance) {
        return None;
    }
    let running = raw.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let paused = raw.state.as_ref().and_then(|s| s.paused).unwrap_or(false);
    info_from_labels(
        raw.id.clone()?,
        raw.name.clone().unwrap_or_default(),
        (running, paused),
        labels,
    )
}

/// `(running, paused)`: as the engine said.
pub(super) fn info_from_labels(
    id: String,
    name: String,
    (running, paused): (bool, bool),
    labels: HashMap<String, String>,
) -> Option<SandboxInfo> {
    if labels.get(labels::MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    let pool = labels.get(labels::POOL).map(String::as_str) == Some("true");
    let label = |key| labels.get(key).cloned();
    let (owner, session_id) = match (label(labels::OWNER), label(labels::SESSION)) {
        (Some(owner), Some(session)) => (owner, session),
        _ if pool => (String::new(), String::new()),
        _ => return None,
    };
    Some(SandboxInfo {
        id,
        name: name.trim_start_matches('/').to_string(),
        owner,
        session_id,
        pool,
        created_unix: labels.get(labels::CREATED)?.parse().ok()?,
        running,
        paused,
        labels,
    })
}
