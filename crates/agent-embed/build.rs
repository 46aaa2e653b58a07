//! Builds the static brig-agent and hands it to `include_bytes!` (src/lib.rs).
//!
//! The agent must be linked with `+crt-static`, which cannot be set for the whole
//! workspace (proc-macro crates would stop building), so we run a nested cargo
//! for the agent alone, with an explicit `--target` and its own target directory.
//! `BRIG_AGENT_BINARY=/path/to/brig-agent` skips the nested build (image builds).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-env-changed=BRIG_AGENT_BINARY");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("brig-agent");

    if let Some(prebuilt) = env::var_os("BRIG_AGENT_BINARY") {
        std::fs::copy(&prebuilt, &dest).expect("copy BRIG_AGENT_BINARY");
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir.join("../..").canonicalize().expect("workspace root");
    for watched in ["crates/agent", "crates/protocol", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    // Beside the outer build's profile directories, never inside one of them:
    // the outer cargo holds a lock on its own profile directory.
    let target_dir = workspace.join("target").join("agent");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "brig-agent",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .args([
            "--config",
            "profile.release.strip=\"symbols\"",
            "--config",
            "profile.release.panic=\"abort\"",
        ])
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo for brig-agent");
    assert!(status.success(), "building the static brig-agent failed");
    let built = target_dir.join(TARGET).join("release").join("brig-agent");
    std::fs::copy(&built, &dest).expect("copy the built brig-agent");
}
