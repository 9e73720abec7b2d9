//! OCI index and manifest documents, as read from archives and registries.
//!
//! Every digest field is a [`Digest`]: a document naming anything else
//! (`sha256:/etc/passwd`, `sha256:../x`, another algorithm) fails to
//! deserialise, and the error names the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::super::digest::Digest;
use super::super::reference::Reference;
use super::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};

/// An OCI descriptor as found in indexes and manifests.
#[derive(Debug, Clone, Deserialize)]
pub struct OciDescriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
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

/// Parses JSON `bytes` as `T`; an error names `what` and the failing field
/// (`manifests[0].digest`).
pub fn parse_json<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &str,
) -> Result<T, super::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let what = match path.as_str() {
            "" | "." => what.to_owned(),
            _ => format!("{what}, field {path}"),
        };
        super::Error::InvalidJson {
            what,
            source: e.into_inner(),
        }
    })?;
    de.end().map_err(|source| super::Error::InvalidJson {
        what: what.to_owned(),
        source,
    })?;
    Ok(value)
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
pub(super) fn annotated_tag(descriptor: &OciDescriptor) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pick_platform_prefers_this_architecture() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let entries: Vec<OciDescriptor> = serde_json::from_value(json!([
            { "digest": a, "platform": { "os": "linux", "architecture": "s390x" } },
            { "digest": b, "platform": { "os": "linux", "architecture": host_architecture() } },
        ]))
        .unwrap();
        assert_eq!(pick_platform(&entries).unwrap().digest, b);
    }

    #[test]
    fn bad_digest_fails_to_parse_naming_the_field() {
        for bad in ["sha256:/etc/passwd", "sha256:../../x", "md5:abc"] {
            let index = json!({ "schemaVersion": 2, "manifests": [
                { "digest": Digest::of(b"ok"), "size": 2 },
                { "digest": bad, "size": 2 },
            ]});
            let err =
                parse_json::<OciDocument>(index.to_string().as_bytes(), "index.json").unwrap_err();
            let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(
                text.contains("index.json, field manifests[1].digest"),
                "{text}"
            );
            assert!(text.contains(bad), "{text}");
        }
    }
}
