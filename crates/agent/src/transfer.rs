//! Streamed transfers under `/workspace`, for `docker exec` (any replica, and
//! never the command channel): files of any size and directories as tar.
//!
//! - `put PATH`: the file arrives on stdin; written beside its place under a
//!   temporary name and renamed over it only once complete.
//! - `get PATH`: the file leaves on stdout.
//! - `tar-out DIR`: DIR as a tar on stdout (symlinks as symlinks, nothing
//!   followed; sockets, FIFOs and devices left out).
//! - `tar-in DIR`: a tar on stdin, checked entry by entry and extracted into
//!   a staging directory beside DIR's contents, then moved into DIR: an
//!   archive refused halfway leaves DIR as it was.
//!
//! Bytes travel as protocol frames both ways: `Data` chunks (at most
//! [`MAX_TUNNEL_CHUNK`]) ended by `Shut` on stdin, then one `FileDone` or
//! `Error` on stdout (after the `Data` of `get` and `tar-out`). stdin that ends
//! without `Shut` is an interrupted upload: nothing of it is kept. Paths are
//! walked from `/workspace` as [`crate::files`] walks them (no symlink
//! followed, no `..`), so nothing outside `/workspace` is read or written.

use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use brig_protocol::{ErrorCode, FileReply, Frame, FrameDecoder, MAX_TUNNEL_CHUNK};

use crate::files::{components, failure, open_regular, walk, walk_from, Failure, DIR_FLAGS, ROOT};

/// The id every one-shot transfer frame carries.
const ID: u32 = 1;
/// Names of our own scratch entries, left out of archives.
const PART_PREFIX: &str = ".brig-part-";
const STAGING_PREFIX: &str = ".brig-extract-";
/// Deepest directory nesting archived or extracted.
const MAX_DEPTH: usize = 128;

/// `brig-agent put|get|tar-out|tar-in PATH`.
pub fn one_shot(args: &[String]) -> Result<i32, String> {
    let [verb, path] = args else {
        return Err("usage: brig-agent put|get|tar-out|tar-in PATH".into());
    };
    // Past the file size limit: EFBIG, reported, rather than a silent death.
    crate::sys::ignore_sigxfsz();
    let mut out = FramesOut::new();
    let outcome = match verb.as_str() {
        "put" => put(ROOT, path, &mut FramesIn::stdin()),
        "get" => get(ROOT, path, &mut out),
        "tar-out" => tar_out(ROOT, path, &mut out),
        "tar-in" => tar_in(ROOT, path, &mut FramesIn::stdin()),
        other => return Err(format!("unknown transfer {other:?}")),
    };
    out.finish(outcome).map_err(|err| format!("writing stdout: {err}"))?;
    Ok(0)
}

/// Our stdout as `Data` frames, then the outcome.
struct FramesOut {
    buffer: Vec<u8>,
    stdout: io::Stdout,
}

impl FramesOut {
    fn new() -> Self {
        FramesOut {
            buffer: Vec::with_capacity(MAX_TUNNEL_CHUNK),
            stdout: io::stdout(),
        }
    }

    fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.stdout.lock().write_all(&crate::serve::encoded(frame))
    }

    fn finish(mut self, outcome: Result<(), Failure>) -> io::Result<()> {
        let outcome = self.flush().map_err(|err| failure("stdout", err)).and(outcome);
        let frame = match outcome {
            Ok(()) => Frame::FileDone {
                id: ID,
                reply: FileReply::Done,
            },
            Err((code, message)) => Frame::Error { id: ID, code, message },
        };
        self.send(&frame)?;
        self.stdout.lock().flush()
    }
}

impl Write for FramesOut {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(MAX_TUNNEL_CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == MAX_TUNNEL_CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let data = std::mem::take(&mut self.buffer);
            self.send(&Frame::Data { id: ID, data })?;
            self.buffer.reserve(MAX_TUNNEL_CHUNK);
        }
        Ok(())
    }
}

/// `Data` frames from a reader, read as one byte stream that ends at `Shut`.
struct FramesIn<R> {
    input: R,
    decoder: FrameDecoder,
    pending: Vec<u8>,
    at: usize,
    shut: bool,
    /// Bytes of `Data` received so far.
    received: u64,
}

impl FramesIn<io::Stdin> {
    fn stdin() -> Self {
        Self::new(io::stdin())
    }
}

