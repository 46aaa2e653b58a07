//! The hardening contract, checked from inside a sandbox.

use std::collections::HashMap;

use brig_core::runtime::docker::spec::SANDBOX_USER;
use brig_core::{ExecRequest, SandboxRuntime};

use crate::helpers::{gvisor, status_field, TestRuntime};

async fn commands_run_as_uid_1000_with_no_capabilities_no_new_privs_and_seccomp(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("identity").await;

    let id = t.sh(&sandbox, "id").await;
    assert!(
        id.stdout_str().starts_with("uid=1000(sandbox) gid=1000(sandbox) "),
        "id said {:?}",
        id.stdout_str()
    );

    let status = t.sh(&sandbox, "cat /proc/self/status").await.stdout_str();
    let dmesg = t.sh(&sandbox, "dmesg").await;
    if gvisor(runtime) {
        // gVisor's kernel answers: it reports no ambient set and no NoNewPrivs
        // line, and its seccomp filter confines the sentry on the host, not
        // the guest (Seccomp: 0 inside). Its dmesg proves it is in use.
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(status_field(&status, field), "0000000000000000", "{field}");
        }
        assert!(dmesg.stdout_str().contains("Starting gVisor"), "{dmesg:?}");
    } else {
        for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(&status, field), "0000000000000000", "{field}");
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1");
        assert_eq!(status_field(&status, "Seccomp"), "2");
        assert_ne!(dmesg.exit_code, 0, "the host's kernel log is readable");
    }
}

async fn root_filesystem_is_read_only(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("readonly").await;
    for path in ["/probe", "/etc/probe", "/opt/brig/probe", "/bin/probe"] {
        let outcome = t.sh(&sandbox, &format!("echo x > {path}")).await;
        assert_ne!(outcome.exit_code, 0, "writing {path} succeeded");
        // gVisor checks the directory's permissions first.
        let stderr = outcome.stderr_str();
        assert!(
            stderr.contains("Read-only file system") || (gvisor(runtime) && stderr.contains("Permission denied")),
            "{path}: {stderr}"
        );
    }
    let agent = t.sh(&sandbox, "cp /bin/busybox /opt/brig/brig-agent").await;
    assert_ne!(agent.exit_code, 0, "the agent binary could be replaced");
}

async fn workspace_and_tmp_are_writable_tmpfs_bounded_by_their_size(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("tmpfs").await;
    let mounts = t.sh(&sandbox, "cat /proc/mounts").await.stdout_str();
    let options = |target: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("{target} not mounted:\n{mounts}"))
            .to_string()
    };
    let tmp = options("/tmp");
    let workspace = options("/workspace");
    if gvisor(runtime) {
        // gVisor's own tmpfs: it shows fewer options (and ignores nr_inodes;
        // its inodes live in the sentry's memory, bounded by the memory limit).
        assert!(tmp.contains("noexec") && tmp.contains("size=16777216"), "{tmp}");
        assert!(workspace.contains("size=33554432"), "{workspace}");
    } else {
        assert!(tmp.starts_with("tmpfs /tmp tmpfs rw,nosuid,nodev,noexec"), "{tmp}");
        assert!(tmp.contains("size=16384k"), "{tmp}");
        assert!(
            workspace.starts_with("tmpfs /workspace tmpfs rw,nosuid,nodev"),
            "{workspace}"
        );
        assert!(
            workspace.contains("size=32768k") && workspace.contains("uid=1000"),
            "{workspace}"
        );
    }

    for (dir, too_big_mib) in [("/tmp", 20), ("/workspace", 40)] {
        let ok = t.sh(&sandbox, &format!("echo hello > {dir}/f && cat {dir}/f")).await;
        assert_eq!(ok.stdout_str(), "hello\n", "{dir} not writable: {}", ok.stderr_str());
        let fill = t
            .sh(
                &sandbox,
                &format!("dd if=/dev/zero of={dir}/big bs=1M count={too_big_mib}"),
            )
            .await;
        assert_ne!(fill.exit_code, 0);
        assert!(
            fill.stderr_str().contains("No space left on device"),
            "{dir}: {}",
            fill.stderr_str()
        );
    }
}

