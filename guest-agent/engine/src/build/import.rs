//! `docker import`: a one-layer image from a root file system tar, with
//! Dockerfile `--change` instructions applied to its config.

use std::io::Read;

use crate::image::commit::{ImageSpec, LayerSource, create_image};
use crate::image::{ContainerConfig, History};

impl crate::Engine {
    /// `docker import`: a one-layer image from a root file system tar.
    pub fn import_image(
        &self,
        reader: impl Read + Send,
        reference: Option<&str>,
        changes: &[String],
        comment: &str,
    ) -> crate::Result<String> {
        let mut config = ContainerConfig::default();
        for change in changes {
            crate::build::apply_change(&mut config, change)?;
        }
        let spec = ImageSpec {
            parent: None,
            layer: LayerSource::Tar(Box::new(reader)),
            config,
            history: History {
                created_by: Some("docker import".to_owned()),
                comment: Some(comment.to_owned()).filter(|c| !c.is_empty()),
                ..History::default()
            },
            author: None,
            tags: reference.into_iter().map(str::to_owned).collect(),
        };
        let id = create_image(&self.images, spec)?;
        self.events
            .publish("image", "import", &id, std::collections::BTreeMap::new());
        Ok(id)
    }
}
