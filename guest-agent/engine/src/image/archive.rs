//! `docker load` and `docker save`: docker-archive and OCI image layout tars.
//!
//! Loading streams the outer tar once, staging every regular file as a
//! blob (hashed on the way), then reads `manifest.json` (docker-archive) or
//! `index.json` (OCI layout) from the staged files. Every file under
//! `blobs/<alg>/<hex>` must hash to its name, every config's ID is the hash
//! of its bytes, and every layer must decompress to its `diff_id`. Only when
//! all images are verified and unpacked does [`ImageStore::commit`] make them
//! visible; any failure drops the staging directory and leaves the store as
//! it was.
//!
//! Saving writes both layouts in one tar, like Docker 25+: `blobs/sha256/*`,
//! `index.json` and `oci-layout` for OCI tools, and `manifest.json` (whose
//! paths point into `blobs/`) for `docker load` of any age.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::reference::Reference;
use super::store::{self, Descriptor, LayerRecord, NewImage, Staging};
use super::{Error, ImageConfigFile, ImageStore, unpack};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation holding the full image name (containerd, Docker 25+).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI annotation holding the reference (often just the tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image a load made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: String,
    /// Familiar `repo:tag` names now pointing at it.
    pub tags: Vec<String>,
}

/// A regular file of the archive, staged as a blob.
#[derive(Debug, Clone)]
struct Member {
    digest: String,
}

/// The archive's members by cleaned path; symlinks resolved lazily.
struct Members {
    files: HashMap<String, Member>,
    symlinks: HashMap<String, String>,
}

impl Members {
    fn get(&self, path: &str) -> Result<&Member, Error> {
        let mut path = clean(path)
            .ok_or_else(|| Error::InvalidArchive(format!("path {path:?} escapes the archive")))?;
        for _ in 0..16 {
            if let Some(member) = self.files.get(&path) {
                return Ok(member);
            }
            let Some(target) = self.symlinks.get(&path) else {
                break;
            };
            let base = path.rsplit_once('/').map_or("", |(dir, _)| dir);
            path = clean(&format!("{base}/{target}")).ok_or_else(|| {
                Error::InvalidArchive(format!("symlink {path:?} escapes the archive"))
            })?;
        }
        Err(Error::InvalidArchive(format!(
            "{path:?} is missing from the archive"
        )))
    }
}

fn clean(path: &str) -> Option<String> {
    let comps = unpack::clean_path(path.as_bytes())?;
    let comps: Vec<String> = comps
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .collect();
    Some(comps.join("/"))
}

/// Reads the staged blob `digest` as JSON.
fn read_json<T: for<'de> Deserialize<'de>>(
    store: &ImageStore,
    staging: &Staging,
    digest: &str,
    what: &str,
) -> Result<T, Error> {
    let bytes = read_staged(store, staging, digest)?;
    serde_json::from_slice(&bytes).map_err(|source| Error::InvalidJson {
        what: what.to_owned(),
        source,
    })
}

fn read_staged(store: &ImageStore, staging: &Staging, digest: &str) -> Result<Vec<u8>, Error> {
    let path = staging
        .blob(digest)
        .map_or_else(|| store.blob_path(digest), Path::to_path_buf);
    fs_err::read(&path).map_err(Error::io("read staged file", &path))
}

/// Loads every image in the docker-archive or OCI-layout tar `reader`
/// (which may be gzip-compressed, like `docker save | gzip`).
pub fn load(store: &ImageStore, reader: impl Read + Send) -> Result<Vec<Loaded>, Error> {
    let mut staging = store.stage()?;
    let reader =
        store::decompress(io::BufReader::new(reader)).map_err(|source| Error::ReadArchive {
            what: "the compression header".to_owned(),
            source,
        })?;
    let members = stage_members(&mut staging, reader)?;
    let images = if members.files.contains_key("manifest.json") {
        docker_archive_images(store, &mut staging, &members)?
    } else if members.files.contains_key("index.json") {
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
            id: i.id,
            tags: i.tags,
        })
        .collect())
}

