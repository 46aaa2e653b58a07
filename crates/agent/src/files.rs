//! File operations under `/workspace`, for the API's files endpoints (the
//! engine's archive API cannot see tmpfs contents).
//!
//! The tenant owns `/workspace` and may plant anything there, so every path is
//! walked one component at a time from a directory fd with `O_NOFOLLOW`: no
//! symlink is followed, no `..` exists, and nothing outside `/workspace` (such
//! as `/proc`) is reachable. Files are opened `O_NONBLOCK` and must be regular,
//! so a FIFO cannot wedge the agent. Sizes are bounded by [`MAX_FILE_BYTES`].

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use brig_protocol::{
    DirEntry, EntryKind, ErrorCode, FileReply, FileRequest, MAX_DIR_ENTRIES, MAX_FILE_BYTES, MAX_LIST_BYTES,
};

use crate::sys;

pub const ROOT: &str = "/workspace";

/// Why a file operation failed: a protocol error code and a message.
pub type Failure = (ErrorCode, String);

/// Longest path accepted, and longest component (Linux's limits).
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// An entry's bytes on the wire besides its name: length, kind, size.
const ENTRY_OVERHEAD: usize = 4 + 1 + 8;

/// `brig-agent file`: one `File` frame on stdin (up to EOF), its answer as one
/// frame on stdout. For `docker exec`, like `run --frames`.
pub fn one_shot() -> Result<i32, String> {
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .take(brig_protocol::MAX_FRAME_LEN as u64 + 16)
        .read_to_end(&mut input)
        .map_err(|err| format!("reading stdin: {err}"))?;
    let mut decoder = brig_protocol::FrameDecoder::new();
    decoder.push(&input);
    let answer = match decoder.next_frame() {
        Some(Ok(brig_protocol::Frame::File { id, request })) => match handle(ROOT, request) {
            Ok(reply) => brig_protocol::Frame::FileDone { id, reply },
            Err((code, message)) => brig_protocol::Frame::Error { id, code, message },
        },
        _ => brig_protocol::Frame::Error {
            id: 0,
            code: ErrorCode::InvalidRequest,
            message: "expected one File frame on stdin".into(),
        },
    };
    let mut out = io::stdout().lock();
    out.write_all(&crate::serve::encoded(&answer))
        .and_then(|()| out.flush())
        .map_err(|err| format!("writing stdout: {err}"))?;
    Ok(0)
}

/// Runs one request against `root` (`/workspace` in a sandbox).
pub fn handle(root: &str, request: FileRequest) -> Result<FileReply, Failure> {
    match request {
        FileRequest::Read { path } => read(root, &path).map(FileReply::Data),
        FileRequest::Write { path, data } => write(root, &path, &data).map(|()| FileReply::Done),
        FileRequest::List { path } => list(root, &path),
        FileRequest::Delete { path } => delete(root, &path).map(|()| FileReply::Done),
    }
}

/// The components of a relative path; `allow_empty` for `/workspace` itself.
pub(crate) fn components(path: &str, allow_empty: bool) -> Result<Vec<CString>, Failure> {
    let invalid = |why: &str| (ErrorCode::InvalidRequest, format!("path {path:?}: {why}"));
    if path.is_empty() {
        return if allow_empty {
            Ok(Vec::new())
        } else {
            Err(invalid("empty"))
        };
    }
    if path.len() > MAX_PATH {
        return Err(invalid("too long"));
    }
    path.split('/')
        .map(|part| {
            if part.is_empty() || part == "." || part == ".." {
                Err(invalid("must be relative, without empty, . or .. components"))
            } else if part.len() > MAX_NAME {
                Err(invalid("a component is longer than 255 bytes"))
            } else {
                CString::new(part).map_err(|_| invalid("contains NUL"))
            }
        })
        .collect()
}

