//! The agent channel under failure, and the `docker exec` fallback.

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use brig_core::config::SandboxConfig;
use brig_core::{ExecRequest, RuntimeError, SandboxRuntime};
use futures_util::StreamExt;

use crate::helpers::{test_config, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_turns_into_an_error_after_deadline_plus_grace() {
    let config = SandboxConfig {
        agent_grace: Duration::from_secs(1),
        ..test_config()
    };
    let t = TestRuntime::with_config(config).await;
    let sandbox = t.sandbox("frozen").await;
    t.runtime.docker().pause_container(&sandbox.id).await.unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(15),
        t.runtime.exec(
            &sandbox.id,
            ExecRequest::new(["echo", "hi"]).timeout(Duration::from_secs(1)),
        ),
    )
    .await
    .expect("exec hung on a frozen agent");
    assert!(matches!(outcome, Err(RuntimeError::AgentUnresponsive)), "{outcome:?}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    t.runtime.docker().unpause_container(&sandbox.id).await.unwrap();
    assert_eq!(t.sh(&sandbox, "echo thawed").await.stdout_str(), "thawed\n");
}

async fn the_one_shot_supervisor_works_through_docker_exec(runtime: &str) {
    let t = TestRuntime::under(runtime).await;
    let sandbox = t.sandbox("fallback").await;
    let docker = t.runtime.docker();
    let run = |argv: Vec<&str>| {
        let mut cmd = vec![
            "/opt/brig/brig-agent",
            "run",
            "--timeout-ms",
            "1000",
            "--output-cap",
            "5",
            "--",
        ];
        cmd.extend(argv);
        CreateExecOptions {
            cmd: Some(cmd.into_iter().map(String::from).collect()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        }
    };
    for (argv, expected_out, expected_code) in [
        (vec!["echo", "hello world"], "hello", 0),
        (vec!["sh", "-c", "setsid sleep 50 & exit 3"], "", 3),
        (vec!["sleep", "30"], "", 124),
    ] {
        let exec = docker.create_exec(&sandbox.id, run(argv.clone())).await.unwrap();
        let mut stdout = Vec::new();
        if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await.unwrap() {
            while let Some(Ok(chunk)) = output.next().await {
                if let bollard::container::LogOutput::StdOut { message } = chunk {
                    stdout.extend_from_slice(&message);
                }
            }
        }
        let inspect = docker.inspect_exec(&exec.id).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&stdout), expected_out, "{argv:?}");
        assert_eq!(inspect.exit_code, Some(expected_code), "{argv:?}");
    }
    assert_eq!(t.stray_processes(&sandbox).await, Vec::<String>::new());
}

under_both_runtimes!(the_one_shot_supervisor_works_through_docker_exec,);
