//! Where gengate keeps the results its users paid for: an object store (a directory on disk by
//! default, or any S3-compatible store), the keys files are kept under, and the signed, expiring
//! links clients download them by.
//!
//! - Keys are derived from the generation and the file (`generations/{id}/video-720p.mp4`,
//!   `…/video-720p.poster.jpg`, `…/image-0.png`): archiving a file twice writes the same object.
//! - Links expire after `storage.link_ttl_secs`. On S3 they are presigned URLs to the store itself;
//!   on the filesystem they point at the API's `/files/{key}` route with an expiry and an
//!   HMAC-SHA256 signature (`?expires=…&sig=…`) under a key derived from `webhook.secret`, which
//!   the API checks in constant time before it serves a byte.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, WriteMultipart,
};
use secrecy::ExposeSecret;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::AsyncReadExt;

use crate::config::{Settings, StorageBackend};
use crate::ids::GenerationId;

/// Why the store could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The settings do not describe a usable store.
    #[error("storage: {0}")]
    Config(String),
    /// The store refused or failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Reading a local file to upload failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a file link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    /// The signature is not ours (the link was altered, or made up).
    #[error("the link's signature does not match")]
    Invalid,
    /// The link was genuine but its time is up.
    #[error("the link has expired")]
    Expired,
}

/// The object store and how links to it are made.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The same store as S3, when it is one: it presigns links.
    s3: Option<Arc<AmazonS3>>,
    link_key: [u8; 32],
    link_ttl: Duration,
    /// `{api.public_base_url}/files/`: where filesystem links point.
    files_base: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.store.to_string())
            .field("link_ttl", &self.link_ttl)
            .finish_non_exhaustive()
    }
}

/// Parts of an upload: S3's smallest, one in flight while the next fills, so a copy holds about
/// 10 MiB however large the file.
const PART_BYTES: usize = 5 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 1;

impl Storage {
    /// The store `[storage]` describes. The filesystem store's directory is created if missing.
    pub fn from_settings(settings: &Settings) -> Result<Self, StorageError> {
        let config = &settings.storage;
        let webhook_secret = settings.webhook.secret.as_ref().ok_or_else(|| {
            StorageError::Config(
                "webhook.secret is required (file links are signed with it)".into(),
            )
        })?;
        let (store, s3): (Arc<dyn ObjectStore>, Option<Arc<AmazonS3>>) = match config.backend {
            StorageBackend::Filesystem => {
                std::fs::create_dir_all(&config.path).map_err(|source| StorageError::Io {
                    path: config.path.display().to_string(),
                    source,
                })?;
                (Arc::new(LocalFileSystem::new_with_prefix(&config.path)?), None)
            }
            StorageBackend::S3 => {
                let bucket = config.bucket.as_deref().ok_or_else(|| {
                    StorageError::Config("storage.bucket is required for s3".into())
                })?;
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(&config.region)
                    .with_allow_http(config.allow_http);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(key) = &config.access_key_id {
                    builder = builder.with_access_key_id(key.expose_secret());
                }
                if let Some(secret) = &config.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                let s3 = Arc::new(builder.build()?);
                (s3.clone(), Some(s3))
            }
        };
        Ok(Self {
            store,
            s3,
            link_key: derive_link_key(webhook_secret.expose_secret()),
            link_ttl: Duration::from_secs(config.link_ttl_secs),
            files_base: format!("{}/files/", settings.api.public_base_url.trim_end_matches('/')),
        })
    }

    /// The object store itself.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A link to `key` that works for `storage.link_ttl_secs` from `now_unix`.
    pub async fn link(&self, key: &str, now_unix: i64) -> Result<String, StorageError> {
        if let Some(s3) = &self.s3 {
            let url = s3.signed_url(http::Method::GET, &Path::from(key), self.link_ttl).await?;
            return Ok(url.into());
        }
        let expires = now_unix + i64::try_from(self.link_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let signature = hex::encode(self.link_mac(key, expires));
        Ok(format!("{}{key}?expires={expires}&sig={signature}", self.files_base))
    }

    /// Checks a filesystem link's expiry and signature (constant time).
    pub fn verify_link(
        &self,
        key: &str,
        expires: i64,
        signature: &str,
        now_unix: i64,
    ) -> Result<(), LinkRefusal> {
        let given = hex::decode(signature).map_err(|_| LinkRefusal::Invalid)?;
        if !bool::from(self.link_mac(key, expires).as_slice().ct_eq(&given)) {
            return Err(LinkRefusal::Invalid);
        }
        if now_unix >= expires {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }

    fn link_mac(&self, key: &str, expires: i64) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.link_key).expect("any key length");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Streams a local file into the store under `key`, a part at a time (never the whole file
    /// in memory). Returns the bytes written.
    pub async fn put_file(
        &self,
        key: &str,
        file: &FsPath,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let io = |source| StorageError::Io { path: file.display().to_string(), source };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        // The filesystem store keeps no metadata; S3 serves the type with the object.
        let mut attributes = Attributes::new();
        if self.s3.is_some() {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        }
        let options = PutMultipartOptions { attributes, ..Default::default() };
        let upload = self.store.put_multipart_opts(&Path::from(key), options).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buffer = vec![0u8; 1024 * 1024];
        let mut written = 0u64;
        loop {
            let read = match reader.read(&mut buffer).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) => {
                    let _ = writer.abort().await;
                    return Err(io(err));
                }
            };
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            writer.write(&buffer[..read]);
            written += read as u64;
        }
        writer.finish().await?;
        Ok(written)
    }

