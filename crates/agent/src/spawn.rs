//! Starting a command with `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)`
//! then `execve`): the agent's address space is not copied per command, and
//! no error pipe is needed, as glibc hands back the child's `errno`.
//!
//! `std::process::Command` forks here instead: it gives `posix_spawn` up when
//! the command's `PATH` differs from the agent's own, and when it cannot find
//! `posix_spawn_file_actions_addchdir_np` at run time, which a statically
//! linked agent never does. The program is looked up in the command's `PATH`
//! here, so the child never tries one directory after another; a file the
//! kernel cannot execute is run with `/bin/sh`, as `execvp` does.
//!
//! What the child gets: `argv`, exactly the environment given, `cwd`, stdin
//! from a pipe or `/dev/null`, stdout and stderr to pipes, a process group of
//! its own, every signal at its default disposition (but glibc's internal
//! ones, see [`Attributes`]) and none blocked, and no other descriptor (the
//! agent opens all of its own close-on-exec).
//!
//! Unsafe code, like [`sys`](crate::sys): the libc calls, each with its
//! reason for being sound.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use brig_protocol::TtySize;

use crate::supervisor::COMMAND_PATH;
use crate::sys;

/// What to start.
pub struct Spec<'a> {
    pub argv: &'a [String],
    /// The whole environment (later duplicates of a name win).
    pub env: Vec<(&'a str, &'a str)>,
    pub cwd: &'a str,
    /// A pipe for stdin (else `/dev/null`).
    pub stdin: bool,
    /// Run under a new pseudo-terminal of this size instead of pipes.
    pub tty: Option<TtySize>,
}

/// A started command: its pid and the agent's ends of its pipes (under a
/// terminal: the master, to read and to write, and no stderr).
pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: Option<File>,
    /// The terminal's master, for resizing.
    pub pty: Option<OwnedFd>,
}

