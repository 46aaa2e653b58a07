//! Agent volumes: each build publishes into its own; unused ones of other
//! builds are removed, and a process whose volume went publishes it again.

use std::process::Command;
use std::time::Duration;

use brig_core::agent_binary::AgentBinary;
use brig_core::{ExecRequest, SandboxRuntime};

use crate::helpers::{test_config_under, TestRuntime};

under_both_runtimes!(old_agent_volumes_go_unless_mounted_and_a_lost_volume_is_published_again);

/// The agent with a distinct tail: the same program, another build's volume.
fn another_build() -> AgentBinary {
    let tail = format!("\0another build {:016x}\0", rand::random::<u64>());
    let bytes = [brig_agent_embed::AGENT_BINARY, tail.as_bytes()].concat();
    AgentBinary::new(Box::leak(bytes.into_boxed_slice()))
}

fn volume_exists(name: &str) -> bool {
    let inspect = Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap();
    inspect.status.success()
}

fn remove_volume(name: &str) -> bool {
    let rm = Command::new("docker").args(["volume", "rm", name]).output().unwrap();
    rm.status.success()
}

/// Removes the test's volumes after its runtimes removed their containers
/// (declared first, dropped last).
struct Volumes(Vec<String>);

impl Drop for Volumes {
    fn drop(&mut self) {
        for name in &self.0 {
            remove_volume(name);
        }
    }
}

async fn old_agent_volumes_go_unless_mounted_and_a_lost_volume_is_published_again(runtime: &str) {
    let (old_agent, mounted_agent) = (another_build(), another_build());
    let volumes = Volumes(vec![old_agent.volume_name(), mounted_agent.volume_name()]);
    let current = TestRuntime::under(runtime).await;
    let old = TestRuntime::with_agent(test_config_under(runtime), old_agent).await;
    let mounted = TestRuntime::with_agent(test_config_under(runtime), mounted_agent).await;
    let own_volume = current.runtime.agent_volume().unwrap().to_string();
    let (old_volume, mounted_volume) = (volumes.0[0].clone(), volumes.0[1].clone());
    assert_ne!(old_volume, own_volume);

    // The old build ran a sandbox, which is gone now; the other one's still runs.
    let sandbox = old.sandbox("before").await;
    old.runtime.remove(&sandbox.id).await.unwrap();
    let kept = mounted.sandbox("kept").await;

    // Volumes younger than the grace stay.
    let removed = current
        .runtime
        .remove_stale_agent_volumes_among(Duration::from_secs(3600), Some(&volumes.0))
        .await
        .unwrap();
    assert!(!removed.contains(&old_volume), "{removed:?}");
    assert!(volume_exists(&old_volume));

    // Only this test's volumes are in scope: other test runs share the engine.
    let scope = [old_volume.clone(), mounted_volume.clone(), own_volume.clone()];
    current
        .runtime
        .remove_stale_agent_volumes_among(Duration::ZERO, Some(&scope))
        .await
        .unwrap();
    assert!(
        !volume_exists(&old_volume),
        "the unused volume of another build is removed"
    );
    assert!(volume_exists(&mounted_volume), "a volume a container mounts stays");
    assert!(volume_exists(&own_volume), "this build's own volume stays");
    let ran = mounted.sh(&kept, "echo still").await;
    assert_eq!(ran.stdout_str(), "still\n");

    // The old build's process is still running, with its volume gone: its next
    // sandbox publishes the volume again instead of failing.
    let after = old.sandbox("after").await;
    let ran = old.sh(&after, "echo works").await;
    assert_eq!(ran.stdout_str(), "works\n");
    assert!(volume_exists(&old_volume));

    // Gone again (by hand) while nothing mounts it: readiness puts it back.
    old.runtime.remove(&after.id).await.unwrap();
    assert!(remove_volume(&old_volume), "nothing mounts it");
    old.runtime.ready().await.unwrap();
    assert!(
        volume_exists(&old_volume),
        "readiness publishes a lost agent volume again"
    );
    let again = old.sandbox("again").await;
    let ran = old
        .runtime
        .exec(&again.id, ExecRequest::new(["echo", "again"]))
        .await
        .unwrap();
    assert_eq!(ran.stdout_str(), "again\n");
}