async fn tmp_is_noexec_while_workspace_allows_exec(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("noexec").await;
    let tmp = t.sh(&sandbox, "cp /bin/busybox /tmp/ && /tmp/busybox echo ran").await;
    assert_ne!(tmp.exit_code, 0);
    assert!(!tmp.stdout_str().contains("ran"));
    assert!(tmp.stderr_str().contains("Permission denied"), "{}", tmp.stderr_str());
    let workspace = t
        .sh(
            &sandbox,
            "mkdir /workspace/bin && cp /bin/busybox /workspace/bin/ && /workspace/bin/busybox echo ran",
        )
        .await;
    assert_eq!(workspace.stdout_str(), "ran\n", "{}", workspace.stderr_str());
}

async fn network_is_absent_and_raw_sockets_fail(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("network").await;
    assert_eq!(
        t.sh(&sandbox, "ls /sys/class/net")
            .await
            .stdout_str()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["lo"]
    );
    let routes = t.sh(&sandbox, "cat /proc/net/route").await.stdout_str();
    assert_eq!(routes.lines().count(), 1, "IPv4 routes present:\n{routes}");
    let routes6 = t.sh(&sandbox, "cat /proc/net/ipv6_route").await.stdout_str();
    assert!(
        routes6.lines().all(|route| route.ends_with(" lo")),
        "IPv6 routes off loopback:\n{routes6}"
    );
    let resolve = t.sh(&sandbox, "nslookup example.com 192.0.2.1").await;
    assert_ne!(resolve.exit_code, 0, "DNS answered: {}", resolve.stdout_str());
    let connect = t.sh(&sandbox, "wget -T 2 -q -O- http://192.0.2.1/").await;
    assert_ne!(connect.exit_code, 0);
    assert_eq!(
        t.sh(&sandbox, "brig-probe rawsock").await.stdout_str(),
        "denied: Operation not permitted\n"
    );
}

/// Red team M6: io_uring (allowed by Docker 20.10's default seccomp profile)
/// is refused to commands, through the agent's channel and through the
/// engine's exec fallback alike; the engine's own filter stays in force.
async fn io_uring_is_refused_on_every_path(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("iouring").await;
    assert_eq!(
        t.sh(&sandbox, "brig-probe iouring").await.stdout_str(),
        "denied: Operation not permitted\n"
    );
    let fallback = t
        .runtime
        .exec_via_engine(
            &sandbox.id,
            ExecRequest::new(["brig-probe", "iouring"]),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(fallback.stdout_str(), "denied: Operation not permitted\n");
    // Everything else still runs as before.
    assert_eq!(t.sh(&sandbox, "echo fine").await.stdout_str(), "fine\n");
}

/// Red team M1: POSIX message queues are charged to the host uid every
/// sandbox shares and outlive their command: one tenant's exhausted every
/// other's. Under runc sandboxes get none; gVisor keeps them in the
/// sandbox's own kernel, where they concern no one else.
async fn posix_message_queues_are_refused(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("mqueue").await;
    let made = t.sh(&sandbox, "brig-probe mq").await.stdout_str();
    if gvisor(runtime) {
        assert_eq!(made, "ok\n");
    } else {
        assert_eq!(made, "denied: Too many open files\n");
    }
}

async fn no_docker_socket_and_no_host_secrets_are_reachable(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("secrets").await;
    let sockets = t
        .sh(
            &sandbox,
            "find / -xdev -type s 2>/dev/null; ls /var/run/docker.sock /run/docker.sock",
        )
        .await;
    assert!(!sockets.stdout_str().contains("docker"), "{}", sockets.stdout_str());
    assert_ne!(sockets.exit_code, 0);

    let env = t.run(&sandbox, brig_core::ExecRequest::new(["env"])).await.stdout_str();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "BRIG_CMD", "PWD"].contains(name),
            "unexpected variable {name} in:\n{env}"
        );
    }
    let environ = t.sh(&sandbox, "cat /proc/1/environ").await;
    if gvisor(runtime) {
        // gVisor lets the same uid read it; it holds nothing but the engine's defaults.
        let environ = environ.stdout_str();
        for entry in environ.split('\0').filter(|e| !e.is_empty()) {
            let name = entry.split('=').next().unwrap_or_default();
            assert!(
                ["PATH", "HOSTNAME", "HOME"].contains(&name),
                "{entry} in PID 1's environment"
            );
        }
    } else {
        assert_ne!(environ.exit_code, 0, "PID 1's environment is readable");
    }
}

