//! Faults: containers killed from outside, the API crashing or stopping,
//! Redis losing its data.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_or_removed_from_outside_is_recreated_on_next_use() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    for (round, action) in ["kill", "rm"].iter().enumerate() {
        run(&api, ALICE_KEY, "victim", "sh -c 'echo x > /workspace/before'").await;
        let containers = session_containers(&api.instance, "victim");
        assert_eq!(containers.len(), 1, "round {round}");
        let mut args = vec![*action];
        if *action == "rm" {
            args.push("-f");
        }
        assert!(Command::new("docker")
            .args(&args)
            .arg(&containers[0])
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        let after = run(&api, ALICE_KEY, "victim", "ls -A /workspace").await;
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(after["session_created"], true, "{action}: {after}");
        assert_eq!(after["stdout"], "", "{action}: state survived");
        assert_eq!(
            session_containers(&api.instance, "victim").len(),
            1,
            "{action}: the dead container lingers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_api_is_killed_mid_command_a_restarted_api_serves_the_session() {
    let redis = RedisServer::start();
    let mut api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    let instance = api.instance.clone();
    run(&api, ALICE_KEY, "crash", "sh -c 'echo kept > /workspace/state'").await;
    let base = api.base.clone();
    let in_flight = tokio::spawn(async move {
        let body = serde_json::json!({"command": "sh -c 'sleep 3; echo late'", "session_id": "crash", "timeout": 20});
        post(&base, "/execute", ALICE_KEY, &body).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.service.kill();
    assert!(in_flight.await.unwrap().is_err(), "the killed API answered");

    let restarted = BrigApi::start_in(&instance, &[("REDIS_URL", &redis.url())]);
    let after = run(&restarted, ALICE_KEY, "crash", "cat /workspace/state").await;
    assert_eq!(after["stdout"], "kept\n");
    assert_eq!(
        after["session_created"], false,
        "the session should re-attach, not start over"
    );
    // A new session's creation lock is free too.
    assert_eq!(run(&restarted, ALICE_KEY, "crash-2", "echo ok").await["stdout"], "ok\n");
    drop(api);
    remove_instance_containers(&instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_lets_in_flight_commands_finish() {
    let redis = RedisServer::start();
    let mut api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("SHUTDOWN_GRACE_SECONDS", "20")]);
    run(&api, ALICE_KEY, "drain", "echo warm").await;
    let base = api.base.clone();
    let in_flight = tokio::spawn(async move {
        let body =
            serde_json::json!({"command": "sh -c 'sleep 2; echo finished'", "session_id": "drain", "timeout": 20});
        post(&base, "/execute", ALICE_KEY, &body).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminating = std::thread::spawn(move || {
        let code = api.service.terminate(Duration::from_secs(15));
        (api, code)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = in_flight.await.unwrap().expect("the in-flight request was cut off");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["stdout"], "finished\n");
    let (api, code) = terminating.join().unwrap();
    assert_eq!(code, Some(0), "brig-api did not exit cleanly after SIGTERM");
    assert!(
        reqwest::Client::new().get(api.url("/health")).send().await.is_err(),
        "still accepting"
    );
}

/// SHUTDOWN_GRACE_SECONDS bounds a drain: what finishes within it is
/// answered, what does not is cancelled (its processes killed in the
/// sandbox) and the process exits soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_commands_still_running_at_the_grace_and_exits_soon_after() {
    let redis = RedisServer::start();
    let mut api = BrigApi::start(&[("REDIS_URL", &redis.url()), ("SHUTDOWN_GRACE_SECONDS", "3")]);
    let instance = api.instance.clone();
    run(&api, ALICE_KEY, "short", "echo warm").await;
    run(&api, ALICE_KEY, "long", "echo warm").await;
    let request = |session: &'static str, command: &'static str| {
        let base = api.base.clone();
        tokio::spawn(async move {
            let body = serde_json::json!({"command": command, "session_id": session, "timeout": 60});
            post(&base, "/execute", ALICE_KEY, &body).await
        })
    };
    let short = request("short", "sh -c 'sleep 1; echo finished'");
    let long = request("long", "sh -c 'sleep 8; echo late > /workspace/late'");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminated = Instant::now();
    let terminating = std::thread::spawn(move || {
        let code = api.service.terminate(Duration::from_secs(20));
        (api, code, terminated.elapsed())
    });
    let short = short.await.unwrap().expect("the short command was cut off");
    assert_eq!(short.status, StatusCode::OK);
    assert_eq!(short.body["stdout"], "finished\n");
    let (api, code, took) = terminating.join().unwrap();
    assert_eq!(code, Some(0), "brig-api did not exit cleanly after SIGTERM");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM; the grace is 3 s"
    );
    assert!(took >= Duration::from_millis(2500), "exited before the grace: {took:?}");
    // The long command is answered `shutting_down` (never a result that looks
    // like the command's own), and its process is gone: the file it would
    // write after 8 s never appears.
    let reply = long.await.unwrap().expect("the cancelled command got no answer");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert_eq!(reply.body["error"], "shutting_down", "{}", reply.body);
    let restarted = BrigApi::start_in(&instance, &[("REDIS_URL", &redis.url())]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let after = run(&restarted, ALICE_KEY, "long", "ls -A /workspace").await;
    assert_eq!(after["session_created"], false, "{after}");
    assert_eq!(after["stdout"], "", "the cancelled command kept running: {after}");
    drop(restarted);
    drop(api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loses_its_data_sessions_start_clean_and_stay_with_their_principal() {
    let redis = RedisServer::start();
    let api = BrigApi::start(&[("REDIS_URL", &redis.url())]);
    run(&api, ALICE_KEY, "same", "sh -c 'echo alice > /workspace/who'").await;
    run(&api, BOB_KEY, "same", "sh -c 'echo bob > /workspace/who'").await;
    assert!(redis.command(&["FLUSHALL"]).starts_with("+OK"));

    for (key, name) in [(ALICE_KEY, "alice"), (BOB_KEY, "bob")] {
        let after = run(&api, key, "same", "sh -c 'cat /workspace/who; echo $HOME'").await;
        assert_eq!(after["session_created"], true, "{name}: {after}");
        assert_eq!(after["stdout"], "/workspace\n", "{name} found old state: {after}");
        run(&api, key, "same", &format!("sh -c 'echo {name} > /workspace/who'")).await;
    }
    // Each principal still has exactly its own container, with its own data.
    assert_eq!(session_containers(&api.instance, "same").len(), 2);
    assert_eq!(
        run(&api, ALICE_KEY, "same", "cat /workspace/who").await["stdout"],
        "alice\n"
    );
    assert_eq!(
        run(&api, BOB_KEY, "same", "cat /workspace/who").await["stdout"],
        "bob\n"
    );
}
