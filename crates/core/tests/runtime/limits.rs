//! Resource limits, deadlines, output caps and leftovers, each followed by a
//! probe that the sandbox still answers.

use std::time::{Duration, Instant};

use brig_core::config::SandboxConfig;
use brig_core::{ExecRequest, RuntimeError, SandboxRuntime};

use crate::helpers::{gvisor, own_rss_kib, test_config_under, TestRuntime};

async fn fork_bomb_is_held_by_the_pids_limit_and_the_sandbox_still_answers(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("forkbomb").await;
    let bomb = t
        .run(
            &sandbox,
            ExecRequest::new(["sh", "-c", ":(){ :|:& };:"]).timeout(Duration::from_secs(3)),
        )
        .await;
    assert!(
        bomb.timed_out || bomb.exit_code != 0,
        "the fork bomb neither timed out nor failed"
    );
    assert_eq!(t.sh(&sandbox, "echo ok").await.stdout_str(), "ok\n");
    assert!(t.stray_processes(&sandbox).await.is_empty(), "bomb processes survived");
    // runc: the pids cgroup. gVisor: RLIMIT_NPROC, enforced by its kernel (the
    // cgroup there holds the sentry's host threads and is only a backstop).
    let limit = if gvisor(runtime) {
        "ulimit -u"
    } else {
        "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null"
    };
    assert_eq!(t.sh(&sandbox, limit).await.stdout_str().trim(), "64");
    // The host still forks.
    assert!(std::process::Command::new("true").status().unwrap().success());
}

async fn memory_bomb_is_killed_by_oom_and_the_agent_survives(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("oom").await;
    let neighbour = t.sandbox("oom-neighbour").await;
    let bomb = t
        .runtime
        .exec(
            &sandbox.id,
            ExecRequest::new(["sh", "-c", "dd if=/dev/zero of=/dev/null bs=300M count=1"]),
        )
        .await;
    if gvisor(runtime) {
        // gVisor has no OOM killer of its own: the host's kills the sentry,
        // and with it the whole sandbox. The runtime says so promptly; the
        // session gets a new sandbox; the neighbour never noticed.
        assert!(
            matches!(bomb, Err(RuntimeError::ChannelClosed | RuntimeError::SandboxNotFound))
                || bomb.as_ref().is_ok_and(|outcome| outcome.exit_code == 137),
            "{bomb:?}"
        );
        t.runtime.remove(&sandbox.id).await.unwrap();
        let again = t.sandbox("oom").await;
        assert_eq!(t.sh(&again, "echo ok").await.stdout_str(), "ok\n");
    } else {
        let bomb = bomb.unwrap();
        assert!(!bomb.timed_out);
        assert_eq!(bomb.exit_code, 137, "expected SIGKILL by the OOM killer: {bomb:?}");
        assert_eq!(t.sh(&sandbox, "echo ok").await.stdout_str(), "ok\n");
    }
    assert_eq!(t.sh(&neighbour, "echo ok").await.stdout_str(), "ok\n");
}

