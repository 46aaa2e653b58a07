//! Publishing the embedded agent into its named volume (README: "How a command
//! runs"): create the volume, create a never-started helper container that
//! mounts it writable, upload the binary with the archive API unless it is
//! already there byte for byte, remove the helper. Needs no host path, so it
//! works against any engine reachable over the API.

use std::collections::HashMap;
use std::io::Read;

use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures_util::TryStreamExt;

use super::{engine_error, is_status, spec};
use crate::agent_binary::{AgentBinary, AGENT_MOUNT, AGENT_PATH};
use crate::runtime::RuntimeError;
use crate::sandbox::labels;

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
                ("brig.role".into(), "agent".into()),
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
