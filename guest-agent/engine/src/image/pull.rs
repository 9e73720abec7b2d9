//! Pulling images from, and pushing them to, OCI / Docker registries.
//!
//! Built on `oci-client` (reqwest + rustls with the `ring` provider, which
//! builds for static musl). Like Docker's default `127.0.0.0/8` insecure
//! CIDR, registries on loopback (`localhost`, `127.x.y.z`, `[::1]`) are
//! spoken to over plain HTTP; everything else needs HTTPS.
//!
//! A pull stages the config, manifest and missing layer blobs, verifies
//! every digest (blobs by their descriptor, layers by the config's
//! `diff_ids`), unpacks new layers, and commits like a load does. Progress
//! goes out as [`Progress`] values; the API layer renders Docker's JSON.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{OciDescriptor as ClientDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedSender;

use super::archive::{self, OciDocument};
use super::digest::{Digest, HashingReader};
use super::reference::Reference;
use super::store::{Descriptor, LayerRecord, NewImage};
use super::{Error, ImageStore};

/// Manifest media types a pull accepts.
const ACCEPTED_MANIFESTS: &[&str] = &[
    archive::MEDIA_OCI_MANIFEST,
    archive::MEDIA_DOCKER_MANIFEST,
    archive::MEDIA_OCI_INDEX,
    archive::MEDIA_DOCKER_LIST,
];

/// How often (in bytes) download progress is reported.
const PROGRESS_EVERY: u64 = 512 * 1024;

/// Registry credentials (from `X-Registry-Auth`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// One progress report of a pull or push; rendered by the API layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A plain status line (`Pulling from library/busybox`, `Digest: ...`).
    Status { id: Option<String>, status: String },
    /// Byte progress of one layer (`Downloading` / `Pushing`).
    Bytes {
        id: String,
        action: &'static str,
        current: u64,
        total: u64,
    },
}

impl Progress {
    fn status(id: Option<&str>, status: impl Into<String>) -> Self {
        Progress::Status {
            id: id.map(str::to_owned),
            status: status.into(),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub id: String,
    /// Familiar `repo:tag`, or `repo@digest` for a pull by digest.
    pub name: String,
    /// False when the image was already present.
    pub downloaded: bool,
}

fn registry_error(
    op: &'static str,
    reference: &Reference,
) -> impl FnOnce(oci_client::errors::OciDistributionError) -> Error {
    let reference = reference.to_string();
    move |source| {
        use oci_client::errors::OciDistributionError as E;
        let not_found = match &source {
            E::ImageManifestNotFoundError(_) => true,
            E::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }),
            E::ServerError { code, .. } => *code == 404,
            _ => false,
        };
        Error::Registry {
            op,
            reference,
            source: Box::new(source),
            not_found,
        }
    }
}

/// Whether `domain` (`host[:port]`) is a loopback address, spoken to over HTTP.
pub fn is_insecure_loopback(domain: &str) -> bool {
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => domain.rsplit_once(':').map_or(domain, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn client_for(reference: &Reference) -> oci_client::Client {
    // reqwest is built without a default rustls provider; ring builds everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = if is_insecure_loopback(&reference.domain) {
        ClientProtocol::HttpsExcept(vec![reference.domain.clone()])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        ..ClientConfig::default()
    })
}

fn auth_of(credentials: Option<&Credentials>) -> RegistryAuth {
    match credentials {
        Some(c) if !c.username.is_empty() => {
            RegistryAuth::Basic(c.username.clone(), c.password.clone())
        }
        _ => RegistryAuth::Anonymous,
    }
}