impl<R: Read> FramesIn<R> {
    fn new(input: R) -> Self {
        FramesIn {
            input,
            decoder: FrameDecoder::new(),
            pending: Vec::new(),
            at: 0,
            shut: false,
            received: 0,
        }
    }

    /// Reads on to `Shut`, so an upload that ended early is told apart.
    fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }
}

impl<R: Read> Read for FramesIn<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = out.len().min(self.pending.len() - self.at);
                out[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.shut {
                return Ok(0);
            }
            match self.decoder.next_frame() {
                Some(Ok(Frame::Data { id: ID, data })) => {
                    self.received += data.len() as u64;
                    self.pending = data;
                    self.at = 0;
                }
                Some(Ok(Frame::Shut { id: ID })) => self.shut = true,
                Some(Ok(other)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected frame kind for request {}", other.id()),
                    ))
                }
                Some(Err(err)) => return Err(io::Error::new(io::ErrorKind::InvalidData, err.to_string())),
                None => {
                    let mut chunk = [0u8; 64 * 1024];
                    match self.input.read(&mut chunk)? {
                        0 => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the upload ended before its end marker",
                            ))
                        }
                        n => self.decoder.push(&chunk[..n]),
                    }
                }
            }
        }
    }
}

/// A name for a scratch entry: the prefix, our pid and the time.
fn scratch_name(prefix: &str) -> CString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    CString::new(format!("{prefix}{}-{nanos:x}", std::process::id())).expect("no NUL in a scratch name")
}

/// A path through our own directory fd (std has no `*at` calls): the fd's
/// link is ours, not the tenant's, and `name` is one component.
fn at(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn cstr_os(name: &CString) -> &OsStr {
    OsStr::from_bytes(name.as_bytes())
}

fn put(root: &str, path: &str, input: &mut impl Read) -> Result<(), Failure> {
    let mut parts = components(path, false)?;
    let name = parts.pop().expect("a non-empty path");
    let dir = walk(root, &parts, true).map_err(|err| failure(path, err))?;
    // What is there must be a regular file (or nothing): a symlink, a FIFO
    // or a directory is refused, as a one-frame write refuses it.
    match std::fs::symlink_metadata(at(&dir, cstr_os(&name))) {
        Ok(meta) if !meta.is_file() => {
            return Err((ErrorCode::FileRefused, format!("{path}: not a regular file")));
        }
        _ => {}
    }
    let part = scratch_name(PART_PREFIX);
    let mut file =
        open_regular(&dir, &part, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL).map_err(|err| failure(path, err))?;
    let written = io::copy(input, &mut file)
        .and_then(|_| file.flush())
        .and_then(|()| std::fs::rename(at(&dir, cstr_os(&part)), at(&dir, cstr_os(&name))));
    if let Err(err) = written {
        let _ = crate::sys::unlinkat(&dir, &part, 0);
        return Err(failure(path, err));
    }
    Ok(())
}

fn get(root: &str, path: &str, out: &mut impl Write) -> Result<(), Failure> {
    let mut parts = components(path, false)?;
    let name = parts.pop().expect("a non-empty path");
    let dir = walk(root, &parts, false).map_err(|err| failure(path, err))?;
    let mut file = open_regular(&dir, &name, libc::O_RDONLY).map_err(|err| failure(path, err))?;
    // A regular file opened non-blocking still reads normally.
    io::copy(&mut file, out).map(drop).map_err(|err| failure(path, err))
}

fn tar_out(root: &str, path: &str, out: &mut impl Write) -> Result<(), Failure> {
    let parts = components(path, true)?;
    let dir = walk(root, &parts, false).map_err(|err| failure(path, err))?;
    let mut builder = tar::Builder::new(out);
    append_dir(&mut builder, &dir, Path::new(""), 0).map_err(|err| failure(path, err))?;
    builder.into_inner().map(drop).map_err(|err| failure(path, err))
}

/// Appends what `dir` holds, under `prefix` in the archive.
fn append_dir<W: Write>(builder: &mut tar::Builder<W>, dir: &OwnedFd, prefix: &Path, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!("{}: nested too deep", prefix.display())));
    }
    let mut names: Vec<_> = std::fs::read_dir(at(dir, OsStr::new("")))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let text = name.to_string_lossy();
        if text.starts_with(PART_PREFIX) || text.starts_with(STAGING_PREFIX) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(at(dir, &name)) else {
            continue; // removed meanwhile
        };
        let inside = prefix.join(&name);
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777 & !0o6000);
        header.set_mtime(meta.mtime().max(0) as u64);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &inside, io::empty())?;
            let cname = CString::new(name.as_bytes()).map_err(io::Error::other)?;
            let child = crate::sys::openat(dir, &cname, DIR_FLAGS, 0)?;
            append_dir(builder, &child, &inside, depth + 1)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(at(dir, &name))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &inside, &target)?;
        } else if kind.is_file() {
            let cname = CString::new(name.as_bytes()).map_err(io::Error::other)?;
            let file = open_regular(dir, &cname, libc::O_RDONLY)?;
            // The size when opened: a file that changes meanwhile is cut or
            // padded to it, so the archive stays well-formed.
            let size = file.metadata()?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            let body = file.take(size).chain(io::repeat(0)).take(size);
            builder.append_data(&mut header, &inside, body)?;
        }
        // Sockets, FIFOs and devices have no place in a workspace archive.
    }
    Ok(())
}