    /// Deletes objects (missing ones are no error).
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// The key file links are signed with: derived from the webhook secret, so there is no other
/// secret to configure, and rotating that secret invalidates outstanding links too.
fn derive_link_key(webhook_secret: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(webhook_secret.as_bytes()).expect("any length");
    mac.update(b"gengate file links v1");
    mac.finalize().into_bytes().into()
}

/// A label made safe for a key: letters, digits, `.`, `_` and `-`.
fn key_part(label: &str) -> String {
    let safe: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    if safe.is_empty() || safe.starts_with('.') { format!("_{safe}") } else { safe }
}

/// Where a generation's video of `quality` is kept.
pub fn video_key(generation: GenerationId, quality: &str, extension: &str) -> String {
    format!("generations/{generation}/video-{}.{}", key_part(quality), key_part(extension))
}

/// Where that video's poster (first frame, JPEG) is kept.
pub fn poster_key(generation: GenerationId, quality: &str) -> String {
    format!("generations/{generation}/video-{}.poster.jpg", key_part(quality))
}

/// Where a generation's image at `position` is kept.
pub fn image_key(generation: GenerationId, position: i16, extension: &str) -> String {
    format!("generations/{generation}/image-{position}.{}", key_part(extension))
}

/// Whether `key` is one gengate makes (the `/files/` route serves nothing else).
pub fn is_our_key(key: &str) -> bool {
    let mut parts = key.split('/');
    matches!(
        (parts.next(), parts.next().map(str::parse::<uuid::Uuid>), parts.next(), parts.next()),
        (Some("generations"), Some(Ok(_)), Some(name), None)
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                && !name.starts_with('.')
    )
}

/// The content type of a stored file, by its extension.
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next().unwrap_or_default() {
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(dir: &FsPath) -> Storage {
        let mut settings = Settings::load_from(None, Some(Default::default())).unwrap();
        settings.storage.path = dir.to_path_buf();
        settings.webhook.secret = Some("webhook-secret".to_owned().into());
        settings.api.public_base_url = "https://api.example.com/".into();
        Storage::from_settings(&settings).unwrap()
    }

    #[tokio::test]
    async fn filesystem_links_expire_and_refuse_any_change() {
        let dir = std::env::temp_dir().join(format!("gengate-storage-{}", uuid::Uuid::now_v7()));
        let storage = storage(&dir);
        let key = video_key(GenerationId::new(), "720p", "mp4");
        let link = storage.link(&key, 1_000).await.unwrap();
        let url = url::Url::parse(&link).unwrap();
        assert_eq!(url.path(), format!("/files/{key}"));
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let expires: i64 = query["expires"].parse().unwrap();
        assert_eq!(expires, 1_000 + 3600);
        let sig = &query["sig"];
        assert_eq!(storage.verify_link(&key, expires, sig, 1_001), Ok(()));
        assert_eq!(storage.verify_link(&key, expires, sig, expires), Err(LinkRefusal::Expired));
        assert_eq!(
            storage.verify_link(&key, expires + 3600, sig, 1_001),
            Err(LinkRefusal::Invalid),
            "a longer life is not ours to give"
        );
        let other = key.replace("720p", "1080p");
        assert_eq!(storage.verify_link(&other, expires, sig, 1_001), Err(LinkRefusal::Invalid));
        assert_eq!(storage.verify_link(&key, expires, "00", 1_001), Err(LinkRefusal::Invalid));
        assert_eq!(storage.verify_link(&key, expires, "zz", 1_001), Err(LinkRefusal::Invalid));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn keys_are_derived_and_safe() {
        let id: GenerationId = "0190f5a0-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(
            video_key(id, "original-2", "mp4"),
            "generations/0190f5a0-0000-7000-8000-000000000001/video-original-2.mp4"
        );
        assert_eq!(
            poster_key(id, "720p"),
            "generations/0190f5a0-0000-7000-8000-000000000001/video-720p.poster.jpg"
        );
        assert_eq!(video_key(id, "../x", "mp4").matches('/').count(), 2);
        assert!(is_our_key(&image_key(id, 3, "png")));
        for bad in [
            "../etc/passwd",
            "generations/x/a.mp4",
            "generations/0190f5a0-0000-7000-8000-000000000001/../a",
            "generations/0190f5a0-0000-7000-8000-000000000001/.hidden",
            "",
        ] {
            assert!(!is_our_key(bad), "{bad}");
        }
        assert_eq!(content_type("a/b.poster.jpg"), "image/jpeg");
        assert_eq!(content_type("a/b.mp4"), "video/mp4");
    }
}
