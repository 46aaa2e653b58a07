//! The image scripts a newcomer's first command runs: their result must not
//! depend on the caller's environment. `scripts/run.sh` once left `umask 077`
//! in force for the image build, which made `/bin` and busybox 0700 root: every
//! command in the sandbox (uid 1000) then failed with "Permission denied".

use std::process::Command;

use crate::*;

#[test]
fn the_sandbox_image_is_usable_whatever_the_callers_umask() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tag = format!("brig-sandbox:{}", new_instance());
    let built = Command::new("bash")
        .args(["-c", "umask 077 && exec images/sandbox/build.sh \"$0\"", &tag])
        .current_dir(repo)
        .output()
        .expect("run images/sandbox/build.sh");
    assert!(
        built.status.success(),
        "the image build failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let listed = Command::new("docker")
        .args(["run", "--rm", "--network", "none", &tag, "ls", "-l", "/bin/busybox"])
        .output()
        .expect("docker run");
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(
        listed.status.success(),
        "uid 1000 cannot run busybox in the image: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&listed.stdout).starts_with("-rwxr-xr-x"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}
