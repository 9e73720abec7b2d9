//! `docker load`: docker-archive (`manifest.json`) and OCI layout
//! (`index.json`) tars, verified end to end before anything is committed.

use std::io::{self, Read};
use std::path::Path;

use serde::Deserialize;

use super::super::digest::Digest;
use super::super::reference::Reference;
use super::super::store::{self, Descriptor, LayerRecord, NewImage, Staging};
use super::super::{Error, ImageConfigFile, ImageStore};
use super::members::{self, Members};
use super::oci::{self, OciDescriptor, OciDocument, annotated_tag, host_architecture};
use super::{
    MEDIA_DOCKER_CONFIG, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_LAYER_ZSTD, MEDIA_OCI_MANIFEST,
};

/// One image a load made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: String,
    /// Familiar `repo:tag` names now pointing at it.
    pub tags: Vec<String>,
}

/// Most nested indexes an OCI layout may have.
const MAX_INDEX_DEPTH: u32 = 4;

/// Loads every image in the docker-archive or OCI-layout tar `reader`
/// (which may be gzip-compressed, like `docker save | gzip`).
pub fn load(store: &ImageStore, reader: impl Read + Send) -> Result<Vec<Loaded>, Error> {
    let mut staging = store.stage()?;
    let reader =
        store::decompress(io::BufReader::new(reader)).map_err(|source| Error::ReadArchive {
            what: "the compression header".to_owned(),
            source,
        })?;
    let members = members::stage(&mut staging, reader)?;
    let images = if members.has_file("manifest.json") {
        docker_archive_images(store, &mut staging, &members)?
    } else if members.has_file("index.json") {
        oci_layout_images(store, &mut staging, &members)?
    } else {
        return Err(Error::InvalidArchive(
            "neither manifest.json nor index.json found".to_owned(),
        ));
    };
    if images.is_empty() {
        return Err(Error::InvalidArchive("no images in the archive".to_owned()));
    }
    store.commit(&staging, &images)?;
    Ok(images
        .into_iter()
        .map(|i| Loaded {
            id: i.id.to_string(),
            tags: i.tags,
        })
        .collect())
}

/// Reads the staged blob `digest` as JSON.
fn read_json<T: for<'de> Deserialize<'de>>(
    store: &ImageStore,
    staging: &Staging,
    digest: &Digest,
    what: &str,
) -> Result<T, Error> {
    let path = staging
        .blob(digest)
        .map_or_else(|| store.blob_path(digest), Path::to_path_buf);
    let bytes = fs_err::read(&path).map_err(Error::io("read staged file", &path))?;
    oci::parse_json(&bytes, what)
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Deserialize)]
pub struct DockerManifestEntry {
    /// Archive path of the config (`<id hex>.json`, or `blobs/sha256/<hex>`).
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// Archive paths of the layer tars (`<v1 id>/layer.tar`, or
    /// `blobs/sha256/<hex>`). Old archives name directories after v1 layer
    /// IDs, which are not content digests: the content is checked against
    /// the config's `diff_ids` instead.
    #[serde(rename = "Layers", default)]
    pub layers: Vec<String>,
}

/// Checks a docker-archive config path named after its digest
/// (`<64 hex>.json`, as every `docker save` writes it) against its content.
fn check_config_name(path: &str, digest: &Digest, field: &str) -> Result<(), Error> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some(stem) = name.strip_suffix(".json") else {
        return Ok(());
    };
    match Digest::from_hex(stem) {
        Ok(named) if named != *digest => Err(Error::DigestMismatch {
            what: format!("{field} ({path})"),
            expected: named.to_string(),
            actual: digest.to_string(),
        }),
        _ => Ok(()),
    }
}

fn docker_archive_images(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
) -> Result<Vec<NewImage>, Error> {
    let manifest = members.get("manifest.json")?.digest.clone();
    let entries: Vec<DockerManifestEntry> = read_json(store, staging, &manifest, "manifest.json")?;
    let mut images = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let field = format!("manifest.json [{i}].Config");
        let id = members.get(&entry.config)?.digest.clone();
        check_config_name(&entry.config, &id, &field)?;
        let config: ImageConfigFile = read_json(store, staging, &id, &entry.config)?;
        let blobs = entry
            .layers
            .iter()
            .map(|path| Ok(members.get(path)?.digest.clone()))
            .collect::<Result<Vec<_>, Error>>()?;
        let layers = stage_layers(store, staging, &config, &blobs, &[])?;
        let mut tags = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            let parsed = Reference::parse(&tag).map_err(|source| Error::InvalidReference {
                reference: tag.clone(),
                source,
            })?;
            tags.push(parsed.familiar_tagged());
        }
        images.push(NewImage {
            id,
            layers,
            manifest: None,
            tags,
            digests: Vec::new(),
        });
    }
    Ok(images)
}