fn oci_reference(reference: &Reference) -> oci_client::Reference {
    match (&reference.digest, &reference.tag) {
        (Some(digest), _) => oci_client::Reference::with_digest(
            reference.domain.clone(),
            reference.path.clone(),
            digest.clone(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            reference.domain.clone(),
            reference.path.clone(),
            tag.clone()
                .unwrap_or_else(|| super::reference::DEFAULT_TAG.to_owned()),
        ),
    }
}

fn send(progress: &UnboundedSender<Progress>, item: Progress) {
    let _ = progress.send(item);
}

/// Pulls `reference` (tag defaults to `latest`) into the store that
/// `store_of(owner)` returns. Blocking work (hashing, unpacking, commit)
/// runs on the blocking pool, hence the owner handle.
pub async fn pull<T: Send + Sync + 'static>(
    owner: Arc<T>,
    store_of: fn(&T) -> &ImageStore,
    reference: &Reference,
    credentials: Option<&Credentials>,
    progress: &UnboundedSender<Progress>,
) -> Result<Pulled, Error> {
    let reference = reference.clone().with_default_tag();
    let client = client_for(&reference);
    let auth = auth_of(credentials);
    let image_ref = oci_reference(&reference);
    let shown_id = reference.tag.clone().or_else(|| reference.digest.clone());
    send(
        progress,
        Progress::status(
            shown_id.as_deref(),
            format!("Pulling from {}", reference.path),
        ),
    );

    let (top_bytes, registry_digest) = client
        .pull_manifest_raw(&image_ref, &auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(registry_error("pull manifest of", &reference))?;
    // The manifest's digest is the hash of its bytes, whatever the registry
    // says; a digest the registry or the reference names must match it.
    let top_digest = Digest::of(&top_bytes);
    for (what, named) in [
        (
            "manifest (as the reference names it)",
            reference.digest.as_deref(),
        ),
        (
            "manifest (as the registry names it)",
            Some(registry_digest.as_str()),
        ),
    ] {
        if let Some(named) = named.filter(|n| n.starts_with("sha256:")) {
            check_digest(what, &top_digest, named)?;
        }
    }
    let top: OciDocument = archive::parse_json(&top_bytes, &format!("manifest of {reference}"))?;
    let (manifest_bytes, manifest_digest, manifest_type) = match &top.manifests {
        Some(entries) => {
            let entry =
                archive::pick_platform(entries).ok_or_else(|| Error::NoMatchingPlatform {
                    platform: format!("linux/{}", archive::host_architecture()),
                })?;
            let platform_ref = oci_client::Reference::with_digest(
                reference.domain.clone(),
                reference.path.clone(),
                entry.digest.to_string(),
            );
            let (bytes, _) = client
                .pull_manifest_raw(&platform_ref, &auth, ACCEPTED_MANIFESTS)
                .await
                .map_err(registry_error("pull platform manifest of", &reference))?;
            check_digest(
                "platform manifest",
                &Digest::of(&bytes),
                entry.digest.as_str(),
            )?;
            let media_type = if entry.media_type.is_empty() {
                archive::MEDIA_OCI_MANIFEST.to_owned()
            } else {
                entry.media_type.clone()
            };
            (bytes, entry.digest.clone(), media_type)
        }
        None => {
            let media_type = if top.media_type.is_empty() {
                archive::MEDIA_OCI_MANIFEST.to_owned()
            } else {
                top.media_type.clone()
            };
            (top_bytes.clone(), top_digest.clone(), media_type)
        }
    };
    // Ours checks every digest; the client's drives its requests.
    let what = format!("image manifest of {reference}");
    let document: OciDocument = archive::parse_json(&manifest_bytes, &what)?;
    let manifest: OciImageManifest = archive::parse_json(&manifest_bytes, &what)?;
    let Some(config_descriptor) = &document.config else {
        return Err(Error::InvalidArchive(format!("{what} has no config")));
    };

    let store = store_of(&owner);
    let name = reference
        .familiar_digested()
        .unwrap_or_else(|| reference.familiar_tagged());
    let repo_digest = format!("{}@{top_digest}", reference.familiar_name());
    let image_id = config_descriptor.digest.clone();
    let already = store.get(image_id.as_str()).ok();
    let mut staging = store.stage()?;

    let mut config_bytes = Vec::new();
    client
        .pull_blob(&image_ref, &manifest.config, &mut config_bytes)
        .await
        .map_err(registry_error("pull config of", &reference))?;
    staging.write_blob(&config_bytes[..], Some(&image_id))?;
    staging.write_blob(&manifest_bytes[..], Some(&manifest_digest))?;
    let config: super::ImageConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|source| Error::InvalidJson {
            what: format!("config of {reference}"),
            source,
        })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidArchive(format!(
            "{reference}: config and manifest disagree on the layer count"
        )));
    }

    if document.layers.len() != manifest.layers.len() {
        return Err(Error::InvalidArchive(format!(
            "{reference}: the manifest's layers parse differently"
        )));
    }
    let mut fetched: Vec<(Digest, PathBuf)> = Vec::new();
    for (i, (layer, ours)) in manifest.layers.iter().zip(&document.layers).enumerate() {
        let short = ours.digest.short().to_owned();
        if store.has_blob(&ours.digest) {
            send(progress, Progress::status(Some(&short), "Already exists"));
            continue;
        }
        send(progress, Progress::status(Some(&short), "Pulling fs layer"));
        let path = staging.dir().join(format!("download-{i}"));
        download(&client, &image_ref, layer, &path, &short, progress)
            .await
            .map_err(|e| match e {
                DownloadError::Registry(source) => {
                    registry_error("pull layer of", &reference)(source)
                }
                DownloadError::Io(source) => Error::io("write layer download", &path)(source),
            })?;
        send(
            progress,
            Progress::status(Some(&short), "Download complete"),
        );
        fetched.push((ours.digest.clone(), path));
    }

    let descriptors = document.layers;
    let new_image = NewImage {
        id: image_id.clone(),
        layers: Vec::new(),
        manifest: Some(Descriptor {
            media_type: manifest_type,
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
        }),
        tags: if reference.digest.is_none() {
            vec![reference.familiar_tagged()]
        } else {
            Vec::new()
        },
        digests: vec![repo_digest],
    };
    let progress_done = progress.clone();
    let owner_blocking = owner.clone();
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let store = store_of(&owner_blocking);
        for (digest, path) in fetched {
            let file =
                fs_err::File::open(&path).map_err(Error::io("open layer download", &path))?;
            let mut hashing = HashingReader::new(std::io::BufReader::new(file));
            std::io::copy(&mut hashing, &mut std::io::sink())
                .map_err(Error::io("read layer download", &path))?;
            let (actual, _) = hashing.finish();
            if actual != digest {
                return Err(Error::DigestMismatch {
                    what: "layer download".to_owned(),
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            staging.adopt_blob(digest, path);
        }
        let mut layers = Vec::new();
        for (descriptor, diff_id) in descriptors.iter().zip(&config.rootfs.diff_ids) {
            let size = store.stage_layer(&mut staging, &descriptor.digest, diff_id)?;
            layers.push(LayerRecord {
                diff_id: diff_id.clone(),
                blob: Descriptor {
                    media_type: descriptor.media_type.clone(),
                    digest: descriptor.digest.clone(),
                    size: descriptor.size,
                },
                size,
            });
            send(
                &progress_done,
                Progress::status(Some(descriptor.digest.short()), "Pull complete"),
            );
        }
        store.commit(
            &staging,
            &[NewImage {
                layers,
                ..new_image
            }],
        )
    })
    .await
    .map_err(|e| Error::Io {
        op: "run pull task for",
        path: PathBuf::from(&name),
        source: std::io::Error::other(e),
    })??;

    send(
        progress,
        Progress::status(None, format!("Digest: {top_digest}")),
    );
    let downloaded = !already.is_some_and(|a| a.repo_tags.contains(&name));
    let status = if downloaded {
        format!("Status: Downloaded newer image for {name}")
    } else {
        format!("Status: Image is up to date for {name}")
    };
    send(progress, Progress::status(None, status));
    Ok(Pulled {
        id: image_id.to_string(),
        name,
        downloaded,
    })
}

