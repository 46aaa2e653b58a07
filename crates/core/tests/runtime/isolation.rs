//! The hardening contract, checked from inside a sandbox.

use std::collections::HashMap;

use brig_core::runtime::docker::spec::SANDBOX_USER;
use brig_core::SandboxRuntime;

use crate::helpers::{status_field, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_as_uid_1000_with_no_capabilities_no_new_privs_and_seccomp() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("identity").await;

    let id = t.sh(&sandbox, "id").await;
    assert!(
        id.stdout_str().starts_with("uid=1000(sandbox) gid=1000(sandbox) "),
        "id said {:?}",
        id.stdout_str()
    );

    let status = t.sh(&sandbox, "cat /proc/self/status").await.stdout_str();
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, field), "0000000000000000", "{field}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_filesystem_is_read_only() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("readonly").await;
    for path in ["/probe", "/etc/probe", "/opt/brig/probe", "/bin/probe"] {
        let outcome = t.sh(&sandbox, &format!("echo x > {path}")).await;
        assert_ne!(outcome.exit_code, 0, "writing {path} succeeded");
        assert!(
            outcome.stderr_str().contains("Read-only file system"),
            "{path}: {}",
            outcome.stderr_str()
        );
    }
    let agent = t.sh(&sandbox, "cp /bin/busybox /opt/brig/brig-agent").await;
    assert_ne!(agent.exit_code, 0, "the agent binary could be replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_and_tmp_are_writable_tmpfs_bounded_by_their_size() {
    let t = TestRuntime::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_is_noexec_while_workspace_allows_exec() {
    let t = TestRuntime::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_absent_and_raw_sockets_fail() {
    let t = TestRuntime::new().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_docker_socket_and_no_host_secrets_are_reachable() {
    let t = TestRuntime::new().await;
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
    assert_ne!(environ.exit_code, 0, "PID 1's environment is readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_as_pid_1_cannot_be_inspected_traced_or_killed() {
    let t = TestRuntime::new().await;
    let sandbox = t.sandbox("pid1").await;
    let fds = t.sh(&sandbox, "ls /proc/1/fd").await;
    assert_ne!(fds.exit_code, 0);
    assert!(fds.stderr_str().contains("Permission denied"), "{}", fds.stderr_str());
    let stdin = t.sh(&sandbox, "echo x > /proc/1/fd/0").await;
    assert_ne!(stdin.exit_code, 0, "wrote to the agent's stdin");
    assert_eq!(
        t.sh(&sandbox, "brig-probe ptrace 1").await.stdout_str(),
        "denied: Operation not permitted\n"
    );
    for signal in ["KILL", "TERM", "INT", "HUP", "USR1", "STOP"] {
        t.sh(&sandbox, &format!("kill -{signal} 1")).await;
        assert_eq!(
            t.sh(&sandbox, "echo alive").await.stdout_str(),
            "alive\n",
            "after SIG{signal}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_container_matches_the_hardening_contract_field_by_field() {
    let t = TestRuntime::new().await;
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
    assert_eq!(host.pids_limit, Some(64));
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
    assert!(!ulimits.contains_key("nproc"));
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
    assert_eq!(mounts[0].source.as_deref(), Some(t.runtime.agent_volume()));

    let listed = t.runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sandbox.id);
}
