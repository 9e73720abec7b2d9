//! Create-time mount resolution: `-v` binds and volumes, `--mount`,
//! `--tmpfs` and the image's `VOLUME`s.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Config, HostConfig, MountPoint};
use crate::{Engine, Error, Result};

/// Splits `-v SRC:DST[:OPTS]` into its parts.
pub(super) fn split_bind(bind: &str) -> Result<(&str, &str, &str)> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "invalid volume specification: '{bind}'"
            )));
        }
    };
    if source.is_empty() || !destination.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "invalid volume specification: '{bind}': the container path must be absolute"
        )));
    }
    Ok((source, destination, options))
}

pub(super) fn mount_point(kind: &str, source: String, destination: &str, rw: bool) -> MountPoint {
    MountPoint {
        kind: kind.into(),
        name: String::new(),
        source,
        destination: match destination.trim_end_matches('/') {
            "" => "/".to_owned(),
            trimmed => trimmed.to_owned(),
        },
        driver: String::new(),
        mode: String::new(),
        rw,
        propagation: if kind == "bind" {
            "rprivate".into()
        } else {
            String::new()
        },
        anonymous: false,
        data: String::new(),
    }
}

impl Engine {
    /// In the VM, a missing bind source may only be created inside a host
    /// share (see [`crate::EngineConfig::host_shares`]).
    pub(super) fn check_shared(&self, source: &Path) -> Result<()> {
        let Some(shares) = &self.host_shares else {
            return Ok(());
        };
        if shares.iter().any(|s| source.starts_with(&s.path)) {
            return Ok(());
        }
        let listed = if shares.is_empty() {
            "none".to_owned()
        } else {
            shares
                .iter()
                .map(|s| {
                    format!(
                        "{} ({})",
                        s.path.display(),
                        if s.writable { "writable" } else { "read-only" }
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::InvalidArgument(format!(
            "bind source path {} does not exist in the VM and is not under a directory shared with it (shared: {listed}); add it to mounts: in the instance's template",
            source.display()
        )))
    }

    /// Resolves binds, `--mount`s, tmpfs and volumes (named, `-v /path`,
    /// and the image's `VOLUME`s) into mounts, creating volumes and missing
    /// `-v` bind sources as Docker does.
    pub(super) fn resolve_mounts(
        &self,
        config: &Config,
        host: &HostConfig,
        image_volumes: &[String],
    ) -> Result<Vec<MountPoint>> {
        let mut mounts: Vec<MountPoint> = Vec::new();
        let mut created: Vec<String> = Vec::new();
        let result = (|| -> Result<()> {
            for bind in &host.binds {
                let (source, destination, options) = split_bind(bind)?;
                let rw = !options.split(',').any(|o| o == "ro");
                let mode = options.to_owned();
                if source.starts_with('/') {
                    // `-v` creates a missing host directory; `--mount` does not.
                    if std::fs::symlink_metadata(source).is_err() {
                        self.check_shared(Path::new(source))?;
                        std::fs::create_dir_all(source)
                            .map_err(Error::io("create bind source", source))?;
                    }
                    mounts.push(MountPoint {
                        mode,
                        ..mount_point("bind", source.to_owned(), destination, rw)
                    });
                } else {
                    let existed = self.volumes.get(source).is_ok();
                    let volume = self.volumes.create(Some(source), BTreeMap::new())?;
                    if !existed {
                        created.push(volume.name.clone());
                    }
                    mounts.push(MountPoint {
                        name: volume.name,
                        driver: "local".into(),
                        mode,
                        ..mount_point(
                            "volume",
                            volume.mountpoint.display().to_string(),
                            destination,
                            rw,
                        )
                    });
                }
            }
            for request in &host.mounts {
                if !request.target.starts_with('/') {
                    return Err(Error::InvalidArgument(format!(
                        "invalid mount config: mount target {:?} must be an absolute path",
                        request.target
                    )));
                }
                let rw = !request.read_only;
                match request.kind.as_str() {
                    "bind" => {
                        if std::fs::symlink_metadata(&request.source).is_err() {
                            return Err(Error::InvalidArgument(format!(
                                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                                request.source
                            )));
                        }
                        mounts.push(mount_point(
                            "bind",
                            request.source.clone(),
                            &request.target,
                            rw,
                        ));
                    }
                    "volume" => {
                        let name = (!request.source.is_empty()).then_some(request.source.as_str());
                        let existed = name.is_some_and(|n| self.volumes.get(n).is_ok());
                        let volume = self.volumes.create(name, BTreeMap::new())?;
                        if !existed {
                            created.push(volume.name.clone());
                        }
                        mounts.push(MountPoint {
                            name: volume.name,
                            driver: "local".into(),
                            anonymous: name.is_none(),
                            ..mount_point(
                                "volume",
                                volume.mountpoint.display().to_string(),
                                &request.target,
                                rw,
                            )
                        });
                    }
                    "tmpfs" => {
                        let mut data = Vec::new();
                        if let Some(options) = &request.tmpfs_options {
                            if options.size_bytes > 0 {
                                data.push(format!("size={}", options.size_bytes));
                            }
                            if options.mode > 0 {
                                data.push(format!("mode={:o}", options.mode));
                            }
                        }
                        mounts.push(MountPoint {
                            data: data.join(","),
                            ..mount_point("tmpfs", String::new(), &request.target, rw)
                        });
                    }
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "invalid mount config: mount type {other:?} is not supported"
                        )));
                    }
                }
            }
            for (destination, options) in &host.tmpfs {
                let options: Vec<&str> = options.split(',').filter(|o| !o.is_empty()).collect();
                let rw = !options.contains(&"ro");
                let data: Vec<&str> = options
                    .into_iter()
                    .filter(|o| *o != "ro" && *o != "rw")
                    .collect();
                mounts.push(MountPoint {
                    data: data.join(","),
                    ..mount_point("tmpfs", String::new(), destination, rw)
                });
            }
            let anonymous = config
                .volumes
                .iter()
                .flat_map(|v| v.keys().cloned())
                .chain(image_volumes.iter().cloned());
            for destination in anonymous {
                let destination = destination.trim_end_matches('/').to_owned();
                if mounts.iter().any(|m| m.destination == destination) {
                    continue;
                }
                let volume = self.volumes.create(None, BTreeMap::new())?;
                created.push(volume.name.clone());
                mounts.push(MountPoint {
                    name: volume.name,
                    driver: "local".into(),
                    anonymous: true,
                    ..mount_point(
                        "volume",
                        volume.mountpoint.display().to_string(),
                        &destination,
                        true,
                    )
                });
            }
            let mut seen = std::collections::HashSet::new();
            for m in &mounts {
                if !seen.insert(m.destination.clone()) {
                    return Err(Error::InvalidArgument(format!(
                        "Duplicate mount point: {}",
                        m.destination
                    )));
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            // Nothing half-made stays behind.
            for name in created {
                let _ = self.volumes.remove(&name, &[], true);
            }
            return Err(err);
        }
        Ok(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_bind_reads_mode_and_rejects_relative_targets() {
        assert_eq!(split_bind("/src:/dst:ro").unwrap(), ("/src", "/dst", "ro"));
        assert_eq!(split_bind("vol:/dst").unwrap(), ("vol", "/dst", ""));
        assert!(split_bind("/src:dst").is_err());
        assert!(split_bind("a:b:c:d").is_err());
    }
}
