//! Objects in an S3-compatible bucket (`SNAPSHOT_STORE=s3`): what several
//! hosts share. A small object is one PUT; a larger one a multipart upload
//! (8 MiB parts, two in flight: the sandbox's stream waits for the bucket),
//! completed only once its body ended well, aborted otherwise. S3 makes an
//! object visible only once its PUT or upload completes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use secrecy::ExposeSecret;

use super::objects::{Body, Objects, Reading};
use super::SnapshotError;
use crate::config::S3Config;

/// Part size of a multipart upload (S3 wants at least 5 MiB but the last).
const PART: usize = 8 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Bounds on every call to the bucket, so that an unreachable one answers
/// (503 naming it) in seconds rather than the client's default minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request: a part of 8 MiB, or a whole download (a restore reads as
/// fast as the sandbox extracts it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
const RETRIES: usize = 2;
const RETRY_FOR: Duration = Duration::from_secs(15);

pub struct S3Bucket {
    bucket: AmazonS3,
    name: String,
}

/// A bucket that could not be set up: every call says why.
struct Unusable(String);

impl S3Bucket {
    pub fn connect(config: &S3Config) -> Arc<dyn Objects> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_timeout(REQUEST_TIMEOUT),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: RETRIES,
                retry_timeout: RETRY_FOR,
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose_secret());
        }
        match builder.build() {
            Ok(bucket) => Arc::new(S3Bucket {
                bucket,
                name: config.bucket.clone(),
            }),
            Err(err) => Arc::new(Unusable(format!(
                "S3_BUCKET {} (S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY_ID): {err}",
                config.bucket
            ))),
        }
    }

    fn storage(&self, key: &str, err: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Storage(format!("{key} in S3_BUCKET {}: {err}", self.name))
    }
}

#[async_trait]
impl Objects for S3Bucket {
    async fn put(&self, key: &str, mut body: Body) -> Result<(), SnapshotError> {
        let path = Path::from(key);
        // Up to a part: one PUT.
        let mut first = BytesMut::new();
        let mut rest = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if first.len() + chunk.len() > PART {
                rest = Some(chunk);
                break;
            }
            first.extend_from_slice(&chunk);
        }
        let Some(next) = rest else {
            let payload = PutPayload::from(first.freeze());
            return self
                .bucket
                .put(&path, payload)
                .await
                .map(drop)
                .map_err(|err| self.storage(key, err));
        };
        let upload = self
            .bucket
            .put_multipart(&path)
            .await
            .map_err(|err| self.storage(key, err))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let sent = async {
            let mut pending: Option<Bytes> = Some(first.freeze());
            let mut next = Some(next);
            loop {
                if let Some(bytes) = pending.take() {
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|err| self.storage(key, err))?;
                    writer.write(&bytes);
                }
                pending = match next.take() {
                    Some(chunk) => Some(chunk),
                    None => match body.next().await {
                        Some(chunk) => Some(chunk?),
                        None => return Ok::<_, SnapshotError>(()),
                    },
                };
            }
        }
        .await;
        match sent {
            Ok(()) => writer.finish().await.map(drop).map_err(|err| self.storage(key, err)),
            Err(err) => {
                // Nothing of it becomes an object.
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Reading>, SnapshotError> {
        match self.bucket.get(&Path::from(key)).await {
            Ok(found) => Ok(Some(
                found
                    .into_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other))
                    .boxed(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(self.storage(key, err)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, SnapshotError> {
        let prefix = (!dir.is_empty()).then(|| Path::from(dir.trim_end_matches('/')));
        let listed = self
            .bucket
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|err| self.storage(dir, err))?;
        let objects = listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(String::from));
        let levels = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(String::from));
        Ok(objects.chain(levels).collect())
    }

    async fn delete(&self, key: &str) -> Result<(), SnapshotError> {
        match self.bucket.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.storage(key, err)),
        }
    }

    fn describe(&self) -> String {
        format!("S3_BUCKET {}", self.name)
    }
}

#[async_trait]
impl Objects for Unusable {
    async fn put(&self, _: &str, _: Body) -> Result<(), SnapshotError> {
        Err(SnapshotError::Storage(self.0.clone()))
    }

    async fn get(&self, _: &str) -> Result<Option<Reading>, SnapshotError> {
        Err(SnapshotError::Storage(self.0.clone()))
    }

    async fn list(&self, _: &str) -> Result<Vec<String>, SnapshotError> {
        Err(SnapshotError::Storage(self.0.clone()))
    }

    async fn delete(&self, _: &str) -> Result<(), SnapshotError> {
        Err(SnapshotError::Storage(self.0.clone()))
    }

    fn describe(&self) -> String {
        self.0.clone()
    }
}