/// Verifies and unpacks `blobs` as the layers of `config`.
fn stage_layers(
    store: &ImageStore,
    staging: &mut Staging,
    config: &ImageConfigFile,
    blobs: &[Digest],
    media_types: &[String],
) -> Result<Vec<LayerRecord>, Error> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != blobs.len() {
        return Err(Error::InvalidArchive(format!(
            "the config lists {} layers but the manifest has {}",
            diff_ids.len(),
            blobs.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, (blob, diff_id)) in blobs.iter().zip(diff_ids).enumerate() {
        let size = store.stage_layer(staging, blob, diff_id)?;
        let path = staging
            .blob(blob)
            .map_or_else(|| store.blob_path(blob), Path::to_path_buf);
        let blob_size = fs_err::metadata(&path)
            .map_err(Error::io("stat layer blob", &path))?
            .len();
        let media_type = match media_types.get(i) {
            Some(media_type) => media_type.clone(),
            None => sniff_media_type(&path)?,
        };
        layers.push(LayerRecord {
            diff_id: diff_id.clone(),
            blob: Descriptor {
                media_type,
                digest: blob.clone(),
                size: blob_size,
            },
            size,
        });
    }
    Ok(layers)
}

/// The OCI layer media type matching a blob's compression.
fn sniff_media_type(path: &Path) -> Result<String, Error> {
    let mut head = [0u8; 4];
    let mut file = fs_err::File::open(path).map_err(Error::io("open layer blob", path))?;
    let n = file
        .read(&mut head)
        .map_err(Error::io("read layer blob", path))?;
    Ok(match store::sniff(&head[..n]) {
        store::Compression::None => MEDIA_OCI_LAYER,
        store::Compression::Gzip => MEDIA_OCI_LAYER_GZIP,
        store::Compression::Zstd => MEDIA_OCI_LAYER_ZSTD,
    }
    .to_owned())
}

fn oci_layout_images(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
) -> Result<Vec<NewImage>, Error> {
    let index_digest = members.get("index.json")?.digest.clone();
    let index: OciDocument = read_json(store, staging, &index_digest, "index.json")?;
    let mut images: Vec<NewImage> = Vec::new();
    for (i, entry) in index.manifests.unwrap_or_default().iter().enumerate() {
        let tag = annotated_tag(entry);
        let field = format!("index.json manifests[{i}]");
        let Some(image) = oci_image(store, staging, members, entry, &field, 0)? else {
            continue;
        };
        match images.iter_mut().find(|i| i.id == image.id) {
            Some(existing) => existing.tags.extend(tag),
            None => images.push(NewImage {
                tags: tag.into_iter().collect(),
                ..image
            }),
        }
    }
    Ok(images)
}

/// Resolves one index entry (a manifest, or a nested index by platform).
/// `field` names the descriptor for errors.
fn oci_image(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
    descriptor: &OciDescriptor,
    field: &str,
    depth: u32,
) -> Result<Option<NewImage>, Error> {
    if depth > MAX_INDEX_DEPTH {
        return Err(Error::InvalidArchive(
            "image indexes nest too deeply".to_owned(),
        ));
    }
    let path = members::blob_path(&descriptor.digest);
    let manifest = members.blob(&descriptor.digest, descriptor.size, field)?;
    let manifest_size = manifest.size;
    let document: OciDocument = read_json(store, staging, &descriptor.digest, &path)?;
    if let Some(manifests) = &document.manifests {
        let Some(chosen) = oci::pick_platform(manifests) else {
            return Err(Error::NoMatchingPlatform {
                platform: format!("linux/{}", host_architecture()),
            });
        };
        let chosen = chosen.clone();
        let field = format!("{path} manifests[{}]", chosen.digest);
        return oci_image(store, staging, members, &chosen, &field, depth + 1);
    }
    let Some(config_descriptor) = &document.config else {
        return Err(Error::InvalidArchive(format!(
            "manifest {} has no config",
            descriptor.digest
        )));
    };
    // Attestations and other artifacts share indexes with images.
    if config_descriptor.media_type != MEDIA_OCI_CONFIG
        && config_descriptor.media_type != MEDIA_DOCKER_CONFIG
    {
        return Ok(None);
    }
    let id = config_descriptor.digest.clone();
    members.blob(&id, config_descriptor.size, &format!("{path} config"))?;
    let config: ImageConfigFile = read_json(store, staging, &id, &members::blob_path(&id))?;
    let mut blobs = Vec::new();
    for (i, layer) in document.layers.iter().enumerate() {
        members.blob(&layer.digest, layer.size, &format!("{path} layers[{i}]"))?;
        blobs.push(layer.digest.clone());
    }
    let media_types: Vec<String> = document
        .layers
        .iter()
        .map(|l| l.media_type.clone())
        .collect();
    let layers = stage_layers(store, staging, &config, &blobs, &media_types)?;
    let media_type = if descriptor.media_type.is_empty() {
        MEDIA_OCI_MANIFEST.to_owned()
    } else {
        descriptor.media_type.clone()
    };
    Ok(Some(NewImage {
        id,
        layers,
        manifest: Some(Descriptor {
            media_type,
            digest: descriptor.digest.clone(),
            size: manifest_size,
        }),
        tags: Vec::new(),
        digests: Vec::new(),
    }))
}