fn tar_in(root: &str, path: &str, input: &mut FramesIn<impl Read>) -> Result<(), Failure> {
    let parts = components(path, true)?;
    let target = walk(root, &parts, true).map_err(|err| failure(path, err))?;
    let staging_name = scratch_name(STAGING_PREFIX);
    crate::sys::mkdirat(&target, &staging_name, 0o700).map_err(|err| failure(path, err))?;
    let staging = crate::sys::openat(&target, &staging_name, DIR_FLAGS, 0).map_err(|err| failure(path, err))?;
    let extracted = extract(&staging, &mut *input).and_then(|()| {
        input.drain().map_err(|err| failure("archive", err))?;
        if input.received == 0 {
            return Err((ErrorCode::InvalidRequest, "an empty body is not an archive".into()));
        }
        merge(&staging, &target, Path::new(path)).map_err(|err| failure(path, err))
    });
    let _ = std::fs::remove_dir_all(at(&target, cstr_os(&staging_name)));
    extracted
}

/// Why an archive entry is refused.
fn refused(entry: &Path, why: &str) -> Failure {
    (
        ErrorCode::InvalidRequest,
        format!("archive entry {:?}: {why}", entry.display().to_string()),
    )
}

/// The entry's path as components under the extraction root, or a refusal.
fn entry_parts(path: &Path) -> Result<Vec<CString>, Failure> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                parts.push(CString::new(name.as_bytes()).map_err(|_| refused(path, "contains NUL"))?)
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(refused(path, "a `..` component leads outside the target")),
            Component::RootDir | Component::Prefix(_) => return Err(refused(path, "an absolute path")),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(refused(path, "nested too deep"));
    }
    Ok(parts)
}

/// Whether a symlink at `parts` (its own name last) pointing to `target`
/// stays inside the extraction root: relative, with `..` only leading (they
/// climb real directories, the link's own ancestors) and no more of them than
/// the link lies deep. A `..` after a name could climb out of whatever that
/// name is (another symlink, say), so it is refused.
fn link_stays_inside(parts: &[CString], target: &Path) -> bool {
    let mut climbable = parts.len().saturating_sub(1);
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::ParentDir if !descended && climbable > 0 => climbable -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn extract(staging: &OwnedFd, input: &mut impl Read) -> Result<(), Failure> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|err| failure("archive", err))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| failure("archive", err))?;
        let path = entry.path().map_err(|err| failure("archive", err))?.into_owned();
        let mut parts = entry_parts(&path)?;
        let Some(name) = parts.pop() else {
            continue; // the root itself ("./")
        };
        let kind = entry.header().entry_type();
        let dir = crate::sys::openat(staging, c".", DIR_FLAGS, 0)
            .and_then(|base| walk_from(base, &parts, true))
            .map_err(|err| failure(&path.display().to_string(), err))?;
        let shown = path.display().to_string();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            tar::EntryType::Directory => {
                match crate::sys::mkdirat(&dir, &name, 0o700) {
                    Err(err) if err.raw_os_error() != Some(libc::EEXIST) => return Err(failure(&shown, err)),
                    _ => {}
                }
                let _ =
                    std::fs::set_permissions(at(&dir, cstr_os(&name)), std::fs::Permissions::from_mode(mode | 0o700));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = open_regular(&dir, &name, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
                    .map_err(|err| failure(&shown, err))?;
                io::copy(&mut entry, &mut file).map_err(|err| failure(&shown, err))?;
                let _ = file.set_permissions(std::fs::Permissions::from_mode(mode | 0o600));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|err| failure(&shown, err))?
                    .ok_or_else(|| refused(&path, "a symlink without a target"))?
                    .into_owned();
                let mut whole = parts.clone();
                whole.push(name.clone());
                if !link_stays_inside(&whole, &target) {
                    return Err(refused(&path, "a symlink that leads outside the target"));
                }
                std::os::unix::fs::symlink(&target, at(&dir, cstr_os(&name))).map_err(|err| failure(&shown, err))?;
            }
            tar::EntryType::Link => return Err(refused(&path, "hard links are not extracted")),
            tar::EntryType::Char | tar::EntryType::Block => return Err(refused(&path, "a device")),
            tar::EntryType::Fifo => return Err(refused(&path, "a FIFO")),
            // PAX and GNU long-name records are consumed by the reader.
            tar::EntryType::XGlobalHeader => {}
            _ => return Err(refused(&path, "an entry type other than file, directory or symlink")),
        }
    }
    Ok(())
}