async fn a_command_past_its_deadline_is_killed_and_reported_as_timed_out(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("timeout").await;
    let started = Instant::now();
    let outcome = t
        .run(
            &sandbox,
            ExecRequest::new(["sleep", "100"]).timeout(Duration::from_secs(1)),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(outcome.timed_out);
    assert_eq!(outcome.exit_code, 124);
    assert_eq!(outcome.signal, Some(9));
    // Generous bound: the acceptance is "about 1.5 s"; this only catches a hang.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(t.stray_processes(&sandbox).await.is_empty());
}

async fn background_processes_do_not_outlive_their_command(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("background").await;
    for script in [
        "sleep 300 & echo bg",
        "setsid sleep 300 & echo bg",
        "(sleep 300 &) ; echo bg",
    ] {
        let outcome = t.sh(&sandbox, script).await;
        assert_eq!(outcome.stdout_str(), "bg\n", "{script}");
        assert!(!outcome.timed_out, "{script} waited for its background child");
        assert_eq!(
            t.stray_processes(&sandbox).await,
            Vec::<String>::new(),
            "after {script}"
        );
    }
}

async fn leftovers_are_attributed_to_their_command_while_others_run(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("attribution").await;
    let runtime = t.runtime.clone();
    let id = sandbox.id.clone();
    // A neighbour keeps running, so the idle sweep cannot be what kills the leftover.
    let neighbour = tokio::spawn(async move {
        runtime
            .exec(&id, ExecRequest::new(["sleep", "4"]).timeout(Duration::from_secs(10)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let escaped = t.sh(&sandbox, "setsid sleep 301 & echo bg").await;
    assert_eq!(escaped.stdout_str(), "bg\n");
    let during = t.sh(&sandbox, "ps -o args").await.stdout_str();
    assert!(!during.contains("sleep 301"), "the setsid leftover survived:\n{during}");
    assert!(during.contains("sleep 4"), "the neighbour was killed:\n{during}");
    let neighbour = neighbour.await.unwrap().unwrap();
    assert_eq!(neighbour.exit_code, 0, "{neighbour:?}");
}

async fn output_past_the_cap_is_dropped_and_reported_truncated(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("flood").await;
    let cap = 64 * 1024;
    let rss_before = own_rss_kib();
    for (script, stream) in [("yes", "stdout"), ("yes >&2", "stderr")] {
        let outcome = t
            .run(
                &sandbox,
                ExecRequest::new(["sh", "-c", script])
                    .timeout(Duration::from_secs(1))
                    .output_cap(cap),
            )
            .await;
        assert!(outcome.timed_out);
        let (kept, truncated, total) = match stream {
            "stdout" => (outcome.stdout.len(), outcome.stdout_truncated, outcome.stdout_bytes),
            _ => (outcome.stderr.len(), outcome.stderr_truncated, outcome.stderr_bytes),
        };
        assert_eq!(kept as u64, cap, "{stream}");
        assert!(truncated, "{stream}");
        assert!(total > 10 * cap, "{stream}: only {total} bytes produced");
    }
    let grown_mib = own_rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 64,
        "test process grew by {grown_mib} MiB while output was dropped"
    );
    assert_eq!(t.sh(&sandbox, "echo ok").await.stdout_str(), "ok\n");
}

async fn fifty_concurrent_commands_each_get_their_own_output(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("concurrency").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let runtime = t.runtime.clone();
            let id = sandbox.id.clone();
            tokio::spawn(async move {
                let script = format!("echo out-{i}; echo err-{i} >&2; exit {}", i % 7);
                (i, runtime.exec(&id, ExecRequest::new(["sh", "-c", &script])).await)
            })
        })
        .collect();
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        let outcome = outcome.unwrap();
        assert_eq!(outcome.stdout_str(), format!("out-{i}\n"));
        assert_eq!(outcome.stderr_str(), format!("err-{i}\n"));
        assert_eq!(outcome.exit_code, i % 7);
    }
}

async fn a_file_past_fsize_and_too_many_open_files_fail_inside_the_sandbox(runtime: &str) {
    let t = TestRuntime::with_config(SandboxConfig {
        fsize_bytes: 1 << 20,
        ..test_config_under(runtime)
    })
    .await;
    let sandbox = t.sandbox("ulimits").await;
    let big = t.sh(&sandbox, "dd if=/dev/zero of=/workspace/big bs=1M count=2").await;
    assert_ne!(big.exit_code, 0, "wrote past fsize: {big:?}");
    let nofile = t.sh(&sandbox, "ulimit -n").await;
    assert_eq!(nofile.stdout_str(), "1024\n");
    assert_eq!(t.sh(&sandbox, "echo ok").await.stdout_str(), "ok\n");
}

under_both_runtimes!(
    fork_bomb_is_held_by_the_pids_limit_and_the_sandbox_still_answers,
    memory_bomb_is_killed_by_oom_and_the_agent_survives,
    a_command_past_its_deadline_is_killed_and_reported_as_timed_out,
    background_processes_do_not_outlive_their_command,
    leftovers_are_attributed_to_their_command_while_others_run,
    output_past_the_cap_is_dropped_and_reported_truncated,
    fifty_concurrent_commands_each_get_their_own_output,
    a_file_past_fsize_and_too_many_open_files_fail_inside_the_sandbox,
);
