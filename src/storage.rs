//! Opening the object store that holds history, from `[storage]`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use strata_catalog::{Catalog, CatalogConfig};

use crate::config::StorageConfig;

/// Where `storage.url` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StorageLocation {
    /// A local directory (created if missing).
    Local(PathBuf),
    /// An S3 bucket and a prefix inside it.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Prefix inside the bucket (may be empty).
        prefix: String,
    },
    /// Process memory; nothing survives the process.
    Memory,
}

impl StorageLocation {
    /// Parses `storage.url`. The error says what is accepted.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        const ACCEPTED: &str = "use a directory, file:///dir, s3://bucket/prefix or memory://";
        if url.trim().is_empty() {
            return Err(format!("empty; {ACCEPTED}"));
        }
        if url == "memory://" {
            return Ok(Self::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("`{url}` names no bucket; {ACCEPTED}"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(format!(
                    "`{url}`: file:// needs an absolute path; {ACCEPTED}"
                ));
            }
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        if url.contains("://") {
            return Err(format!("`{url}`: unsupported scheme; {ACCEPTED}"));
        }
        Ok(Self::Local(PathBuf::from(url)))
    }
}

/// An opened store and the root path of strata's tree inside it.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    /// The store.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// strata's root inside the store.
    pub(crate) root: Path,
    /// What was opened, for messages (`s3://bucket/prefix`, `/abs/dir`).
    pub(crate) display: String,
}

impl Storage {
    /// Opens the catalog at the root of this store.
    pub(crate) async fn catalog(&self) -> anyhow::Result<Catalog> {
        Catalog::open(
            Arc::clone(&self.store),
            self.root.clone(),
            CatalogConfig::default(),
        )
        .await
        .with_context(|| format!("cannot open the catalog in {}", self.display))
    }

    /// Opens `[storage]`. Local directories are created.
    pub(crate) fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        let location =
            StorageLocation::parse(&config.url).map_err(|m| anyhow::anyhow!("storage.url: {m}"))?;
        match location {
            StorageLocation::Memory => Ok(Self {
                store: Arc::new(InMemory::new()),
                root: Path::default(),
                display: "memory://".into(),
            }),
            StorageLocation::Local(dir) => {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!("cannot create storage directory {}", dir.display())
                })?;
                let dir = dir.canonicalize().with_context(|| {
                    format!("cannot resolve storage directory {}", dir.display())
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .with_context(|| format!("cannot open storage directory {}", dir.display()))?;
                Ok(Self {
                    store: Arc::new(store),
                    root: Path::default(),
                    display: dir.display().to_string(),
                })
            }
            StorageLocation::S3 { bucket, prefix } => {
                let s3 = &config.s3;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                builder = builder.with_allow_http(s3.allow_http);
                let store = builder
                    .build()
                    .with_context(|| format!("cannot configure S3 bucket `{bucket}`"))?;
                Ok(Self {
                    store: Arc::new(store),
                    root: Path::from(prefix.as_str()),
                    display: format!("s3://{bucket}/{prefix}"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            StorageLocation::parse("memory://"),
            Ok(StorageLocation::Memory)
        );
        assert_eq!(
            StorageLocation::parse("./strata-data"),
            Ok(StorageLocation::Local("./strata-data".into()))
        );
        assert_eq!(
            StorageLocation::parse("file:///var/lib/strata"),
            Ok(StorageLocation::Local("/var/lib/strata".into()))
        );
        assert_eq!(
            StorageLocation::parse("s3://b/some/prefix/"),
            Ok(StorageLocation::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            })
        );
        assert_eq!(
            StorageLocation::parse("s3://b"),
            Ok(StorageLocation::S3 {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        for bad in ["", "s3://", "s3:///x", "gs://b", "file://relative"] {
            assert!(StorageLocation::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
