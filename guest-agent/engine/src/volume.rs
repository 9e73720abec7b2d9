//! Local volumes: named and anonymous, under `<root>/volumes/<name>/`.
//!
//! A volume is a directory (`_data`) plus a small metadata file. The first
//! container that mounts an empty volume over a path where its image has
//! content gets that content copied in (Docker's copy-up); the runtime helper
//! does the copy, inside the container's mount namespace, where the image's
//! view of the path exists. A volume in use by any container cannot be
//! removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::container::write_atomic;
use crate::{Error, Result};

/// What `docker volume inspect` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
    pub created_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub scope: String,
    /// Created for one container (`-v /path`, image `VOLUME`), removed with
    /// it by `rm -v`.
    #[serde(default, skip_serializing)]
    pub anonymous: bool,
}

/// The volume store.
#[derive(Debug)]
pub struct Volumes {
    root: PathBuf,
    /// Serializes create/remove so two creates of one name cannot race.
    lock: Mutex<()>,
}

/// Docker's volume name rule.
fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() >= 2;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )))
    }
}

impl Volumes {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(Error::io("create", root))?;
        Ok(Self {
            root: root.to_owned(),
            lock: Mutex::new(()),
        })
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("volume.json")
    }

    /// Creates a volume, or returns the existing one of that name (Docker's
    /// create is idempotent). `None` makes an anonymous volume.
    pub fn create(&self, name: Option<&str>, labels: BTreeMap<String, String>) -> Result<Volume> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (name, anonymous) = match name.filter(|n| !n.is_empty()) {
            Some(name) => {
                validate_name(name)?;
                (name.to_owned(), false)
            }
            None => (hex::encode(rand::random::<[u8; 32]>()), true),
        };
        if let Ok(existing) = self.get(&name) {
            return Ok(existing);
        }
        let dir = self.root.join(&name);
        let data = dir.join("_data");
        std::fs::create_dir_all(&data).map_err(Error::io("create volume", &data))?;
        let volume = Volume {
            name: name.clone(),
            driver: "local".into(),
            mountpoint: data,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
            options: BTreeMap::new(),
            scope: "local".into(),
            anonymous,
        };
        let mut bytes = serde_json::to_value(&volume).unwrap_or_default();
        bytes["Anonymous"] = serde_json::Value::Bool(anonymous);
        write_atomic(
            &self.meta_path(&name),
            &serde_json::to_vec_pretty(&bytes).unwrap_or_default(),
        )?;
        Ok(volume)
    }

    /// Looks a volume up by name.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::NoSuchVolume(name.to_owned()));
        }
        let path = self.meta_path(name);
        let bytes = std::fs::read(&path).map_err(|_| Error::NoSuchVolume(name.to_owned()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::runtime(format!("volume {name}: bad metadata: {e}")))?;
        let mut volume: Volume = serde_json::from_value(value.clone())
            .map_err(|e| Error::runtime(format!("volume {name}: bad metadata: {e}")))?;
        volume.anonymous = value["Anonymous"].as_bool().unwrap_or(false);
        Ok(volume)
    }

    /// Every volume.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let entries = std::fs::read_dir(&self.root).map_err(Error::io("list", &self.root))?;
        let mut out: Vec<Volume> = entries
            .flatten()
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a volume. `users` are the containers that mount it; a volume
    /// with users is refused unless `force` (which Docker also refuses for
    /// volumes in use, so `force` only ignores a missing volume).
    pub fn remove(&self, name: &str, users: &[String], force: bool) -> Result<()> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = self.get(name) {
            return if force { Ok(()) } else { Err(err) };
        }
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = self.root.join(name);
        std::fs::remove_dir_all(&dir).map_err(Error::io("remove volume", &dir))
    }

    /// Bytes used by a volume (for `system df`).
    pub fn size(&self, name: &str) -> u64 {
        fn walk(path: &Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                return 0;
            };
            if meta.is_dir() {
                std::fs::read_dir(path)
                    .map(|d| d.flatten().map(|e| walk(&e.path())).sum())
                    .unwrap_or(0)
            } else {
                meta.len()
            }
        }
        walk(&self.root.join(name).join("_data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_idempotent_and_remove_refuses_users() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        let first = volumes.create(Some("data"), BTreeMap::new()).unwrap();
        std::fs::write(first.mountpoint.join("f"), "x").unwrap();
        let again = volumes.create(Some("data"), BTreeMap::new()).unwrap();
        assert_eq!(first.mountpoint, again.mountpoint);
        assert!(volumes.mountpoint_has("data", "f"));
        let err = volumes.remove("data", &["abc".into()], false).unwrap_err();
        assert!(err.to_string().contains("volume is in use - [abc]"));
        volumes.remove("data", &[], false).unwrap();
        assert!(matches!(volumes.get("data"), Err(Error::NoSuchVolume(_))));
    }

    #[test]
    fn anonymous_volumes_get_random_names() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        let volume = volumes.create(None, BTreeMap::new()).unwrap();
        assert_eq!(volume.name.len(), 64);
        assert!(volumes.get(&volume.name).unwrap().anonymous);
    }

    #[test]
    fn bad_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        assert!(matches!(
            volumes.create(Some("a/b"), BTreeMap::new()),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(volumes.get("../etc"), Err(Error::NoSuchVolume(_))));
    }

    impl Volumes {
        fn mountpoint_has(&self, name: &str, file: &str) -> bool {
            self.root.join(name).join("_data").join(file).exists()
        }
    }
}
