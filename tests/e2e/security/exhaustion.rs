//! Exhaustion: every attack is bounded, and afterwards the same sandbox, a
//! neighbour sandbox and the API still answer.

use super::*;

async fn bounded(script: &str, timeout: u32) -> serde_json::Value {
    let api = hostile_api();
    attack(&api, "neighbour", "echo warm", 10).await;
    let outcome = attack(&api, "victim", script, timeout).await;
    still_fine(&api, "victim").await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_held_by_the_pids_limit() {
    let outcome = bounded(":(){ :|:& };:; sleep 2", 3).await;
    assert!(outcome["timed_out"] == true || outcome["exit_code"] != 0, "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_killed_by_the_oom_killer_not_the_agent() {
    let outcome = bounded("dd if=/dev/zero of=/dev/null bs=400M count=1", 10).await;
    assert_eq!(outcome["exit_code"], 137, "{outcome}");
}

/// Red team M2: commands really get `oom_score_adj` 1000, and what they fork
/// inherits it (the write used to fail silently, and memory no RSS shows got
/// the agent OOM-killed instead of the commands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_their_children_are_the_oom_killers_first_choice() {
    let api = hostile_api();
    let outcome = attack(
        &api,
        "oom",
        "sleep 0.2; cat /proc/$$/oom_score_adj /proc/self/oom_score_adj",
        10,
    )
    .await;
    assert_eq!(outcome["stdout"], "1000\n1000\n", "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_tmpfs_stops_at_its_size() {
    // Several files, each under the fsize limit, so the mounts' sizes are what stop it.
    let script = "for d in /tmp /workspace /dev/shm; do for i in 1 2 3; do \
                  dd if=/dev/zero of=$d/fill$i bs=1M count=50 2>&1 | grep -o \"No space left on device\"; \
                  done; done; df -k /tmp /workspace /dev/shm | tail -n 3";
    let outcome = bounded(script, 30).await;
    let stdout = outcome["stdout"].as_str().unwrap();
    assert!(stdout.matches("No space left on device").count() >= 3, "{stdout}");
    for line in stdout.lines().filter(|l| l.contains('%')) {
        assert!(line.contains("100%"), "not full: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_inodes_is_bounded() {
    // Empty files cost no tmpfs size but ~1 KiB of kernel memory each; without
    // an inode cap this OOM-killed the whole sandbox. (`true`, not `:`: a failed
    // redirection of a special builtin ends the shell.)
    let script = "for d in /tmp /workspace /dev/shm; do i=0; while true > $d/f$i; do i=$((i+1)); done 2>/dev/null; \
                  echo $d $i; done";
    let outcome = bounded(script, 30).await;
    assert_eq!(outcome["timed_out"], false, "{outcome}");
    let created: Vec<(String, u64)> = outcome["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| {
            let (dir, count) = line.split_once(' ').unwrap();
            (dir.to_string(), count.parse().unwrap())
        })
        .collect();
    assert_eq!(created.len(), 3, "{outcome}");
    for (dir, count) in created {
        // One inode per 16 KiB of size, the root directory's included.
        assert!(count > 0 && count < 16_384, "{dir}: {count} files");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysv_shared_memory_is_capped() {
    // SysV segments outlive their process and are charged to the container.
    let outcome = bounded("brig-probe sysvshm 200", 10).await;
    assert_eq!(outcome["stdout"], "segments=8\n", "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_spinners_end_at_the_deadline() {
    let outcome = bounded("while :; do :; done & while :; do :; done", 2).await;
    assert_eq!(outcome["timed_out"], true, "{outcome}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_floods_on_both_streams_are_capped() {
    let outcome = bounded("yes out & yes err >&2", 2).await;
    assert_eq!(outcome["truncated"], true, "{outcome}");
    let cap = 1 << 20;
    assert_eq!(outcome["stdout"].as_str().unwrap().len(), cap);
    assert_eq!(outcome["stderr"].as_str().unwrap().len(), cap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_open_files_stop_at_nofile() {
    let outcome = bounded("brig-probe openfiles 5000", 10).await;
    let opened: u32 = outcome["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .trim_start_matches("opened=")
        .parse()
        .unwrap();
    assert!(opened < 1024, "opened {opened} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_past_fsize_is_refused() {
    // By default one file may fill the workspace; an operator may set less.
    let api = BrigApi::start(&[
        ("SESSION_STORE", "memory"),
        ("ALLOWED_COMMANDS", HOSTILE_ALLOWLIST),
        ("CONTAINER_FSIZE_BYTES", "64m"),
    ]);
    let outcome = attack(
        &api,
        "victim",
        "dd if=/dev/zero of=/workspace/big bs=1M count=80; wc -c < /workspace/big",
        20,
    )
    .await;
    still_fine(&api, "victim").await;
    // SIGXFSZ stops the writer at CONTAINER_FSIZE_BYTES.
    assert!(
        outcome["stderr"].as_str().unwrap().contains("File size limit exceeded"),
        "{outcome}"
    );
    assert_eq!(outcome["stdout"], "67108864\n", "{outcome}");
    // A streamed upload past it is refused, naming the setting; nothing is kept.
    let upload = reqwest::Client::new()
        .put(api.url("/sessions/victim/files/upload"))
        .header("x-api-key", ALICE_KEY)
        .body(vec![0u8; 80 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = upload.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("CONTAINER_FSIZE_BYTES"),
        "{body}"
    );
    let left = attack(&api, "victim", "ls -A /workspace", 5).await;
    assert_eq!(left["stdout"], "big\n", "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_do_not_outlive_their_command() {
    let api = hostile_api();
    let outcome = attack(
        &api,
        "bg",
        "sleep 300 & setsid sleep 301 & (sleep 302 &); nohup sleep 303 >/dev/null 2>&1 & echo started",
        10,
    )
    .await;
    assert_eq!(outcome["stdout"], "started\n");
    let left = attack(&api, "bg", "ps -o args | grep -c \"^sleep 30\"", 10).await;
    assert_eq!(left["stdout"], "0\n", "{left}");
    still_fine(&api, "bg").await;
}
