//! `brig cp SRC DST`: files and directories between this machine and a
//! session's `/workspace`, either way, streamed (neither side is held in
//! memory). The remote side is `SESSION:PATH` (PATH relative to
//! `/workspace`; `SESSION:` alone is `/workspace` itself); `-` is stdin or
//! stdout for a file.
//!
//! - a local file → the remote file PATH (parents created);
//! - a local directory → its contents into the remote directory PATH, as one
//!   archive (refused whole if any entry is);
//! - a remote file → the local file (written beside it, then renamed);
//! - a remote directory → its contents into the local directory (created),
//!   through an unpacker that keeps every entry inside it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::client::{self, Client, Failure};

/// Bytes per chunk between the local file system and the connection.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the file system thread and the connection.
const IN_FLIGHT: usize = 8;

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Remote { session: String, path: String },
}

/// `SESSION:PATH` is remote (a session id has no `/`); anything else is a
/// local path (`./a:b` for a local name with a colon).
fn side(text: &str) -> Side {
    match text.split_once(':') {
        Some((session, path)) if !session.is_empty() && !session.contains('/') => Side::Remote {
            session: session.to_string(),
            path: path.trim_matches('/').to_string(),
        },
        _ => Side::Local(PathBuf::from(text)),
    }
}

pub async fn copy(client: &Client, source: &str, destination: &str) -> Result<(), Failure> {
    match (side(source), side(destination)) {
        (Side::Local(local), Side::Remote { session, path }) => upload(client, &local, &session, &path).await,
        (Side::Remote { session, path }, Side::Local(local)) => download(client, &session, &path, &local).await,
        _ => Err(Failure::Local(
            "one side of `brig cp` is SESSION:PATH and the other a local path".into(),
        )),
    }
}

fn files_url(session: &str, path: &str) -> String {
    format!(
        "/sessions/{}/files/{}",
        client::path_segment(session),
        client::file_path(path)
    )
}

fn archive_url(session: &str, path: &str) -> String {
    format!(
        "/sessions/{}/archive?path={}",
        client::path_segment(session),
        client::query_value(path)
    )
}

async fn upload(client: &Client, local: &Path, session: &str, path: &str) -> Result<(), Failure> {
    let shown = local.display().to_string();
    if local == Path::new("-") {
        if path.is_empty() {
            return Err(Failure::Local("stdin goes to a file: name it (SESSION:PATH)".into()));
        }
        let body = produced(move |out| io::copy(&mut io::stdin().lock(), out).map(drop));
        return client.put_stream(&files_url(session, path), body).await;
    }
    let meta = std::fs::metadata(local).map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
    if meta.is_dir() {
        let dir = local.to_path_buf();
        let body = produced(move |out| {
            let mut archive = tar::Builder::new(out);
            archive.follow_symlinks(false);
            archive.append_dir_all(".", &dir)?;
            archive.into_inner()?.flush()
        });
        client.put_stream(&archive_url(session, path), body).await
    } else {
        if path.is_empty() {
            return Err(Failure::Local(format!(
                "{shown} is a file: name where it goes (SESSION:PATH)"
            )));
        }
        let file = std::fs::File::open(local).map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
        let body = produced(move |out| io::copy(&mut io::BufReader::new(file), out).map(drop));
        client.put_stream(&files_url(session, path), body).await
    }
}

async fn download(client: &Client, session: &str, path: &str, local: &Path) -> Result<(), Failure> {
    let shown = local.display().to_string();
    let as_file = if path.is_empty() {
        None
    } else {
        match client.get_stream(&files_url(session, path)).await {
            Ok(response) => Some(response),
            // Not a regular file: a directory, fetched as an archive.
            Err(Failure::Api { error, .. }) if error == "file_refused" => None,
            Err(err) => return Err(err),
        }
    };
    match as_file {
        Some(mut response) if local == Path::new("-") => {
            let mut out = io::stdout().lock();
            while let Some(chunk) = response.chunk().await.map_err(|err| client.transport(&err))? {
                out.write_all(&chunk)
                    .map_err(|err| Failure::Local(format!("stdout: {err}")))?;
            }
            out.flush().map_err(|err| Failure::Local(format!("stdout: {err}")))
        }
        Some(mut response) => {
            // Beside the destination, renamed over it once complete.
            let partial = partial_name(local);
            let written = async {
                let mut file =
                    std::fs::File::create(&partial).map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
                while let Some(chunk) = response.chunk().await.map_err(|err| client.transport(&err))? {
                    file.write_all(&chunk)
                        .map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
                }
                file.sync_all()
                    .map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
                std::fs::rename(&partial, local).map_err(|err| Failure::Local(format!("{shown}: {err}")))
            }
            .await;
            if written.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            written
        }
        None => {
            if local == Path::new("-") {
                return Err(Failure::Local(format!(
                    "{session}:{path} is a directory: copy it to a local directory"
                )));
            }
            let mut response = client.get_stream(&archive_url(session, path)).await?;
            std::fs::create_dir_all(local).map_err(|err| Failure::Local(format!("{shown}: {err}")))?;
            let (chunks, reader) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
            let into = local.to_path_buf();
            let unpacker = std::thread::spawn(move || {
                let mut archive = tar::Archive::new(ChunkReader {
                    chunks: reader,
                    current: Vec::new(),
                    at: 0,
                });
                archive.set_overwrite(true);
                archive.set_preserve_permissions(false);
                archive.unpack(&into)
            });
            let mut streamed = Ok(());
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if chunks.send(chunk.to_vec()).is_err() {
                            break; // the unpacker stopped: its error says why
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        streamed = Err(client.transport(&err));
                        break;
                    }
                }
            }
            drop(chunks);
            let unpacked = unpacker
                .join()
                .map_err(|_| Failure::Local("the unpacker panicked".into()))?;
            streamed?;
            unpacked.map_err(|err| Failure::Local(format!("{shown}: {err}")))
        }
    }
}

fn partial_name(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    local.with_file_name(format!(".{name}.brig-partial-{}", std::process::id()))
}

/// A request body produced by `produce` on a thread of its own (file system
/// reads block), handed over in chunks with at most [`IN_FLIGHT`] waiting.
/// A failure of `produce` fails the body, so the API keeps nothing of it.
fn produced(produce: impl FnOnce(&mut ChunkWriter) -> io::Result<()> + Send + 'static) -> reqwest::Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    std::thread::spawn(move || {
        let mut writer = ChunkWriter {
            sender,
            buffer: Vec::with_capacity(CHUNK),
        };
        let outcome = produce(&mut writer).and_then(|()| writer.send());
        if let Err(err) = outcome {
            let _ = writer.sender.blocking_send(Err(err));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    reqwest::Body::wrap_stream(stream)
}

struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The chunks of a download, read as one stream.
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_remote_only_with_a_session_before_the_colon() {
        let remote = |session: &str, path: &str| Side::Remote {
            session: session.into(),
            path: path.into(),
        };
        assert_eq!(side("s1:src/main.py"), remote("s1", "src/main.py"));
        assert_eq!(side("s1:"), remote("s1", ""));
        assert_eq!(side("s1:/dir/"), remote("s1", "dir"));
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side(":x"), Side::Local(":x".into()));
        assert_eq!(side("notes.txt"), Side::Local("notes.txt".into()));
        assert_eq!(side("-"), Side::Local("-".into()));
    }
}