async fn the_agent_as_pid_1_cannot_be_inspected_traced_or_killed(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("pid1").await;
    let fds = t.sh(&sandbox, "ls /proc/1/fd").await;
    if !gvisor(runtime) {
        assert_ne!(fds.exit_code, 0);
        assert!(fds.stderr_str().contains("Permission denied"), "{}", fds.stderr_str());
    }
    let stdin = t.sh(&sandbox, "echo x > /proc/1/fd/0").await;
    assert_ne!(stdin.exit_code, 0, "wrote to the agent's stdin");
    let stdout = t
        .runtime
        .exec(
            &sandbox.id,
            brig_core::ExecRequest::new(["sh", "-c", "echo x > /proc/1/fd/1"]),
        )
        .await;
    if gvisor(runtime) {
        // gVisor lets the same uid write into the agent's stdout: the bytes
        // reach brig's decoder, which refuses them and drops the channel
        // (the tenant can only disturb its own sandbox's answers); the next
        // request re-attaches.
        assert!(
            matches!(stdout, Err(brig_core::RuntimeError::Protocol(_))) || stdout.is_ok(),
            "{stdout:?}"
        );
        assert_eq!(t.sh(&sandbox, "echo alive").await.stdout_str(), "alive\n");
    } else {
        assert_ne!(stdout.unwrap().exit_code, 0, "wrote to the agent's stdout");
    }
    assert_eq!(
        t.sh(&sandbox, "brig-probe ptrace 1").await.stdout_str(),
        "denied: Operation not permitted\n"
    );
    if gvisor(runtime) {
        // gVisor does not shield its init from signals sent by the same uid:
        // a tenant can end its own sandbox. The runtime reports it, nothing
        // hangs, and the session's next sandbox is a fresh one.
        let neighbour = t.sandbox("pid1-neighbour").await;
        let _ = t
            .runtime
            .exec(&sandbox.id, brig_core::ExecRequest::new(["sh", "-c", "kill -KILL 1"]))
            .await;
        let after = t
            .runtime
            .exec(&sandbox.id, brig_core::ExecRequest::new(["echo", "x"]))
            .await;
        assert!(
            matches!(
                after,
                Err(brig_core::RuntimeError::ChannelClosed | brig_core::RuntimeError::SandboxNotFound)
            ),
            "{after:?}"
        );
        t.runtime.remove(&sandbox.id).await.unwrap();
        assert_eq!(
            t.sh(&t.sandbox("pid1").await, "echo alive").await.stdout_str(),
            "alive\n"
        );
        assert_eq!(t.sh(&neighbour, "echo alive").await.stdout_str(), "alive\n");
        return;
    }
    for signal in ["KILL", "TERM", "INT", "HUP", "USR1", "STOP"] {
        t.sh(&sandbox, &format!("kill -{signal} 1")).await;
        assert_eq!(
            t.sh(&sandbox, "echo alive").await.stdout_str(),
            "alive\n",
            "after SIG{signal}"
        );
    }
}

