//! The docker compose stack, built entirely from this machine's images.

use std::process::Command;

use crate::binary;

#[test]
fn the_compose_stack_comes_up_answers_the_readme_example_and_leaves_nothing_behind() {
    let bin_dir = binary("brig-api").parent().unwrap().to_path_buf();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The build context is the repository: hand it binaries from inside it.
    let bin_dir = bin_dir.strip_prefix(repo).map(|p| p.to_path_buf()).unwrap_or_else(|_| {
        panic!(
            "{} is outside the repository; the compose build context cannot reach it",
            bin_dir.display()
        )
    });
    let output = Command::new(repo.join("scripts/compose-smoke.sh"))
        .env("BRIG_BIN_DIR", &bin_dir)
        .output()
        .expect("run scripts/compose-smoke.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "compose smoke test failed:\n{log}");
    assert!(log.contains("compose smoke test passed"), "{log}");
    assert!(log.contains(r#""exit_code":0"#), "{log}");
    assert!(log.contains("==> suspend and resume"), "{log}");
}