/// Streams the outer tar into staging; checks `blobs/<alg>/<hex>` names.
fn stage_members(staging: &mut Staging, reader: impl Read) -> Result<Members, Error> {
    let mut archive = tar::Archive::new(reader);
    let mut members = Members {
        files: HashMap::new(),
        symlinks: HashMap::new(),
    };
    let read_err = |what: &str| {
        let what = what.to_owned();
        move |source| Error::ReadArchive { what, source }
    };
    for entry in archive.entries().map_err(read_err("the tar header"))? {
        let entry = entry.map_err(read_err("a tar header"))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = clean(&raw)
            .ok_or_else(|| Error::InvalidArchive(format!("path {raw:?} escapes the archive")))?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            members.symlinks.insert(path, target);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let (digest, written) = staging.write_blob(entry, None).map_err(|e| match e {
            Error::ReadBlob { source, .. } => Error::ReadArchive {
                what: path.clone(),
                source,
            },
            other => other,
        })?;
        if written != size {
            return Err(Error::ReadArchive {
                what: path,
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        if let Some(named) = path.strip_prefix("blobs/sha256/")
            && format!("sha256:{named}") != digest
        {
            let expected = format!("sha256:{named}");
            return Err(Error::DigestMismatch {
                what: path,
                expected,
                actual: digest,
            });
        }
        members.files.insert(path, Member { digest });
    }
    Ok(members)
}

#[derive(Debug, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn docker_archive_images(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
) -> Result<Vec<NewImage>, Error> {
    let manifest = members.get("manifest.json")?.digest.clone();
    let entries: Vec<DockerManifestEntry> = read_json(store, staging, &manifest, "manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let id = members.get(&entry.config)?.digest.clone();
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
    blobs: &[String],
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

/// An OCI descriptor as found in indexes and manifests.
#[derive(Debug, Clone, Deserialize)]
pub struct OciDescriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// An OCI index or manifest, whichever the JSON is.
#[derive(Debug, Deserialize)]
pub struct OciDocument {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Option<Vec<OciDescriptor>>,
    #[serde(default)]
    pub config: Option<OciDescriptor>,
    #[serde(default)]
    pub layers: Vec<OciDescriptor>,
}

/// This machine's architecture in OCI (Go) spelling.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Picks this platform's manifest from an index's entries.
pub fn pick_platform(manifests: &[OciDescriptor]) -> Option<&OciDescriptor> {
    let arch = host_architecture();
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| {
            manifests
                .iter()
                .find(|m| m.platform.is_none() && !is_index_type(&m.media_type))
        })
}

fn is_index_type(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// The familiar tag an index entry's annotations name, if any.
fn annotated_tag(descriptor: &OciDescriptor) -> Option<String> {
    let name = descriptor
        .annotations
        .get(ANNOTATION_IMAGE_NAME)
        .or_else(|| {
            descriptor
                .annotations
                .get(ANNOTATION_REF_NAME)
                .filter(|n| n.contains([':', '/']))
        })?;
    Reference::parse(name).ok().map(|r| r.familiar_tagged())
}

fn oci_layout_images(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
) -> Result<Vec<NewImage>, Error> {
    let index_digest = members.get("index.json")?.digest.clone();
    let index: OciDocument = read_json(store, staging, &index_digest, "index.json")?;
    let mut images: Vec<NewImage> = Vec::new();
    for entry in index.manifests.unwrap_or_default() {
        let tag = annotated_tag(&entry);
        let Some(image) = oci_image(store, staging, members, &entry, 0)? else {
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
fn oci_image(
    store: &ImageStore,
    staging: &mut Staging,
    members: &Members,
    descriptor: &OciDescriptor,
    depth: u32,
) -> Result<Option<NewImage>, Error> {
    if depth > 4 {
        return Err(Error::InvalidArchive(
            "image indexes nest too deeply".to_owned(),
        ));
    }
    let path = format!("blobs/{}", descriptor.digest.replacen(':', "/", 1));
    members.get(&path)?;
    let document: OciDocument = read_json(store, staging, &descriptor.digest, &path)?;
    if let Some(manifests) = &document.manifests {
        let Some(chosen) = pick_platform(manifests) else {
            return Err(Error::NoMatchingPlatform {
                platform: format!("linux/{}", host_architecture()),
            });
        };
        let chosen = chosen.clone();
        return oci_image(store, staging, members, &chosen, depth + 1);
    }
    let Some(config_descriptor) = &document.config else {
        return Err(Error::InvalidArchive(format!(
            "manifest {} has no config",
            descriptor.digest
        )));
    };
    // Attestations and other artifacts share indexes with images.
    if config_descriptor.media_type != MEDIA_OCI_CONFIG
        && config_descriptor.media_type != "application/vnd.docker.container.image.v1+json"
    {
        return Ok(None);
    }
    let config_path = format!("blobs/{}", config_descriptor.digest.replacen(':', "/", 1));
    let id = members.get(&config_path)?.digest.clone();
    let config: ImageConfigFile = read_json(store, staging, &id, &config_path)?;
    let mut blobs = Vec::new();
    for layer in &document.layers {
        let layer_path = format!("blobs/{}", layer.digest.replacen(':', "/", 1));
        blobs.push(members.get(&layer_path)?.digest.clone());
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
    let manifest_size = fs_err::metadata(staging.blob(&descriptor.digest).unwrap_or(Path::new("")))
        .map_or(descriptor.size, |m| m.len());
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

/// What to save: an image and the names to save it under.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: super::Image,
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
pub(crate) fn generated_manifest(image: &super::Image, config_size: u64) -> Vec<u8> {
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
    let mut written: HashSet<String> = HashSet::new();
    let mut index_entries = Vec::new();
    let mut manifest_entries = Vec::new();
    append_dir(&mut builder, "blobs/").map_err(write_err)?;
    append_dir(&mut builder, "blobs/sha256/").map_err(write_err)?;
    for item in items {
        let image = &item.image;
        let config = store.config_bytes(&image.id)?;
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
        let manifest_digest = store::sha256_digest(&manifest_bytes);
        let mut blob_bytes = |digest: &str, bytes: &[u8]| -> Result<(), Error> {
            if written.insert(digest.to_owned()) {
                append_bytes(&mut builder, &blob_name(digest), bytes).map_err(write_err)?;
            }
            Ok(())
        };
        blob_bytes(&image.id, &config)?;
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
            "Config": blob_name(&image.id),
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

fn blob_name(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header
}

fn append_bytes<W: Write>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-layer image (`hello` holding `hi`) as a docker-archive tar.
    fn docker_archive(tag: &str, corrupt_layer: bool) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        append_bytes(&mut layer, "hello", b"hi").unwrap();
        let layer = layer.into_inner().unwrap();
        let diff_id = store::sha256_digest(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": host_architecture(), "os": "linux",
            "config": { "Cmd": ["/hello"] },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        }))
        .unwrap();
        let config_name = format!("{}.json", &store::sha256_digest(&config)[7..]);
        let manifest =
            json!([{ "Config": config_name, "RepoTags": [tag], "Layers": ["l/layer.tar"] }]);
        let mut outer = tar::Builder::new(Vec::new());
        append_bytes(&mut outer, &config_name, &config).unwrap();
        let mut layer = layer;
        if corrupt_layer {
            layer[600] ^= 1;
        }
        append_bytes(&mut outer, "l/layer.tar", &layer).unwrap();
        append_bytes(
            &mut outer,
            "manifest.json",
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        outer.into_inner().unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn docker_archive_loads_and_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let loaded = load(&store, &docker_archive("hello:v1", false)[..]).unwrap();
        assert_eq!(loaded[0].tags, vec!["hello:v1".to_owned()]);
        let image = store.get("hello:v1").unwrap();
        assert_eq!(
            std::fs::read(image.layer_dirs[0].join("hello")).unwrap(),
            b"hi"
        );
        assert_eq!(image.layers[0].blob.media_type, MEDIA_OCI_LAYER);
        assert!(entries(&dir.path().join("tmp")).is_empty());
    }

    #[test]
    fn corrupt_layer_leaves_no_image_blob_or_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let err = load(&store, &docker_archive("hello:v1", true)[..]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
        assert!(store.list().unwrap().is_empty());
        for sub in ["blobs/sha256", "l", "imagedb", "tmp"] {
            assert!(entries(&dir.path().join(sub)).is_empty(), "{sub} not empty");
        }
    }

    #[test]
    fn truncated_archive_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tar = docker_archive("hello:v1", false);
        let err = load(&store, &tar[..tar.len() / 2]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
        assert!(store.list().unwrap().is_empty());
        assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    }

    #[test]
    fn save_then_load_round_trips_through_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("a")).unwrap();
        load(&store, &docker_archive("hello:v1", false)[..]).unwrap();
        let items = resolve_for_save(&store, &["hello:v1".to_owned()]).unwrap();
        let mut saved = Vec::new();
        save(&store, &items, &mut saved).unwrap();
        let id = store.get("hello:v1").unwrap().id;

        let other = ImageStore::open(&dir.path().join("b")).unwrap();
        let loaded = load(&other, &saved[..]).unwrap();
        assert_eq!(
            loaded,
            vec![Loaded {
                id: id.clone(),
                tags: vec!["hello:v1".to_owned()]
            }]
        );

        // Without manifest.json the OCI half alone must load too.
        let mut oci = tar::Builder::new(Vec::new());
        for entry in tar::Archive::new(&saved[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            if path != Path::new("manifest.json") {
                let mut header = entry.header().clone();
                oci.append_data(&mut header, &path, &mut entry).unwrap();
            }
        }
        let third = ImageStore::open(&dir.path().join("c")).unwrap();
        let loaded = load(&third, &oci.into_inner().unwrap()[..]).unwrap();
        assert_eq!(
            loaded,
            vec![Loaded {
                id,
                tags: vec!["hello:v1".to_owned()]
            }]
        );
    }

    #[test]
    fn legacy_archive_with_symlinked_layer_loads() {
        // Old `docker save` output: `<id>/layer.tar`, duplicates as symlinks.
        let plain = docker_archive("hello:v1", false);
        let mut rewritten = tar::Builder::new(Vec::new());
        for entry in tar::Archive::new(&plain[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let mut header = entry.header().clone();
            if path == Path::new("l/layer.tar") {
                rewritten
                    .append_data(&mut header, "real/layer.tar", &mut entry)
                    .unwrap();
                let mut link = tar::Header::new_ustar();
                link.set_entry_type(tar::EntryType::Symlink);
                link.set_size(0);
                rewritten
                    .append_link(&mut link, "l/layer.tar", "../real/layer.tar")
                    .unwrap();
            } else {
                rewritten
                    .append_data(&mut header, &path, &mut entry)
                    .unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let loaded = load(&store, &rewritten.into_inner().unwrap()[..]).unwrap();
        assert_eq!(loaded[0].tags, vec!["hello:v1".to_owned()]);
    }

    #[test]
    fn archive_path_escaping_the_archive_is_rejected() {
        let members = Members {
            files: HashMap::new(),
            symlinks: HashMap::new(),
        };
        assert!(matches!(
            members.get("../etc/passwd"),
            Err(Error::InvalidArchive(_))
        ));
    }

    #[test]
    fn gzip_compressed_archive_loads() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&docker_archive("hello:gz", false)).unwrap();
        let loaded = load(&store, &gz.finish().unwrap()[..]).unwrap();
        assert_eq!(loaded[0].tags, vec!["hello:gz".to_owned()]);
    }

    #[test]
    fn pick_platform_prefers_this_architecture() {
        let entries: Vec<OciDescriptor> = serde_json::from_value(json!([
            { "digest": "sha256:a", "platform": { "os": "linux", "architecture": "s390x" } },
            { "digest": "sha256:b", "platform": { "os": "linux", "architecture": host_architecture() } },
        ]))
        .unwrap();
        assert_eq!(pick_platform(&entries).unwrap().digest, "sha256:b");
    }
}