async fn created_container_matches_the_hardening_contract_field_by_field(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("inspect").await;
    let info = t.runtime.docker().inspect_container(&sandbox.id, None).await.unwrap();
    let config = info.config.unwrap();
    let host = info.host_config.unwrap();

    let labels = config.labels.unwrap();
    assert_eq!(labels["brig.managed"], "true");
    assert_eq!(labels["brig.instance"], t.instance);
    assert_eq!(labels["brig.owner"], "owner-hash");
    assert_eq!(labels["brig.session"], "inspect");
    assert!(labels["brig.created"].parse::<u64>().unwrap() > 1_700_000_000);
    assert_eq!(config.user.as_deref(), Some(SANDBOX_USER));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(config.stdin_once, Some(false));
    assert_eq!(config.tty, Some(false));
    assert_eq!(config.network_disabled, Some(true));
    assert_eq!(config.entrypoint.unwrap(), ["/opt/brig/brig-agent", "serve"]);

    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
    assert!(host.cap_add.unwrap_or_default().is_empty());
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.security_opt.unwrap(), ["no-new-privileges:true"]);
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.memory_swap, Some(128 << 20));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));
    assert_eq!(host.runtime.as_deref(), Some(runtime));
    // Under gVisor the cgroup holds the sentry's threads (a backstop) and
    // RLIMIT_NPROC holds the guest (see spec.rs, task_limits).
    assert_eq!(host.pids_limit, Some(if gvisor(runtime) { 128 + 64 * 10 } else { 64 }));
    assert!(host.binds.unwrap_or_default().is_empty());
    assert!(host.devices.unwrap_or_default().is_empty());
    assert_eq!(host.ipc_mode.as_deref(), Some("none"));
    let sysctls = host.sysctls.unwrap();
    assert_eq!(sysctls["kernel.shmmax"], (8 << 20).to_string());
    assert_eq!(sysctls["kernel.shmall"], "2048");
    assert_eq!(host.pid_mode.as_deref().unwrap_or(""), "");
    assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("none"));
    assert_eq!(
        host.restart_policy.unwrap().name.map(|n| n.to_string()).as_deref(),
        Some("no")
    );
    let ulimits: HashMap<String, (i64, i64)> = host
        .ulimits
        .unwrap()
        .into_iter()
        .map(|u| (u.name.unwrap(), (u.soft.unwrap(), u.hard.unwrap())))
        .collect();
    assert_eq!(ulimits["nofile"], (1024, 1024));
    assert_eq!(ulimits["fsize"], (64 << 20, 64 << 20));
    assert_eq!(ulimits["core"], (0, 0));
    assert_eq!(ulimits["msgqueue"], (0, 0));
    if gvisor(runtime) {
        assert_eq!(ulimits["nproc"], (64, 64));
    } else {
        // nproc counts uid 1000 across every container on the host.
        assert!(!ulimits.contains_key("nproc"));
    }
    let tmpfs = host.tmpfs.unwrap();
    assert!(tmpfs["/tmp"].contains("noexec") && tmpfs["/tmp"].contains("nosuid"));
    assert!(tmpfs["/workspace"].contains("nosuid") && tmpfs["/workspace"].contains("mode=0700"));
    assert!(tmpfs["/dev/shm"].contains("noexec") && tmpfs["/dev/shm"].contains("size=16777216"));
    for options in tmpfs.values() {
        assert!(options.contains("nr_inodes="), "inodes not capped: {options}");
    }
    let mounts = host.mounts.unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].target.as_deref(), Some("/opt/brig"));
    assert_eq!(mounts[0].read_only, Some(true));
    assert_eq!(mounts[0].source.as_deref(), t.runtime.agent_volume());

    let listed = t.runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sandbox.id);
}

under_both_runtimes!(
    commands_run_as_uid_1000_with_no_capabilities_no_new_privs_and_seccomp,
    root_filesystem_is_read_only,
    workspace_and_tmp_are_writable_tmpfs_bounded_by_their_size,
    tmp_is_noexec_while_workspace_allows_exec,
    network_is_absent_and_raw_sockets_fail,
    io_uring_is_refused_on_every_path,
    posix_message_queues_are_refused,
    no_docker_socket_and_no_host_secrets_are_reachable,
    the_agent_as_pid_1_cannot_be_inspected_traced_or_killed,
    created_container_matches_the_hardening_contract_field_by_field,
);