/// Moves everything in `from` into `to`: a directory into an existing
/// directory merges, anything else replaces what is there (an existing
/// directory is never replaced by a file: refused, naming it).
fn merge(from: &OwnedFd, to: &OwnedFd, shown: &Path) -> io::Result<()> {
    let names: Vec<_> = std::fs::read_dir(at(from, OsStr::new("")))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    for name in names {
        let source = std::fs::symlink_metadata(at(from, &name))?;
        let existing = std::fs::symlink_metadata(at(to, &name)).ok();
        match existing {
            Some(existing) if existing.is_dir() && source.is_dir() => {
                let cname = CString::new(name.as_bytes()).map_err(io::Error::other)?;
                let inner_from = crate::sys::openat(from, &cname, DIR_FLAGS, 0)?;
                let inner_to = crate::sys::openat(to, &cname, DIR_FLAGS, 0)?;
                merge(&inner_from, &inner_to, &shown.join(&name))?;
            }
            Some(existing) if existing.is_dir() => {
                return Err(io::Error::other(format!(
                    "{} is a directory; the archive has a file there",
                    shown.join(&name).display()
                )));
            }
            _ => std::fs::rename(at(from, &name), at(to, &name))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(data: &[u8], shut: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in data.chunks(MAX_TUNNEL_CHUNK) {
            wire.extend(
                Frame::Data {
                    id: ID,
                    data: chunk.to_vec(),
                }
                .encode(),
            );
        }
        if shut {
            wire.extend(Frame::Shut { id: ID }.encode());
        }
        wire
    }

    fn scratch() -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!(
            "brig-transfer-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let shown = dir.to_str().unwrap().to_string();
        (dir, shown)
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            // Set raw, so that hostile names are written as they are.
            let name = header.as_old_mut();
            name.name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                name.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_put_is_kept_only_once_complete() {
        let (dir, root) = scratch();
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        put(&root, "a/b/file", &mut FramesIn::new(&frames(&data, true)[..])).unwrap();
        assert_eq!(std::fs::read(dir.join("a/b/file")).unwrap(), data);
        // Cut short: no end marker. The old file stays, no scratch is left.
        let err = put(&root, "a/b/file", &mut FramesIn::new(&frames(b"new", false)[..])).unwrap_err();
        assert!(err.1.contains("ended before"), "{err:?}");
        assert_eq!(std::fs::read(dir.join("a/b/file")).unwrap(), data);
        assert_eq!(std::fs::read_dir(dir.join("a/b")).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_tree_round_trips_with_symlinks_and_without_following_them() {
        let (dir, root) = scratch();
        std::fs::create_dir_all(dir.join("src/tree/deep")).unwrap();
        std::fs::write(dir.join("src/tree/deep/f"), b"deep").unwrap();
        std::fs::write(dir.join("src/top"), vec![7u8; 100_000]).unwrap();
        std::os::unix::fs::symlink("tree/deep/f", dir.join("src/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("src/out")).unwrap();
        let mut archive = Vec::new();
        tar_out(&root, "src", &mut archive).unwrap();
        // `out` points outside: it is archived as a link, and refused on the way in.
        let err = tar_in(&root, "dst", &mut FramesIn::new(&frames(&archive, true)[..])).unwrap_err();
        assert!(err.1.contains("\"out\"") && err.1.contains("outside"), "{err:?}");
        assert_eq!(std::fs::read_dir(dir.join("dst")).unwrap().count(), 0, "nothing kept");
        std::fs::remove_file(dir.join("src/out")).unwrap();
        let mut archive = Vec::new();
        tar_out(&root, "src", &mut archive).unwrap();
        std::fs::create_dir_all(dir.join("dst/tree")).unwrap();
        std::fs::write(dir.join("dst/tree/kept"), b"kept").unwrap();
        tar_in(&root, "dst", &mut FramesIn::new(&frames(&archive, true)[..])).unwrap();
        assert_eq!(std::fs::read(dir.join("dst/tree/deep/f")).unwrap(), b"deep");
        assert_eq!(std::fs::read(dir.join("dst/top")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(
            std::fs::read_link(dir.join("dst/link")).unwrap(),
            Path::new("tree/deep/f")
        );
        assert_eq!(
            std::fs::read(dir.join("dst/tree/kept")).unwrap(),
            b"kept",
            "merged, not replaced"
        );
        let names: Vec<_> = std::fs::read_dir(dir.join("dst"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no staging left: {names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hostile_archives_are_refused_naming_the_entry_and_write_nothing() {
        let (dir, root) = scratch();
        for (entries, expected) in [
            (
                vec![
                    ("ok", tar::EntryType::Regular, &b"x"[..], ""),
                    ("../escape", tar::EntryType::Regular, b"x", ""),
                ],
                "`..`",
            ),
            (vec![("/etc/x", tar::EntryType::Regular, &b"x"[..], "")], "absolute"),
            (vec![("a/l", tar::EntryType::Symlink, &b""[..], "../../x")], "outside"),
            (vec![("l", tar::EntryType::Symlink, &b""[..], "/etc")], "outside"),
            (vec![("h", tar::EntryType::Link, &b""[..], "ok")], "hard links"),
            (vec![("d", tar::EntryType::Char, &b""[..], "")], "device"),
            (vec![("p", tar::EntryType::Fifo, &b""[..], "")], "FIFO"),
        ] {
            let archive = tar_of(&entries);
            let err = tar_in(&root, "t", &mut FramesIn::new(&frames(&archive, true)[..])).unwrap_err();
            assert!(err.1.contains(expected), "{entries:?}: {err:?}");
            assert_eq!(
                std::fs::read_dir(dir.join("t")).unwrap().count(),
                0,
                "{entries:?} left something"
            );
        }
        assert!(!dir.parent().unwrap().join("escape").exists());
        // A symlink inside is fine, and so is a truncated archive refused whole.
        let inside = tar_of(&[("a/l", tar::EntryType::Symlink, b"", "../b")]);
        tar_in(&root, "t", &mut FramesIn::new(&frames(&inside, true)[..])).unwrap();
        let cut = tar_of(&[("big", tar::EntryType::Regular, &[1u8; 4096], "")]);
        let err = tar_in(&root, "u", &mut FramesIn::new(&frames(&cut[..1024], true)[..])).unwrap_err();
        assert_eq!(std::fs::read_dir(dir.join("u")).unwrap().count(), 0, "{err:?}");
        let err = tar_in(&root, "u", &mut FramesIn::new(&frames(b"", true)[..])).unwrap_err();
        assert!(err.1.contains("empty"), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn links_are_judged_from_where_they_lie() {
        let parts = |n: usize| vec![CString::new("x").unwrap(); n];
        assert!(link_stays_inside(&parts(1), Path::new("a/b")));
        assert!(link_stays_inside(&parts(2), Path::new("../a")));
        assert!(!link_stays_inside(&parts(1), Path::new("../a")));
        assert!(!link_stays_inside(&parts(2), Path::new("a/../../../b")));
        assert!(
            !link_stays_inside(&parts(3), Path::new("x/..")),
            "x may be a link to anywhere inside"
        );
        assert!(!link_stays_inside(&parts(1), Path::new("/a")));
    }
}
