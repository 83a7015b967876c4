//! Where the catalog's objects live under the root, and how their names encode versions.

use object_store::path::Path;

use super::actions::CatalogVersion;

const CATALOG_DIR: &str = "_catalog";
const LOG_DIR: &str = "log";
const CHECKPOINT_DIR: &str = "checkpoints";
const LAST_CHECKPOINT: &str = "_last_checkpoint";
pub(crate) const COMMIT_SUFFIX: &str = ".json";
pub(crate) const CHECKPOINT_SUFFIX: &str = ".json.zst";
/// Zero-padded width of a version in object names, so that names sort like versions.
const VERSION_WIDTH: usize = 20;

/// The object paths of one catalog.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) root: Path,
    pub(crate) log_dir: Path,
    pub(crate) checkpoint_dir: Path,
    pub(crate) last_checkpoint: Path,
}

impl Layout {
    pub(crate) fn new(root: Path) -> Self {
        let catalog = root.clone().join(CATALOG_DIR);
        Self {
            log_dir: catalog.clone().join(LOG_DIR),
            checkpoint_dir: catalog.clone().join(CHECKPOINT_DIR),
            last_checkpoint: catalog.join(LAST_CHECKPOINT),
            root,
        }
    }

    /// `_catalog/log/<version>.json`
    pub(crate) fn commit_path(&self, version: CatalogVersion) -> Path {
        self.log_dir
            .clone()
            .join(format!("{:0VERSION_WIDTH$}{COMMIT_SUFFIX}", version.get()))
    }

    /// `_catalog/checkpoints/<version>.json.zst`
    pub(crate) fn checkpoint_path(&self, version: CatalogVersion) -> Path {
        self.checkpoint_dir.clone().join(format!(
            "{:0VERSION_WIDTH$}{CHECKPOINT_SUFFIX}",
            version.get()
        ))
    }

    /// A listing offset that sorts just before the checkpoint of `version`, so that
    /// `list_with_offset` (exclusive) includes that checkpoint and every later one.
    pub(crate) fn checkpoint_list_offset(&self, version: CatalogVersion) -> Path {
        self.checkpoint_dir
            .clone()
            .join(format!("{:0VERSION_WIDTH$}", version.get()))
    }
}

/// The version in an object name `<20 digits><suffix>`; `None` for any other name.
pub(crate) fn parse_version(path: &Path, suffix: &str) -> Option<CatalogVersion> {
    let digits = path.filename()?.strip_suffix(suffix)?;
    if digits.len() != VERSION_WIDTH || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(CatalogVersion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_versions_and_parse_back() {
        let layout = Layout::new(Path::from("warehouse"));
        let p9 = layout.commit_path(CatalogVersion(9));
        let p10 = layout.commit_path(CatalogVersion(10));
        assert_eq!(
            p9.as_ref(),
            "warehouse/_catalog/log/00000000000000000009.json"
        );
        assert!(p9 < p10);
        assert_eq!(parse_version(&p10, COMMIT_SUFFIX), Some(CatalogVersion(10)));
        let cp = layout.checkpoint_path(CatalogVersion(20));
        assert_eq!(
            cp.as_ref(),
            "warehouse/_catalog/checkpoints/00000000000000000020.json.zst"
        );
        assert_eq!(
            parse_version(&cp, CHECKPOINT_SUFFIX),
            Some(CatalogVersion(20))
        );
        assert!(layout.checkpoint_list_offset(CatalogVersion(20)) < cp);
        assert!(
            layout.checkpoint_path(CatalogVersion(19))
                < layout.checkpoint_list_offset(CatalogVersion(20))
        );
        assert_eq!(parse_version(&cp, COMMIT_SUFFIX), None);
        assert_eq!(
            parse_version(&Path::from("log/123.json"), COMMIT_SUFFIX),
            None
        );
        assert_eq!(
            parse_version(&Path::from("log/0000000000000000000x.json"), COMMIT_SUFFIX),
            None
        );
        assert_eq!(
            Layout::new(Path::default()).last_checkpoint.as_ref(),
            "_catalog/_last_checkpoint"
        );
    }
}
