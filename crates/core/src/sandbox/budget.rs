//! The memory a sandbox can pin whatever its processes do: tmpfs contents,
//! the kernel memory of tmpfs inodes, shared memory. Engine-neutral numbers,
//! used by the container spec (mount options) and by the configuration check
//! that the memory limit leaves room for processes.

/// Size of `/dev/shm`. Like the tmpfs mounts it is charged to the container's
/// memory, so it is kept small and counted when the limits are validated.
pub const SHM_BYTES: u64 = 16 << 20;

/// Total SysV shared memory of a sandbox (`kernel.shmall`/`shmmax`, namespaced
/// with IPC). Segments outlive the process that made them and are charged to
/// the container's memory, so they are capped and counted like a tmpfs.
pub const SYSV_SHM_BYTES: u64 = 8 << 20;

/// Every tmpfs gets one inode per this many bytes of its size. Without a cap a
/// tmpfs allows millions of empty files, each ~1 KiB of kernel memory charged
/// to the container: filling inodes would OOM-kill the agent.
pub const TMPFS_BYTES_PER_INODE: u64 = 16 << 10;

/// Kernel memory one tmpfs inode costs (inode + dentry, measured ~1 KiB).
pub const INODE_COST_BYTES: u64 = 1 << 10;

/// Memory left for processes (the agent and the commands) beyond what can be
/// pinned: the memory limit must be at least pinnable + this.
pub const PROCESS_HEADROOM: u64 = 24 << 20;

/// What a sandbox with tmpfs mounts of `tmp_bytes` (`/tmp`) and
/// `workspace_bytes` (`/workspace`) can pin: their sizes, `/dev/shm`, the
/// kernel memory of every inode they allow, and SysV shared memory. None of
/// it is freed by killing a process.
pub fn pinnable_bytes(tmp_bytes: u64, workspace_bytes: u64) -> u64 {
    let tmpfs = tmp_bytes + workspace_bytes + SHM_BYTES;
    tmpfs + tmpfs / TMPFS_BYTES_PER_INODE * INODE_COST_BYTES + SYSV_SHM_BYTES
}

/// Inodes a tmpfs of `size` bytes gets.
pub fn tmpfs_inodes(size: u64) -> u64 {
    size / TMPFS_BYTES_PER_INODE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_leave_the_headroom() {
        // 64 MiB /tmp and 128 MiB /workspace within the default 256 MiB.
        let pinned = pinnable_bytes(64 << 20, 128 << 20);
        assert!(pinned + PROCESS_HEADROOM <= 256 << 20, "{}", pinned >> 20);
    }
}
