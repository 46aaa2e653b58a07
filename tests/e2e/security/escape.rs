//! Escape and disclosure: each test is one row of SECURITY.md.

use super::*;

async fn out(script: &str) -> serde_json::Value {
    let api = hostile_api();
    attack(&api, "escape", script, 10).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capabilities_in_any_set() {
    let status = out("cat /proc/self/status").await["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = status.lines().find(|l| l.starts_with(set)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privileges_and_seccomp_filter_are_on() {
    let status = out("grep -E \"^(NoNewPrivs|Seccomp):\" /proc/self/status").await["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuid_root_binaries_do_not_elevate() {
    assert_eq!(out("brig-probe-suid euid").await["stdout"], "euid=1000 uid=1000\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writable_set_is_the_tmpfs_mounts_only() {
    // Try to create a file on every mount point and in every top-level directory.
    let script = "for d in / /bin /etc /opt/brig /root /usr /var /dev /proc /sys $(cut -d\" \" -f2 /proc/mounts); \
                  do touch \"$d/.brig-probe\" 2>/dev/null && echo \"$d\"; done | sort -u";
    let writable: Vec<String> = out(script).await["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    for dir in &writable {
        // /dev/shm: a tmpfs of brig's, size- and inode-capped and counted in
        // the memory limit; /dev/mqueue: the private IPC namespace's queues,
        // bounded by RLIMIT_MSGQUEUE.
        assert!(
            ["/tmp", "/workspace", "/dev/shm", "/dev/mqueue"].contains(&dir.as_str()),
            "writable: {writable:?}"
        );
    }
    assert!(writable.contains(&"/tmp".to_string()) && writable.contains(&"/workspace".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_and_dev_shm_are_noexec() {
    let ran =
        out("cp /bin/busybox /tmp/bb && /tmp/bb echo ran; cp /bin/busybox /dev/shm/bb && /dev/shm/bb echo ran").await;
    assert!(!ran["stdout"].as_str().unwrap().contains("ran"), "{ran}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_network_interface_route_or_dns() {
    let net =
        out("ls /sys/class/net; echo --; cat /proc/net/route; echo --; nslookup example.com 2>&1; echo rc=$?").await;
    let stdout = net["stdout"].as_str().unwrap();
    let parts: Vec<&str> = stdout.split("--\n").collect();
    assert_eq!(parts[0], "lo\n", "{stdout}");
    assert_eq!(parts[1].lines().count(), 1, "routes: {stdout}");
    assert!(!parts[2].ends_with("rc=0\n"), "DNS answered: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sockets_are_refused() {
    assert_eq!(
        out("brig-probe rawsock").await["stdout"],
        "denied: Operation not permitted\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_docker_socket_is_reachable() {
    let found =
        out("find / -xdev -type s 2>/dev/null; ls /var/run/docker.sock /run/docker.sock 2>/dev/null; echo rc=$?").await;
    assert_eq!(found["stdout"], "rc=1\n", "{found}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_secrets_in_the_environment_or_pid_1() {
    let env = out("env; cat /proc/1/environ 2>&1 | head -c 200").await;
    let stdout = env["stdout"].as_str().unwrap();
    for line in stdout.lines().filter(|l| l.contains('=')) {
        let name = line.split('=').next().unwrap();
        assert!(
            ["PATH", "HOME", "BRIG_CMD", "PWD", "SHLVL"].contains(&name),
            "unexpected {name}: {stdout}"
        );
    }
    for secret in [ALICE_KEY, BOB_KEY, JWT_SECRET, "API_KEYS", "JWT_SECRET", "REDIS"] {
        assert!(!stdout.contains(secret), "{secret} visible: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcore_sysrq_and_keys_are_unusable() {
    let probe = out("head -c 16 /proc/kcore >/dev/null 2>&1 && echo kcore-read; \
                     echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written; \
                     [ -s /proc/keys ] && echo keys-listed; echo done")
    .await;
    assert_eq!(probe["stdout"], "done\n", "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_mounts_cannot_be_made() {
    let probe = out(
        "unshare -Ur id 2>/dev/null && echo userns; unshare -m true 2>/dev/null && echo mountns; \
                     mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && echo cgroup; \
                     mount -t tmpfs x /tmp/cg 2>/dev/null && echo tmpfs; echo done",
    )
    .await;
    assert_eq!(probe["stdout"], "done\n", "{probe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cannot_be_read_traced_or_signalled() {
    let api = hostile_api();
    let probe = attack(
        &api,
        "pid1",
        "ls /proc/1/fd 2>/dev/null && echo fds; brig-probe ptrace 1; \
                                      kill -9 1; kill -TERM 1; kill -HUP 1; echo sent",
        10,
    )
    .await;
    assert_eq!(probe["stdout"], "denied: Operation not permitted\nsent\n", "{probe}");
    still_fine(&api, "pid1").await;
}

/// PID 1 takes relayed conversations (another replica's, through an engine
/// exec as the relay uid) on an abstract socket any sandbox process can
/// reach: it must hear none of them, nor let them take the name first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_relay_socket_hears_no_sandbox_process() {
    let api = hostile_api();
    let probe = attack(&api, "relay", "brig-probe relay", 10).await;
    assert_eq!(
        probe["stdout"], "connect: ok\nread: dropped\nbind: denied: Address already in use\n",
        "{probe}"
    );
    still_fine(&api, "relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_residue_survives_into_another_or_a_recreated_session() {
    let api = hostile_api();
    attack(
        &api,
        "first",
        "echo secret > /workspace/s; echo secret > /tmp/s; echo secret > /dev/shm/s",
        10,
    )
    .await;
    let look = "cat /workspace/s /tmp/s /dev/shm/s 2>/dev/null; echo checked";
    assert_eq!(attack(&api, "second", look, 10).await["stdout"], "checked\n");
    let deleted = call(&api, reqwest::Method::DELETE, "/sessions/first", ALICE_KEY, None).await;
    assert_eq!(deleted.status, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(attack(&api, "first", look, 10).await["stdout"], "checked\n");
}