pub fn spawn(spec: &Spec<'_>) -> io::Result<Spawned> {
    let env: BTreeMap<&str, &str> = spec.env.iter().copied().collect();
    let program = resolve(&spec.argv[0], env.get("PATH").copied().unwrap_or(COMMAND_PATH))?;
    let program = c_string(program.as_os_str().as_bytes())?;
    let argv = spec
        .argv
        .iter()
        .map(|arg| c_string(arg.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = c_string(spec.cwd.as_bytes())?;
    if let Some(size) = spec.tty {
        return spawn_in_tty(&program, argv, &envp, &cwd, size);
    }

    let (stdout, child_stdout) = pipe()?;
    let (stderr, child_stderr) = pipe()?;
    let (stdin, child_stdin) = if spec.stdin {
        let (child_end, ours) = pipe()?;
        (Some(ours), Some(child_end))
    } else {
        (None, None)
    };
    let stdin_fd = match &child_stdin {
        Some(fd) => fd.as_raw_fd(),
        None => dev_null()?.as_raw_fd(),
    };

    let mut actions = FileActions::new()?;
    actions.dup2(stdin_fd, 0)?;
    actions.dup2(child_stdout.as_raw_fd(), 1)?;
    actions.dup2(child_stderr.as_raw_fd(), 2)?;
    actions.chdir(&cwd)?;
    let pid = start(&program, argv, &envp, &actions, &Attributes::new(false)?)?;
    // The child's ends close here, in the agent.
    drop((child_stdin, child_stdout, child_stderr));
    Ok(Spawned {
        pid,
        stdin: stdin.map(File::from),
        stdout: File::from(stdout),
        stderr: Some(File::from(stderr)),
        pty: None,
    })
}

/// Starts the command as the leader of a new session whose controlling
/// terminal is a new pseudo-terminal's slave (opened by the child after
/// `setsid`, so it becomes its controlling terminal), as its stdin, stdout
/// and stderr.
fn spawn_in_tty(
    program: &CString,
    argv: Vec<CString>,
    envp: &[CString],
    cwd: &CString,
    size: TtySize,
) -> io::Result<Spawned> {
    let (master, slave) = sys::open_pty(size)?;
    let slave = c_string(slave.as_bytes())?;
    let mut actions = FileActions::new()?;
    actions.open(0, &slave, libc::O_RDWR)?;
    actions.dup2(0, 1)?;
    actions.dup2(0, 2)?;
    actions.chdir(cwd)?;
    let pid = start(program, argv, envp, &actions, &Attributes::new(true)?)?;
    let duplicate = |fd: &OwnedFd| fd.try_clone();
    Ok(Spawned {
        pid,
        stdin: Some(File::from(duplicate(&master)?)),
        stdout: File::from(duplicate(&master)?),
        stderr: None,
        pty: Some(master),
    })
}

/// `posix_spawn` of `program`; a file the kernel cannot execute (a script
/// without `#!`) is run with `/bin/sh`, as execvp does.
fn start(
    program: &CString,
    argv: Vec<CString>,
    envp: &[CString],
    actions: &FileActions,
    attributes: &Attributes,
) -> io::Result<i32> {
    let envp_ptrs = null_terminated(envp);
    let start = |program: &CString, argv: &[CString]| {
        let argv_ptrs = null_terminated(argv);
        let mut pid: libc::pid_t = 0;
        // SAFETY: every pointer is valid for the call: the strings and their
        // arrays outlive it, and both arrays end with a null pointer.
        let failed = unsafe {
            libc::posix_spawn(
                &mut pid,
                program.as_ptr(),
                &actions.0,
                &attributes.0,
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
            )
        };
        if failed == 0 {
            Ok(pid)
        } else {
            Err(io::Error::from_raw_os_error(failed))
        }
    };
    match start(program, &argv) {
        Err(err) if err.raw_os_error() == Some(libc::ENOEXEC) => {
            let shell = c_string(b"/bin/sh")?;
            let argv: Vec<CString> = [shell.clone(), program.clone()]
                .into_iter()
                .chain(argv.into_iter().skip(1))
                .collect();
            start(&shell, &argv)
        }
        started => started,
    }
}

/// `program` itself if it names a path, else the first executable regular
/// file of that name in `path` (the command's `PATH`: what `execvp` would run).
fn resolve(program: &str, path: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let mut refused = false;
    for dir in path.split(':') {
        let candidate = Path::new(dir).join(program);
        match executable(&candidate) {
            Ok(true) => return Ok(candidate),
            Ok(false) => refused = true,
            Err(_) => {}
        }
    }
    // As execvp: permission denied if a file was there but could not run.
    Err(io::Error::from_raw_os_error(if refused {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

/// Whether `path` is a regular file this process may execute; an error if
/// there is no such file.
fn executable(path: &Path) -> io::Result<bool> {
    let meta = std::fs::metadata(path)?;
    let path = c_string(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string.
    Ok(meta.is_file() && unsafe { libc::access(path.as_ptr(), libc::X_OK) } == 0)
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} holds a NUL byte", OsStr::from_bytes(bytes)),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `/dev/null`, opened once (close-on-exec) for every command without stdin.
fn dev_null() -> io::Result<&'static File> {
    static DEV_NULL: OnceLock<File> = OnceLock::new();
    if let Some(file) = DEV_NULL.get() {
        return Ok(file);
    }
    let file = File::open("/dev/null")?;
    Ok(DEV_NULL.get_or_init(|| file))
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: zeroed storage, initialised by the call before any other use.
        let mut actions = FileActions(unsafe { std::mem::zeroed() });
        check(unsafe { libc::posix_spawn_file_actions_init(&mut actions.0) })?;
        Ok(actions)
    }

    fn dup2(&mut self, fd: i32, target: i32) -> io::Result<()> {
        // SAFETY: initialised in `new`.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    fn open(&mut self, target: i32, path: &CString, flags: i32) -> io::Result<()> {
        // SAFETY: initialised in `new`; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addopen(&mut self.0, target, path.as_ptr(), flags, 0) })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: initialised in `new`; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// A process group of its own (`setpgid(0, 0)`; under a terminal a session
/// of its own, `setsid`, which makes a group too), every catchable signal back
/// to its default disposition (the agent ignores SIGPIPE), an empty mask.
/// glibc's two internal signals (32 and 33, below `SIGRTMIN`, which no
/// program may use) are the exception: its posix_spawn leaves them ignored,
/// and a libc that uses them installs its own handlers.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new(session: bool) -> io::Result<Self> {
        // SAFETY: zeroed storage, initialised by the call before any other use;
        // the signal sets are initialised by sigfillset/sigemptyset.
        unsafe {
            let mut attributes = Attributes(std::mem::zeroed());
            check(libc::posix_spawnattr_init(&mut attributes.0))?;
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(&mut attributes.0, &all))?;
            check(libc::posix_spawnattr_setsigmask(&mut attributes.0, &none))?;
            check(libc::posix_spawnattr_setpgroup(&mut attributes.0, 0))?;
            let group = if session {
                libc::POSIX_SPAWN_SETSID
            } else {
                libc::POSIX_SPAWN_SETPGROUP as libc::c_short
            };
            let flags = group | (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attributes.0, flags))?;
            Ok(attributes)
        }
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code))
    }
}
