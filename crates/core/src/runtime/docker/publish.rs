//! Publishing the embedded agent into its named volume (README: "How a command
//! runs"): create the volume, create a never-started helper container that
//! mounts it writable, upload the binary with the archive API unless it is
//! already there byte for byte, remove the helper. Needs no host path, so it
//! works against any engine reachable over the API.
//!
//! Each build publishes into its own volume, so old builds' volumes pile up:
//! [`remove_stale_volumes`] removes those no container mounts. A process of
//! an old build that is still running notices its volume gone
//! ([`volume_lost`]) and publishes it again.

use std::collections::HashMap;
use std::io::Read;

use std::time::{Duration, SystemTime};

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptions, UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures_util::TryStreamExt;

use super::{engine_error, is_status, spec};
use crate::agent_binary::{AgentBinary, AGENT_MOUNT, AGENT_PATH};
use crate::runtime::RuntimeError;
use crate::sandbox::labels;

/// The label that marks agent volumes (with [`labels::MANAGED`]).
const ROLE: &str = "brig.role";
const AGENT_ROLE: &str = "agent";

/// Makes sure volume `volume` holds the embedded agent.
pub async fn publish_agent(
    docker: &Docker,
    agent: AgentBinary,
    image: &str,
    volume: &str,
    instance: &str,
) -> Result<(), RuntimeError> {
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(volume.into()),
            labels: Some(HashMap::from([
                (labels::MANAGED.into(), "true".into()),
                (ROLE.into(), AGENT_ROLE.into()),
            ])),
            ..Default::default()
        })
        .await
        .map_err(engine_error)?;

    let helper = docker
        .create_container(
            None::<CreateContainerOptions>,
            spec::publisher_container(image, volume, instance),
        )
        .await
        .map_err(|err| {
            if is_status(&err, 404) {
                RuntimeError::ImageMissing(image.into())
            } else {
                engine_error(err)
            }
        })?
        .id;
    let outcome = upload_unless_present(docker, agent, &helper).await;
    let removed = docker
        .remove_container(
            &helper,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    outcome?;
    removed.or_else(|err| {
        if is_status(&err, 404) {
            Ok(())
        } else {
            Err(engine_error(err))
        }
    })
}

async fn upload_unless_present(docker: &Docker, agent: AgentBinary, helper: &str) -> Result<(), RuntimeError> {
    let agent = agent.bytes();
    if published_copy(docker, helper, agent.len()).await?.as_deref() == Some(agent) {
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_size(agent.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let mut archive = tar::Builder::new(Vec::with_capacity(agent.len() + 2048));
    archive
        .append_data(&mut header, "brig-agent", agent)
        .and_then(|()| archive.finish())
        .map_err(|err| RuntimeError::Engine(format!("building the agent archive: {err}").into()))?;
    let tarball = archive
        .into_inner()
        .map_err(|err| RuntimeError::Engine(format!("building the agent archive: {err}").into()))?;
    let options = UploadToContainerOptionsBuilder::default().path(AGENT_MOUNT).build();
    docker
        .upload_to_container(helper, Some(options), body_full(tarball.into()))
        .await
        .map_err(engine_error)
}

/// The agent binary currently in the volume, if any (read up to about twice
/// the size of ours, `expected_len`).
async fn published_copy(docker: &Docker, helper: &str, expected_len: usize) -> Result<Option<Vec<u8>>, RuntimeError> {
    let options = DownloadFromContainerOptionsBuilder::default().path(AGENT_PATH).build();
    let limit = expected_len * 2 + 64 * 1024;
    let mut stream = docker.download_from_container(helper, Some(options));
    let mut tarball = Vec::new();
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                tarball.extend_from_slice(&chunk);
                if tarball.len() > limit {
                    return Ok(None);
                }
            }
            Ok(None) => break,
            Err(err) if is_status(&err, 404) => return Ok(None),
            Err(err) => return Err(engine_error(err)),
        }
    }
    let mut archive = tar::Archive::new(tarball.as_slice());
    let Ok(mut entries) = archive.entries() else {
        return Ok(None);
    };
    let Some(Ok(mut entry)) = entries.next() else {
        return Ok(None);
    };
    let mut contents = Vec::new();
    Ok(entry.read_to_end(&mut contents).ok().map(|_| contents))
}

/// Whether agent volume `volume` is gone, or is an empty one the engine made
/// in its place for a container that mounted the missing volume (no labels).
/// Engine errors count as "not lost": the caller's own error stands.
pub async fn volume_lost(docker: &Docker, volume: &str) -> bool {
    match docker.inspect_volume(volume).await {
        Ok(found) => found.labels.get(ROLE).map(String::as_str) != Some(AGENT_ROLE),
        Err(err) => is_status(&err, 404),
    }
}

/// Removes the engine's empty stand-in for lost agent volume `volume`, so
/// that [`publish_agent`] creates it again with its labels; a stand-in still
/// mounted somewhere stays and is published into.
pub async fn discard_stand_in(docker: &Docker, volume: &str) -> Result<(), RuntimeError> {
    remove_unless_mounted(docker, volume).await.map(drop)
}

/// Removes volume `name` unless a container mounts it (the engine refuses:
/// 409) or it is already gone (404); whether this call removed it.
async fn remove_unless_mounted(docker: &Docker, name: &str) -> Result<bool, RuntimeError> {
    match docker.remove_volume(name, None::<RemoveVolumeOptions>).await {
        Ok(()) => Ok(true),
        Err(err) if is_status(&err, 404) || is_status(&err, 409) => Ok(false),
        Err(err) => Err(engine_error(err)),
    }
}

/// Removes the agent volumes (`brig-agent-*`, labelled by [`publish_agent`])
/// that no container mounts, other than `own`, created more than
/// `older_than` ago, and (if given) named in `among`; returns their names. A
/// volume that a container mounts meanwhile is refused by the engine (409)
/// and stays.
pub async fn remove_stale_volumes(
    docker: &Docker,
    own: &str,
    older_than: Duration,
    among: Option<&[String]>,
) -> Result<Vec<String>, RuntimeError> {
    let managed = format!("{}=true", labels::MANAGED);
    let role = format!("{ROLE}={AGENT_ROLE}");
    let filters = HashMap::from([
        ("label", vec![managed.as_str(), role.as_str()]),
        ("dangling", vec!["true"]),
    ]);
    let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
    let listed = docker.list_volumes(Some(options)).await.map_err(engine_error)?;
    let cutoff = SystemTime::now() - older_than;
    let mut removed = Vec::new();
    for volume in listed.volumes.unwrap_or_default() {
        let created = volume
            .created_at
            .as_deref()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map(SystemTime::from);
        // An unreadable date is treated as new: left alone.
        let old_enough = created.is_some_and(|created| created <= cutoff);
        let in_scope = among.is_none_or(|names| names.contains(&volume.name));
        if volume.name == own || !volume.name.starts_with("brig-agent-") || !old_enough || !in_scope {
            continue;
        }
        if remove_unless_mounted(docker, &volume.name).await? {
            removed.push(volume.name);
        }
    }
    Ok(removed)
}