pub(crate) fn failure(path: &str, err: io::Error) -> Failure {
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) => ErrorCode::FileNotFound,
        Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT) => ErrorCode::FileTooLarge,
        _ => ErrorCode::FileRefused,
    };
    let reason = match err.raw_os_error() {
        // O_NOFOLLOW on a symlink.
        Some(libc::ELOOP) => "a symlink is on the way".to_string(),
        _ => err.to_string(),
    };
    (code, format!("{path}: {reason}"))
}

fn open_root(root: &str) -> io::Result<OwnedFd> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)?;
    Ok(dir.into())
}

pub(crate) const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Opens the directory `dirs` names under `root`, creating what is missing if
/// `create`.
pub(crate) fn walk(root: &str, dirs: &[CString], create: bool) -> io::Result<OwnedFd> {
    walk_from(open_root(root)?, dirs, create)
}

/// [`walk`] from an open directory `dir` instead of a root path.
pub(crate) fn walk_from(mut dir: OwnedFd, dirs: &[CString], create: bool) -> io::Result<OwnedFd> {
    for name in dirs {
        dir = match sys::openat(&dir, name, DIR_FLAGS, 0) {
            Err(err) if create && err.raw_os_error() == Some(libc::ENOENT) => match sys::mkdirat(&dir, name, 0o700) {
                Err(err) if err.raw_os_error() != Some(libc::EEXIST) => return Err(err),
                _ => sys::openat(&dir, name, DIR_FLAGS, 0)?,
            },
            other => other?,
        };
    }
    Ok(dir)
}

