//! Container commit, diff and export: the container side of
//! `image::commit`, which writes layers and images and knows nothing of
//! containers.

use std::io::Write;

use super::{Config, Status};
use crate::image::commit::{Change, ImageSpec, LayerSource, changes, create_image, write_root_tar};
use crate::image::{ContainerConfig, History};

/// The image config of a commit: the container's settings, then the
/// request's overrides.
pub fn commit_config(container: &Config, overrides: Option<&Config>) -> ContainerConfig {
    let mut config = ContainerConfig {
        user: container.user.clone(),
        env: Some(container.env.clone()).filter(|e| !e.is_empty()),
        cmd: container.cmd.clone(),
        entrypoint: container.entrypoint.clone(),
        working_dir: container.working_dir.clone(),
        exposed_ports: container.exposed_ports.clone(),
        volumes: container.volumes.clone(),
        labels: Some(container.labels.clone()).filter(|l| !l.is_empty()),
        stop_signal: container.stop_signal.clone(),
        healthcheck: container.healthcheck.clone(),
        extra: serde_json::Map::new(),
    };
    if let Some(o) = overrides {
        if !o.user.is_empty() {
            config.user.clone_from(&o.user);
        }
        if !o.env.is_empty() {
            config.env = Some(o.env.clone());
        }
        if o.cmd.is_some() {
            config.cmd.clone_from(&o.cmd);
        }
        if o.entrypoint.is_some() {
            config.entrypoint.clone_from(&o.entrypoint);
        }
        if !o.working_dir.is_empty() {
            config.working_dir.clone_from(&o.working_dir);
        }
        if o.exposed_ports.is_some() {
            config.exposed_ports.clone_from(&o.exposed_ports);
        }
        if o.volumes.is_some() {
            config.volumes.clone_from(&o.volumes);
        }
        if !o.labels.is_empty() {
            config.labels = Some(o.labels.clone());
        }
    }
    config
}

/// `docker commit` options.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `repo[:tag]` to tag the new image with.
    pub reference: Option<String>,
    pub comment: String,
    pub author: String,
    /// Dockerfile instructions applied to the config (`--change`).
    pub changes: Vec<String>,
    /// Config overrides (the request body).
    pub config: Option<Config>,
    /// Freeze a running container while its changes are archived.
    pub pause: bool,
}

impl crate::Engine {
    /// `docker commit`: a new image from a container's changes.
    pub async fn commit_container(
        self: &std::sync::Arc<Self>,
        key: &str,
        options: CommitOptions,
    ) -> crate::Result<String> {
        let entry = self.container(key)?;
        let record = entry.snapshot();
        let mut config = commit_config(&record.config, options.config.as_ref());
        for change in &options.changes {
            crate::build::apply_change(&mut config, change)?;
        }
        let paused = options.pause && record.state.status == Status::Running;
        if paused {
            self.pause_container(&record.id)?;
        }
        let engine = self.clone();
        let upper = entry.dir().join("upper");
        let image_id = record.image_id.clone();
        let cmd: Vec<String> = std::iter::once(record.path.clone())
            .chain(record.args.iter().cloned())
            .collect();
        let result = tokio::task::spawn_blocking(move || -> crate::Result<String> {
            let parent = engine.images.get(&image_id)?;
            let spec = ImageSpec {
                parent: Some(&parent),
                layer: LayerSource::Upper(&upper),
                config,
                history: History {
                    created_by: Some(cmd.join(" ")),
                    comment: Some(options.comment).filter(|c| !c.is_empty()),
                    ..History::default()
                },
                author: Some(options.author).filter(|a| !a.is_empty()),
                tags: options.reference.into_iter().collect(),
            };
            Ok(create_image(&engine.images, spec)?)
        })
        .await
        .map_err(|e| crate::Error::runtime(format!("commit task failed: {e}")));
        if paused {
            let _ = self.unpause_container(&record.id);
        }
        let id = result??;
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("comment".to_owned(), String::new());
        self.events
            .publish("container", "commit", &record.id, attributes);
        Ok(id)
    }

    /// `docker diff`: the container's changes against its image.
    pub fn container_changes(&self, key: &str) -> crate::Result<Vec<Change>> {
        let entry = self.container(key)?;
        let record = entry.snapshot();
        let upper = entry.dir().join("upper");
        changes(&upper, &record.layers).map_err(crate::Error::io("read changes of", upper))
    }

    /// `docker export`: writes the container's merged root as a tar.
    pub async fn export_container(
        &self,
        key: &str,
        out: impl Write + Send + 'static,
    ) -> crate::Result<()> {
        let access = self.container_root(key).await?;
        tokio::task::spawn_blocking(move || {
            let root = access.root().to_owned();
            write_root_tar(&root, out).map_err(crate::Error::io("export", root))
        })
        .await
        .map_err(|e| crate::Error::runtime(format!("export task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_config_applies_request_overrides() {
        let container = Config {
            cmd: Some(vec!["sh".into()]),
            env: vec!["A=1".into()],
            ..Config::default()
        };
        let overrides = Config {
            cmd: Some(vec!["true".into()]),
            ..Config::default()
        };
        let config = commit_config(&container, Some(&overrides));
        assert_eq!(config.cmd, Some(vec!["true".to_owned()]));
        assert_eq!(config.env, Some(vec!["A=1".to_owned()]));
    }
}
