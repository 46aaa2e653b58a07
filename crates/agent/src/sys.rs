//! The agent's unsafe code, with [`spawn`](crate::spawn): thin, checked
//! wrappers over the syscalls std does not expose. Everything else in the
//! agent is safe Rust.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use brig_protocol::Termination;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Makes the agent non-dumpable: same-uid code in the sandbox can then neither
/// ptrace it nor open `/proc/1/fd/*` or `/proc/1/environ` (there is no Yama here).
pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(drop)
}

/// Orphans of our commands reparent to us (used by the one-shot `run`, which is
/// not PID 1).
/// io_uring's syscalls (the same numbers on every architecture since 5.1):
/// setup, enter, register.
const IO_URING: [u32; 3] = [425, 426, 427];

/// The x32 ABI's syscall number bit, cleared before comparing.
const X32_BIT: u32 = 0x4000_0000;

/// Refuses io_uring (EPERM) to this process and everything it starts (red
/// team M6: Docker 20.10's default seccomp profile allows it, and it has been
/// the leading source of kernel privilege escalations). A second seccomp
/// filter stacked on the engine's: the kernel applies both, so nothing the
/// engine's profile refuses is allowed by this one. Needs `no_new_privs`,
/// which the sandbox has anyway (and which this sets).
pub fn deny_io_uring() -> io::Result<()> {
    let statement = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_if = |k: u32, jt: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf: 0,
        k,
    };
    // seccomp_data.nr is the first 32-bit word.
    let mut filter = vec![
        statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        statement(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, !X32_BIT),
    ];
    for (i, nr) in IO_URING.iter().enumerate() {
        // Past the remaining comparisons and the allow, to the refusal.
        filter.push(jump_if(*nr, (IO_URING.len() - i) as u8));
    }
    filter.push(statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    filter.push(statement(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA),
    ));
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls; the kernel copies `program` (which outlives
    // the call) and checks it before installing it.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    check(unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    })
    .map(drop)
}

pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(drop)
}

/// Blocks until some child has exited and returns its pid without reaping it
/// (the zombie keeps the pid, and with it the process group id, reserved).
/// `None` when there are no children at all.
pub fn wait_any_exited() -> io::Result<Option<i32>> {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t.
        let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if ret == 0 {
            // SAFETY: waitid succeeded with WEXITED, so si_pid is valid.
            return Ok(Some(unsafe { info.si_pid() }));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Reaps `pid` if it has exited. `None` if it is still running or not our child.
pub fn reap(pid: i32) -> Option<Termination> {
    let mut status = 0;
    // SAFETY: valid pointer to an int.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if ret != pid {
        return None;
    }
    if libc::WIFSIGNALED(status) {
        Some(Termination::Signaled(libc::WTERMSIG(status)))
    } else {
        Some(Termination::Exited(libc::WEXITSTATUS(status)))
    }
}

/// SIGKILL to a process group. Returns false when the group no longer exists.
pub fn kill_group(pgid: i32) -> bool {
    signal_group(pgid, libc::SIGKILL)
}

/// `signal` to a process group. Returns false when the group no longer
/// exists (or the signal is invalid).
pub fn signal_group(pgid: i32, signal: i32) -> bool {
    debug_assert!(pgid > 1);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// SIGKILL to one process.
pub fn kill_process(pid: i32) {
    debug_assert!(pid > 1);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// The uid of the process at the other end of unix socket `fd`.
pub fn peer_uid(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of a ucred's size.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    })?;
    Ok(cred.uid)
}

/// A new pseudo-terminal of `size`: its master (close-on-exec) and the
/// path of its slave.
pub fn open_pty(size: brig_protocol::TtySize) -> io::Result<(OwnedFd, String)> {
    // SAFETY: plain calls on the descriptor this function opens and owns.
    unsafe {
        let master = check(libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC))?;
        let master = OwnedFd::from_raw_fd(master);
        check(libc::grantpt(master.as_raw_fd()))?;
        check(libc::unlockpt(master.as_raw_fd()))?;
        let mut name = [0 as libc::c_char; 64];
        let failed = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        let slave = std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        set_tty_size(&master, size)?;
        Ok((master, slave))
    }
}

/// Sets the size of the terminal whose master is `master` (its foreground
/// process group gets SIGWINCH).
pub fn set_tty_size(master: &impl AsRawFd, size: brig_protocol::TtySize) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize, which `size` is.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) }).map(drop)
}

/// Our own pid.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// A counter the reaper bumps to wake a supervisor; readable when non-zero.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd_signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a valid buffer.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

pub fn eventfd_clear(fd: &OwnedFd) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a valid buffer.
    unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Readiness of one descriptor after [`poll`].
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct PollFd(libc::pollfd);

impl PollFd {
    pub fn readable(fd: RawFd) -> Self {
        PollFd(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
    }
    pub fn writable(fd: RawFd) -> Self {
        PollFd(libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        })
    }
    /// Readable and/or writable, as asked; with neither, only hang-ups and errors.
    pub fn interest(fd: RawFd, read: bool, write: bool) -> Self {
        let mut events = 0;
        if read {
            events |= libc::POLLIN;
        }
        if write {
            events |= libc::POLLOUT;
        }
        PollFd(libc::pollfd { fd, events, revents: 0 })
    }
    /// A slot poll ignores (negative fd).
    pub fn unused() -> Self {
        PollFd(libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        })
    }
    /// Ready for the requested event, or hung up / in error (a read or write then
    /// reports what happened).
    pub fn ready(&self) -> bool {
        self.0.revents != 0
    }
    /// A read would not block (data, end of file, or an error to report).
    pub fn can_read(&self) -> bool {
        self.0.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }
    /// A write would not block (room, or an error to report).
    pub fn can_write(&self) -> bool {
        self.0.revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// poll(2); `timeout_ms` negative waits forever. EINTR counts as "nothing ready".
pub fn poll(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: PollFd is repr-compatible with pollfd (a newtype) and the slice is valid.
    let ret = unsafe {
        libc::poll(
            fds.as_mut_ptr().cast::<libc::pollfd>(),
            fds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    match check(ret) {
        Err(err) if err.raw_os_error() == Some(libc::EINTR) => Ok(()),
        other => other.map(drop),
    }
}

/// Makes a started command the first candidate of the OOM killer, so that
/// memory no RSS shows (socket buffers, tmpfs) never gets the agent killed
/// instead. Called once the command has exec'd: only then is it dumpable and
/// are its `/proc` files its uid's (ours). From the forked child before exec
/// the write cannot work (the child is still non-dumpable like the agent, its
/// `/proc` files root's: EACCES). Raising the score needs no privilege; what
/// the command forks from then on inherits it.
pub fn prefer_oom_kill(pid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), b"1000")
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`: `name` is one path component.
pub fn openat(
    dir: &impl AsRawFd,
    name: &std::ffi::CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: valid NUL-terminated path; the returned fd is new and ours.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: &impl AsRawFd, name: &std::ffi::CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `unlinkat(dir, name, flags)` (`AT_REMOVEDIR` for a directory).
pub fn unlinkat(dir: &impl AsRawFd, name: &std::ffi::CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Ignores SIGXFSZ: a write past `RLIMIT_FSIZE` then fails with `EFBIG`,
/// which a transfer reports, instead of killing the process silently.
pub fn ignore_sigxfsz() {
    // SAFETY: installing SIG_IGN for one signal has no memory effects.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}