/// Opens the regular file `name` in `dir`, refusing anything else.
pub(crate) fn open_regular(dir: &OwnedFd, name: &CString, flags: libc::c_int) -> io::Result<File> {
    let file = File::from(sys::openat(
        dir,
        name,
        flags | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0o600,
    )?);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

fn split(path: &str) -> Result<(Vec<CString>, CString), Failure> {
    let mut parts = components(path, false)?;
    let name = parts.pop().expect("components of a non-empty path");
    Ok((parts, name))
}

fn read(root: &str, path: &str) -> Result<Vec<u8>, Failure> {
    let (dirs, name) = split(path)?;
    let dir = walk(root, &dirs, false).map_err(|err| failure(path, err))?;
    let file = open_regular(&dir, &name, libc::O_RDONLY).map_err(|err| failure(path, err))?;
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|err| failure(path, err))?;
    if data.len() > MAX_FILE_BYTES {
        return Err((
            ErrorCode::FileTooLarge,
            format!("{path}: larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(data)
}

fn write(root: &str, path: &str, data: &[u8]) -> Result<(), Failure> {
    let (dirs, name) = split(path)?;
    let dir = walk(root, &dirs, true).map_err(|err| failure(path, err))?;
    // Not O_TRUNC: truncate only once it is known to be a regular file.
    let mut file = open_regular(&dir, &name, libc::O_WRONLY | libc::O_CREAT).map_err(|err| failure(path, err))?;
    file.set_len(0)
        .and_then(|()| file.write_all(data))
        .map_err(|err| failure(path, err))
}

fn list(root: &str, path: &str) -> Result<FileReply, Failure> {
    let dirs = components(path, true)?;
    let dir = walk(root, &dirs, false).map_err(|err| failure(path, err))?;
    // Our own fd, through /proc/self: std has no fdopendir.
    let through = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut entries = Vec::new();
    let mut truncated = false;
    // What the entries cost on the wire: names are the tenant's, and one that
    // is not UTF-8 grows when it is made one (red team L1: 3,000 such names
    // made a frame past the limit, and the agent's assert took the sandbox).
    let mut encoded = 0;
    for entry in std::fs::read_dir(&through).map_err(|err| failure(path, err))? {
        let entry = entry.map_err(|err| failure(path, err))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        encoded += ENTRY_OVERHEAD + name.len();
        if entries.len() == MAX_DIR_ENTRIES || encoded > MAX_LIST_BYTES {
            truncated = true;
            break;
        }
        // Not followed: a symlink is listed as one.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue; // removed meanwhile
        };
        let kind = meta.file_type();
        entries.push(DirEntry {
            name,
            kind: if kind.is_file() {
                EntryKind::File
            } else if kind.is_dir() {
                EntryKind::Directory
            } else if kind.is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::Other
            },
            size: if kind.is_file() { meta.len() } else { 0 },
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(FileReply::Entries { entries, truncated })
}

fn delete(root: &str, path: &str) -> Result<(), Failure> {
    let (dirs, name) = split(path)?;
    let dir = walk(root, &dirs, false).map_err(|err| failure(path, err))?;
    match sys::unlinkat(&dir, &name, 0) {
        Err(err) if err.raw_os_error() == Some(libc::EISDIR) => sys::unlinkat(&dir, &name, libc::AT_REMOVEDIR),
        other => other,
    }
    .map_err(|err| failure(path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.0.to_str().unwrap().to_string();
        (dir, path)
    }

    /// A scratch directory removed on drop (no extra dependency for one test).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "brig-files-{}-{:?}",
                    std::process::id(),
                    std::time::SystemTime::now()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn request(root: &str, request: FileRequest) -> Result<FileReply, ErrorCode> {
        handle(root, request).map_err(|(code, _)| code)
    }

    #[test]
    fn files_round_trip_and_directories_are_made_listed_and_removed() {
        let (_guard, root) = root();
        let data: Vec<u8> = (0..=255).collect();
        let write = |path: &str, data: &[u8]| {
            request(
                &root,
                FileRequest::Write {
                    path: path.into(),
                    data: data.to_vec(),
                },
            )
        };
        assert_eq!(write("a/b/c.bin", &data), Ok(FileReply::Done));
        assert_eq!(
            request(
                &root,
                FileRequest::Read {
                    path: "a/b/c.bin".into()
                }
            ),
            Ok(FileReply::Data(data))
        );
        assert_eq!(write("a/b/c.bin", b"short"), Ok(FileReply::Done));
        assert_eq!(
            request(
                &root,
                FileRequest::Read {
                    path: "a/b/c.bin".into()
                }
            ),
            Ok(FileReply::Data(b"short".to_vec()))
        );
        let Ok(FileReply::Entries { entries, truncated }) = request(&root, FileRequest::List { path: "a".into() })
        else {
            panic!("no listing");
        };
        assert!(!truncated);
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].name.as_str(), entries[0].kind), ("b", EntryKind::Directory));
        assert_eq!(
            request(&root, FileRequest::Delete { path: "a/b".into() }),
            Err(ErrorCode::FileRefused),
            "a non-empty directory"
        );
        assert_eq!(
            request(
                &root,
                FileRequest::Delete {
                    path: "a/b/c.bin".into()
                }
            ),
            Ok(FileReply::Done)
        );
        assert_eq!(
            request(&root, FileRequest::Delete { path: "a/b".into() }),
            Ok(FileReply::Done)
        );
        assert_eq!(
            request(
                &root,
                FileRequest::Read {
                    path: "a/b/c.bin".into()
                }
            ),
            Err(ErrorCode::FileNotFound)
        );
    }

    #[test]
    fn escapes_symlinks_and_special_files_are_refused() {
        let (_guard, root) = root();
        std::os::unix::fs::symlink("/etc", format!("{root}/link")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", format!("{root}/file-link")).unwrap();
        for path in ["../x", "/etc/passwd", "a//b", "./x", "a/../../x", "", "x\0y"] {
            assert_eq!(
                request(&root, FileRequest::Read { path: path.into() }),
                Err(ErrorCode::InvalidRequest),
                "{path:?}"
            );
        }
        for path in ["link/passwd", "file-link"] {
            assert_eq!(
                request(&root, FileRequest::Read { path: path.into() }),
                Err(ErrorCode::FileRefused)
            );
            let write = FileRequest::Write {
                path: path.into(),
                data: b"x".to_vec(),
            };
            assert_eq!(request(&root, write), Err(ErrorCode::FileRefused), "{path}");
        }
        assert_eq!(
            request(&root, FileRequest::List { path: "link".into() }),
            Err(ErrorCode::FileRefused)
        );
        // A FIFO neither blocks nor is treated as a file.
        let fifo = CString::new(format!("{root}/fifo")).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(fifo.to_str().unwrap())
            .status()
            .unwrap()
            .success());
        assert_eq!(
            request(&root, FileRequest::Read { path: "fifo".into() }),
            Err(ErrorCode::FileRefused)
        );
        // The link itself can be removed; its target is untouched.
        assert_eq!(
            request(
                &root,
                FileRequest::Delete {
                    path: "file-link".into()
                }
            ),
            Ok(FileReply::Done)
        );
        assert!(std::path::Path::new("/etc/hostname").exists());
    }

    /// Red team L1: a tenant's directory of 3,000 names of 255 bytes that are
    /// not UTF-8. The listing is cut to what a frame carries, says so, and
    /// encodes (it used to overflow the frame and abort PID 1).
    #[test]
    fn a_listing_of_huge_invalid_names_fits_a_frame_and_says_it_is_cut() {
        use std::os::unix::ffi::OsStrExt;
        let (_guard, root) = root();
        for i in 0..3000 {
            let mut name = vec![0xff_u8; 250];
            name.extend_from_slice(format!("{i:05}").as_bytes());
            File::create(std::path::Path::new(&root).join(std::ffi::OsStr::from_bytes(&name))).unwrap();
        }
        let reply = request(&root, FileRequest::List { path: String::new() }).unwrap();
        let FileReply::Entries { entries, truncated } = &reply else {
            panic!("no listing");
        };
        assert!(*truncated);
        assert!(entries.len() > 1000, "{} entries", entries.len());
        let frame = brig_protocol::Frame::FileDone { id: 1, reply };
        assert!(frame.try_encode().is_ok(), "the listing does not fit a frame");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::os::unix::ffi::OsStrExt;

        /// A name a tenant can create: any bytes but `/` and NUL.
        fn name() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec(
                any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
                1..=255,
            )
            .prop_filter("not . or ..", |n| n != b"." && n != b"..")
        }

        /// A path a client can send: pieces of names, slashes, dots, NULs.
        fn path() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("/".to_string()),
                    Just("..".to_string()),
                    Just(".".to_string()),
                    Just("\0".to_string()),
                    "[a-c\u{fffd}é]{0,4}",
                    "\\PC{0,300}",
                ],
                0..6,
            )
            .prop_map(|parts| parts.concat())
        }

        fn request_for(kind: u8, path: String, data: Vec<u8>) -> FileRequest {
            match kind % 4 {
                0 => FileRequest::List { path },
                1 => FileRequest::Read { path },
                2 => FileRequest::Write { path, data },
                _ => FileRequest::Delete { path },
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            /// Whatever the tenant planted and whatever the client asks, the
            /// agent answers (no panic) with a frame it can send, and nothing
            /// outside the root changes.
            #[test]
            fn any_tree_and_any_request_get_an_answer_that_fits_a_frame(
                names in proptest::collection::vec((name(), any::<bool>()), 0..20),
                requests in proptest::collection::vec((any::<u8>(), path(), proptest::collection::vec(any::<u8>(), 0..64)), 1..8),
            ) {
                // The root inside a directory of its own, to see anything escape.
                let (_guard, outside) = root();
                let root = format!("{outside}/workspace");
                std::fs::create_dir(&root).unwrap();
                for (name, dir) in names {
                    let at = std::path::Path::new(&root).join(std::ffi::OsStr::from_bytes(&name));
                    let _ = if dir { std::fs::create_dir(&at) } else { File::create(&at).map(drop) };
                }
                for (kind, path, data) in requests {
                    let answer = match handle(&root, request_for(kind, path, data)) {
                        Ok(reply) => brig_protocol::Frame::FileDone { id: 1, reply },
                        Err((code, message)) => brig_protocol::Frame::Error { id: 1, code, message },
                    };
                    prop_assert!(answer.try_encode().is_ok());
                }
                prop_assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);
            }
        }
    }
}
