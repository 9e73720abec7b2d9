//! `docker save`: one tar holding both an OCI layout and a docker-archive
//! `manifest.json`, every blob named by its [`Digest`].

use std::collections::HashSet;
use std::io::{self, Write};

use serde_json::json;

use super::super::digest::Digest;
use super::super::reference::Reference;
use super::super::{Error, ImageStore};
use super::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
};

/// What to save: an image and the names to save it under.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: super::super::Image,
    /// Familiar `repo:tag` names (empty when saved by ID).
    pub tags: Vec<String>,
}

/// Resolves the `names` of a save request like Docker: a name saves that
/// tag, an ID saves the image untagged.
pub fn resolve_for_save(store: &ImageStore, names: &[String]) -> Result<Vec<SaveItem>, Error> {
    let mut items: Vec<SaveItem> = Vec::new();
    for name in names {
        let image = store.get(name)?;
        let tag = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.familiar_tagged())
            .filter(|t| image.repo_tags.contains(t));
        match items.iter_mut().find(|i| i.image.id == image.id) {
            Some(item) => item.tags.extend(tag),
            None => items.push(SaveItem {
                image,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    Ok(items)
}

/// The OCI manifest of an image without a stored one.
pub(crate) fn generated_manifest(image: &super::super::Image, config_size: u64) -> Vec<u8> {
    let layers: Vec<_> = image
        .layers
        .iter()
        .map(|l| {
            let media_type = match l.blob.media_type.as_str() {
                "application/vnd.docker.image.rootfs.diff.tar.gzip" => MEDIA_OCI_LAYER_GZIP,
                "application/vnd.docker.image.rootfs.diff.tar" => MEDIA_OCI_LAYER,
                other => other,
            };
            json!({ "mediaType": media_type, "digest": l.blob.digest, "size": l.blob.size })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": { "mediaType": MEDIA_OCI_CONFIG, "digest": image.id, "size": config_size },
        "layers": layers,
    });
    serde_json::to_vec(&manifest).expect("invariant: a manifest serializes")
}

/// Writes `items` as one tar holding both a docker-archive and an OCI layout.
pub fn save(store: &ImageStore, items: &[SaveItem], writer: impl Write) -> Result<(), Error> {
    let mut builder = tar::Builder::new(writer);
    let write_err = |e: io::Error| Error::Io {
        op: "write image archive",
        path: "-".into(),
        source: e,
    };
    let mut written: HashSet<Digest> = HashSet::new();
    let mut index_entries = Vec::new();
    let mut manifest_entries = Vec::new();
    append_dir(&mut builder, "blobs/").map_err(write_err)?;
    append_dir(&mut builder, "blobs/sha256/").map_err(write_err)?;
    for item in items {
        let image = &item.image;
        let id = image.digest();
        let config = store.config_bytes(id)?;
        let (manifest_bytes, manifest_type) = match &image.manifest {
            Some(m) => (
                fs_err::read(store.blob_path(&m.digest))
                    .map_err(Error::io("read manifest", store.blob_path(&m.digest)))?,
                m.media_type.clone(),
            ),
            None => (
                generated_manifest(image, config.len() as u64),
                MEDIA_OCI_MANIFEST.to_owned(),
            ),
        };
        let manifest_digest = Digest::of(&manifest_bytes);
        let mut blob_bytes = |digest: &Digest, bytes: &[u8]| -> Result<(), Error> {
            if written.insert(digest.clone()) {
                append_bytes(&mut builder, &blob_name(digest), bytes).map_err(write_err)?;
            }
            Ok(())
        };
        blob_bytes(id, &config)?;
        blob_bytes(&manifest_digest, &manifest_bytes)?;
        for layer in &image.layers {
            if written.insert(layer.blob.digest.clone()) {
                let path = store.blob_path(&layer.blob.digest);
                let mut file =
                    fs_err::File::open(&path).map_err(Error::io("open layer blob", &path))?;
                let mut header = file_header(layer.blob.size);
                builder
                    .append_data(&mut header, blob_name(&layer.blob.digest), &mut file)
                    .map_err(write_err)?;
            }
        }
        let descriptor = |annotations: serde_json::Value| {
            json!({
                "mediaType": manifest_type,
                "digest": manifest_digest,
                "size": manifest_bytes.len(),
                "annotations": annotations,
            })
        };
        if item.tags.is_empty() {
            index_entries.push(descriptor(json!({})));
        }
        for tag in &item.tags {
            let parsed = Reference::parse(tag).map_err(|source| Error::InvalidReference {
                reference: tag.clone(),
                source,
            })?;
            index_entries.push(descriptor(json!({
                ANNOTATION_IMAGE_NAME: format!("{}:{}", parsed.full_name(), parsed.tag_or_latest()),
                ANNOTATION_REF_NAME: parsed.tag_or_latest(),
            })));
        }
        manifest_entries.push(json!({
            "Config": blob_name(id),
            "RepoTags": item.tags,
            "Layers": image.layers.iter().map(|l| blob_name(&l.blob.digest)).collect::<Vec<_>>(),
        }));
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": MEDIA_OCI_INDEX, "manifests": index_entries });
    let to_vec =
        |v: &serde_json::Value| serde_json::to_vec(v).expect("invariant: JSON values serialize");
    append_bytes(&mut builder, "index.json", &to_vec(&index)).map_err(write_err)?;
    append_bytes(
        &mut builder,
        "manifest.json",
        &to_vec(&json!(manifest_entries)),
    )
    .map_err(write_err)?;
    append_bytes(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(write_err)?;
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(write_err)?;
    Ok(())
}

fn blob_name(digest: &Digest) -> String {
    super::members::blob_path(digest)
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header
}

pub(super) fn append_bytes<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut header = file_header(bytes.len() as u64);
    builder.append_data(&mut header, name, bytes)
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(0);
    builder.append_data(&mut header, name, io::empty())
}