/// Checks `actual` against `named`, which must itself be a valid digest.
fn check_digest(what: &str, actual: &Digest, named: &str) -> Result<(), Error> {
    let named = Digest::parse(named).map_err(|source| Error::InvalidDigest {
        what: what.to_owned(),
        source,
    })?;
    if named != *actual {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: named.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

enum DownloadError {
    Registry(oci_client::errors::OciDistributionError),
    Io(std::io::Error),
}

async fn download(
    client: &oci_client::Client,
    image_ref: &oci_client::Reference,
    layer: &ClientDescriptor,
    path: &std::path::Path,
    short: &str,
    progress: &UnboundedSender<Progress>,
) -> Result<(), DownloadError> {
    let mut stream = client
        .pull_blob_stream(image_ref, layer)
        .await
        .map_err(DownloadError::Registry)?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(DownloadError::Io)?;
    let total = stream
        .content_length
        .unwrap_or(u64::try_from(layer.size).unwrap_or(0));
    let (mut current, mut reported) = (0u64, 0u64);
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(DownloadError::Io)?;
        file.write_all(&chunk).await.map_err(DownloadError::Io)?;
        current += chunk.len() as u64;
        if current - reported >= PROGRESS_EVERY || current == total {
            reported = current;
            send(
                progress,
                Progress::Bytes {
                    id: short.to_owned(),
                    action: "Downloading",
                    current,
                    total,
                },
            );
        }
    }
    file.sync_all().await.map_err(DownloadError::Io)?;
    Ok(())
}

/// Pushes the image `local` resolves to as `target` (`repo:tag`).
pub async fn push(
    store: &ImageStore,
    local: &str,
    target: &Reference,
    credentials: Option<&Credentials>,
    progress: &UnboundedSender<Progress>,
) -> Result<String, Error> {
    let target = target.clone().with_default_tag();
    let image = store.get(local)?;
    let client = client_for(&target);
    let auth = auth_of(credentials);
    let image_ref = oci_reference(&target);
    send(
        progress,
        Progress::status(
            None,
            format!("The push refers to repository [{}]", target.familiar_name()),
        ),
    );
    client
        .auth(&image_ref, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(registry_error("authenticate for", &target))?;
    for layer in image.layers.iter().rev() {
        let short = layer.blob.digest.short().to_owned();
        let exists = client
            .blob_exists(&image_ref, layer.blob.digest.as_str())
            .await
            .unwrap_or(false);
        if exists {
            send(
                progress,
                Progress::status(Some(&short), "Layer already exists"),
            );
            continue;
        }
        send(progress, Progress::status(Some(&short), "Preparing"));
        let path = store.blob_path(&layer.blob.digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(Error::io("read layer blob", &path))?;
        client
            .push_blob(&image_ref, bytes, layer.blob.digest.as_str())
            .await
            .map_err(registry_error("push layer to", &target))?;
        send(progress, Progress::status(Some(&short), "Pushed"));
    }
    let config = store.config_bytes(image.digest())?;
    if !client
        .blob_exists(&image_ref, &image.id)
        .await
        .unwrap_or(false)
    {
        client
            .push_blob(&image_ref, config.clone(), &image.id)
            .await
            .map_err(registry_error("push config to", &target))?;
    }
    let (manifest, media_type) = match &image.manifest {
        Some(m) => {
            let path = store.blob_path(&m.digest);
            (
                tokio::fs::read(&path)
                    .await
                    .map_err(Error::io("read manifest", &path))?,
                m.media_type.clone(),
            )
        }
        None => (
            archive::generated_manifest(&image, config.len() as u64),
            archive::MEDIA_OCI_MANIFEST.to_owned(),
        ),
    };
    let digest = Digest::of(&manifest);
    let content_type = http::HeaderValue::from_str(&media_type).map_err(|_| {
        Error::InvalidArchive(format!(
            "manifest media type {media_type:?} is not a header value"
        ))
    })?;
    let size = manifest.len();
    client
        .push_manifest_raw(&image_ref, manifest, content_type)
        .await
        .map_err(registry_error("push manifest to", &target))?;
    store.add_digest(
        image.digest(),
        &format!("{}@{digest}", target.familiar_name()),
    )?;
    send(
        progress,
        Progress::status(
            None,
            format!("{}: digest: {digest} size: {size}", target.tag_or_latest()),
        ),
    );
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_and_others_are_not() {
        assert!(is_insecure_loopback("localhost:5000"));
        assert!(is_insecure_loopback("127.0.0.1:5000"));
        assert!(is_insecure_loopback("127.1.2.3"));
        assert!(is_insecure_loopback("[::1]:5000"));
        assert!(!is_insecure_loopback("docker.io"));
        assert!(!is_insecure_loopback("10.0.0.1:5000"));
        assert!(!is_insecure_loopback("localhost.example.com"));
    }
}
