//! Test images built from Debian's `busybox-static` (`/bin/busybox`).
//!
//! There is no Docker Hub here, so the tests make their own images:
//!
//! * [`busybox`]: one layer, busybox plus a symlink per applet, `/etc/passwd`
//!   with `root`, `user` (1000) and `nobody`, `/etc/group`, `/tmp`.
//! * [`layered`]: busybox plus two layers exercising a whiteout file, a
//!   whiteout directory and an opaque directory under `/data`.
//! * [`malicious`]: busybox plus one crafted layer trying to escape.
//!
//! Each [`TestImage`] is written as a docker-archive tar (uncompressed
//! layers, like `docker save`) or an OCI layout tar (gzip layers, with
//! `io.containerd.image.name` annotations). Every mtime is fixed, so the
//! image IDs are stable from run to run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The mtime of every entry (2024-01-01T00:00:00Z).
pub const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
/// Where the busybox binary comes from (`apt-get install busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Builds one layer tar, entry by entry, with fixed metadata.
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header
    }

    /// Appends with `path` written verbatim (the tar crate refuses `..`,
    /// which the crafted layers need).
    fn raw(
        &mut self,
        mut header: tar::Header,
        path: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        assert!(
            path.len() < 100,
            "test layer paths stay under 100 bytes: {path}"
        );
        let old = header.as_old_mut();
        old.name.fill(0);
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            assert!(
                link.len() < 100,
                "test link targets stay under 100 bytes: {link}"
            );
            old.linkname.fill(0);
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("appending to an in-memory tar");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.owned_dir(path, mode, 0)
    }

    pub fn owned_dir(&mut self, path: &str, mode: u32, owner: u64) -> &mut Self {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        header.set_uid(owner);
        header.set_gid(owner);
        self.raw(header, path, None, &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let header = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.raw(header, path, None, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.raw(header, path, Some(target), &[])
    }

    /// A character device node (`mknod path c major minor`).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(tar::EntryType::Char, mode, 0);
        header
            .set_device_major(major)
            .expect("a GNU header has device fields");
        header
            .set_device_minor(minor)
            .expect("a GNU header has device fields");
        self.raw(header, path, None, &[])
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let header = Self::header(tar::EntryType::Link, 0o644, 0);
        self.raw(header, path, Some(target), &[])
    }

    /// A chain of `links` symlinks: `name` -> `/name1` -> ... ->
    /// `/name<links-1>` -> `target`. The kernel follows at most 40 links, so
    /// 41 links ending at a host path is the longest chain whose last hop a
    /// resolver that gives up after 40 would hand to the kernel as a literal
    /// link (hostile_paths.rs).
    pub fn symlink_chain(&mut self, name: &str, links: usize, target: &str) -> &mut Self {
        for i in 0..links {
            let from = if i == 0 {
                name.to_owned()
            } else {
                format!("{name}{i}")
            };
            let to = if i + 1 == links {
                target.to_owned()
            } else {
                format!("/{name}{}", i + 1)
            };
            self.symlink(&from, &to);
        }
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        builder.into_inner().expect("finishing an in-memory tar")
    }
}

/// An image: its layers (uncompressed tars, lowest first) and its config.
#[derive(Clone)]
pub struct TestImage {
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
}

impl TestImage {
    /// An image of `layers` with default `Cmd` `cmd`, for this host's
    /// architecture.
    pub fn new(layers: Vec<Vec<u8>>, cmd: &[&str], comment: &str) -> Self {
        Self::for_architecture(layers, cmd, comment, arch())
    }

    /// An image of `layers` for the OCI `architecture` (`amd64`, `arm64`).
    pub fn for_architecture(
        layers: Vec<Vec<u8>>,
        cmd: &[&str],
        comment: &str,
        architecture: &str,
    ) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let history: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, _)| serde_json::json!({ "created": CREATED, "created_by": format!("{comment} layer {i}") }))
            .collect();
        let config = serde_json::json!({
            "architecture": architecture,
            "os": "linux",
            "created": CREATED,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
                "Labels": { "org.berth.test": comment },
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        });
        Self {
            layers,
            config: serde_json::to_vec(&config).expect("serializing a config"),
        }
    }

    /// This image with `Volumes` (image `VOLUME`s) set to `volumes`.
    #[must_use]
    pub fn with_volumes(mut self, volumes: &[&str]) -> Self {
        let mut config: serde_json::Value =
            serde_json::from_slice(&self.config).expect("test configs are JSON");
        let map: serde_json::Map<String, serde_json::Value> = volumes
            .iter()
            .map(|v| ((*v).to_owned(), serde_json::json!({})))
            .collect();
        config["config"]["Volumes"] = serde_json::Value::Object(map);
        self.config = serde_json::to_vec(&config).expect("serializing a config");
        self
    }

    /// `sha256:<hex>` of the config: the image ID.
    pub fn id(&self) -> String {
        digest(&self.config)
    }

    /// Writes a docker-archive tar (like `docker save` before Docker 25).
    pub fn docker_archive(&self, path: &Path, tags: &[&str]) -> PathBuf {
        let mut tar = LayerBuilder::new();
        let config_name = format!("{}.json", &self.id()[7..]);
        tar.file(&config_name, 0o644, &self.config);
        let mut layer_names = Vec::new();
        for layer in &self.layers {
            let dir = &digest(layer)[7..];
            let name = format!("{dir}/layer.tar");
            tar.dir(&format!("{dir}/"), 0o755).file(&name, 0o644, layer);
            layer_names.push(name);
        }
        let manifest =
            serde_json::json!([{ "Config": config_name, "RepoTags": tags, "Layers": layer_names }]);
        tar.file(
            "manifest.json",
            0o644,
            &serde_json::to_vec(&manifest).expect("manifest serializes"),
        );
        write(path, &tar.finish())
    }

    /// Writes an OCI image layout tar with gzip layers, tagged `tag`.
    pub fn oci_layout(&self, path: &Path, tag: &str) -> PathBuf {
        let mut tar = LayerBuilder::new();
        tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
        tar.dir("blobs/", 0o755).dir("blobs/sha256/", 0o755);
        let mut layer_descriptors = Vec::new();
        for layer in &self.layers {
            let gz = gzip(layer);
            layer_descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest(&gz),
                "size": gz.len(),
            }));
            tar.file(&format!("blobs/sha256/{}", &digest(&gz)[7..]), 0o644, &gz);
        }
        tar.file(
            &format!("blobs/sha256/{}", &self.id()[7..]),
            0o644,
            &self.config,
        );
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.id(), "size": self.config.len() },
            "layers": layer_descriptors,
        }))
        .expect("manifest serializes");
        tar.file(
            &format!("blobs/sha256/{}", &digest(&manifest)[7..]),
            0o644,
            &manifest,
        );
        let (name, short_tag) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let full = if name.contains('/') {
            name.to_owned()
        } else {
            format!("docker.io/library/{name}")
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest(&manifest),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": format!("{full}:{short_tag}"),
                    "org.opencontainers.image.ref.name": short_tag,
                },
            }],
        });
        tar.file(
            "index.json",
            0o644,
            &serde_json::to_vec(&index).expect("index serializes"),
        );
        write(path, &tar.finish())
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.to_owned()
}

/// The applets `busybox --list` names, sorted.
fn applets(busybox: &Path) -> Vec<String> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} --list (apt-get install busybox-static): {e}",
                busybox.display()
            )
        });
    assert!(out.status.success(), "{} --list failed", busybox.display());
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    applets.sort();
    applets
}

/// The busybox root filesystem as one layer.
pub fn busybox_layer() -> Vec<u8> {
    busybox_layer_of(Path::new(BUSYBOX), Path::new(BUSYBOX))
}

/// The busybox root filesystem with `binary` (any architecture) as
/// `/bin/busybox`, and one symlink per applet of `applets_from`, a runnable
/// busybox of the same build.
pub fn busybox_layer_of(binary: &Path, applets_from: &Path) -> Vec<u8> {
    let bytes = std::fs::read(binary).unwrap_or_else(|e| {
        panic!(
            "reading {} (apt-get install busybox-static): {e}",
            binary.display()
        )
    });
    let mut layer = LayerBuilder::new();
    layer.dir("bin/", 0o755).file("bin/busybox", 0o755, &bytes);
    for applet in applets(applets_from) {
        layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer
        .dir("dev/", 0o755)
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n")
        .dir("home/", 0o755)
        .owned_dir("home/user/", 0o755, 1000)
        .dir("proc/", 0o755)
        .dir("root/", 0o700)
        .dir("sys/", 0o755)
        .dir("tmp/", 0o1777)
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .symlink("usr/bin/env", "/bin/busybox")
        .dir("var/", 0o755);
    layer.finish()
}

/// The one-layer busybox image (`Cmd ["sh"]`).
pub fn busybox() -> TestImage {
    TestImage::new(vec![busybox_layer()], &["sh"], "busybox")
}

/// A layer holding host binaries (dynamically linked, x86_64) with every
/// library `ldd` names, at their host paths: real tools from Debian
/// packages (e.g. inotify-tools' `inotifywait`) inside a test image.
pub fn host_binaries_layer(binaries: &[&str]) -> Vec<u8> {
    let mut files: Vec<String> = Vec::new();
    for binary in binaries {
        files.push((*binary).to_owned());
        let out = Command::new("ldd")
            .arg(binary)
            .output()
            .unwrap_or_else(|e| panic!("running ldd {binary}: {e}"));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libx.so => /lib/.../libx.so (0x...)` or `/lib64/ld-linux... (0x...)`
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                files.push(path.to_owned());
            }
        }
    }
    files.sort();
    files.dedup();
    let mut layer = LayerBuilder::new();
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let rel = file.trim_start_matches('/');
        let mut dir = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            dir.push_str(part);
            dir.push('/');
            if dirs.insert(dir.clone()) {
                layer.dir(&dir, 0o755);
            }
        }
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        layer.file(rel, 0o755, &data);
    }
    layer.finish()
}

/// busybox plus real tools from Debian packages, with their libraries:
/// `inotifywait` (inotify-tools) and `socat` (busybox has no UDP server).
pub fn busybox_with_tools() -> TestImage {
    TestImage::new(
        vec![
            busybox_layer(),
            host_binaries_layer(&["/usr/bin/inotifywait", "/usr/bin/socat"]),
        ],
        &["sh"],
        "busybox with inotifywait and socat",
    )
}

/// The one-layer busybox image for arm64, around `binary` (Debian's arm64
/// `busybox-static`); its applet list comes from the host's busybox, which
/// must be the same Debian build (the image builder checks that when it
/// fetches the arm64 one).
pub fn busybox_arm64(binary: &Path) -> TestImage {
    TestImage::for_architecture(
        vec![busybox_layer_of(binary, Path::new(BUSYBOX))],
        &["sh"],
        "busybox",
        "arm64",
    )
}

/// busybox as a docker-archive tar at `dir/busybox.tar`, tagged `tag`.
pub fn busybox_docker_archive(dir: &Path, tag: &str) -> PathBuf {
    busybox().docker_archive(&dir.join("busybox.tar"), &[tag])
}

/// busybox as an OCI layout tar at `dir/busybox-oci.tar`, tagged `tag`.
pub fn busybox_oci_layout(dir: &Path, tag: &str) -> PathBuf {
    busybox().oci_layout(&dir.join("busybox-oci.tar"), tag)
}

/// busybox plus two layers. Layer 2 creates under `/data`: `keep`,
/// `gone` (file), `gone-dir/a`, `opaque/old`. Layer 3 whites out `gone`
/// and `gone-dir`, makes `opaque` opaque and adds `opaque/new`. A container
/// sees `/data/{keep,opaque/new}` only.
pub fn layered() -> TestImage {
    let mut second = LayerBuilder::new();
    second
        .dir("data/", 0o755)
        .file("data/keep", 0o644, b"keep\n")
        .file("data/gone", 0o644, b"gone\n")
        .dir("data/gone-dir/", 0o755)
        .file("data/gone-dir/a", 0o644, b"a\n")
        .dir("data/opaque/", 0o755)
        .file("data/opaque/old", 0o644, b"old\n");
    let mut third = LayerBuilder::new();
    third
        .dir("data/", 0o755)
        .file("data/.wh.gone", 0o644, b"")
        .file("data/.wh.gone-dir", 0o644, b"")
        .dir("data/opaque/", 0o755)
        .file("data/opaque/.wh..wh..opq", 0o644, b"")
        .file("data/opaque/new", 0o644, b"new\n");
    TestImage::new(
        vec![busybox_layer(), second.finish(), third.finish()],
        &["ls", "-a", "/data"],
        "layered",
    )
}

/// [`layered`] as a docker-archive tar at `dir/layered.tar`.
pub fn layered_docker_archive(dir: &Path, tag: &str) -> PathBuf {
    layered().docker_archive(&dir.join("layered.tar"), &[tag])
}

/// [`layered`] as an OCI layout tar at `dir/layered-oci.tar`.
pub fn layered_oci_layout(dir: &Path, tag: &str) -> PathBuf {
    layered().oci_layout(&dir.join("layered-oci.tar"), tag)
}

/// A crafted layer's way out of its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `../../…/<outside>/pwned-dotdot`.
    DotDot,
    /// `evil -> <outside>` (absolute symlink), then `evil/pwned-symlink`.
    AbsoluteSymlink,
    /// `up -> ../../…` (relative symlink climbing out), then `up/<outside>/pwned-relative`.
    RelativeSymlink,
    /// Hardlink `link` to `<outside>/secret` (absolute target).
    HardlinkOut,
    /// Whiteout `../../…/<outside>/.wh.victim`.
    WhiteoutDotDot,
}

impl Escape {
    pub const ALL: [Escape; 5] = [
        Escape::DotDot,
        Escape::AbsoluteSymlink,
        Escape::RelativeSymlink,
        Escape::HardlinkOut,
        Escape::WhiteoutDotDot,
    ];
}

/// Enough `../` to climb from any engine state directory to `/`.
const CLIMB: &str = "../../../../../../../../../../../../";

/// busybox plus one crafted layer that tries `escape` towards `outside`
/// (an absolute directory the test watches; it should hold `secret` and
/// `victim`).
pub fn malicious(escape: Escape, outside: &Path) -> TestImage {
    let outside = outside
        .to_str()
        .expect("utf-8 test path")
        .trim_start_matches('/');
    let mut layer = LayerBuilder::new();
    match escape {
        Escape::DotDot => layer.file(&format!("{CLIMB}{outside}/pwned-dotdot"), 0o644, b"pwned\n"),
        Escape::AbsoluteSymlink => layer.symlink("evil", &format!("/{outside}")).file(
            "evil/pwned-symlink",
            0o644,
            b"pwned\n",
        ),
        Escape::RelativeSymlink => layer.symlink("up", CLIMB.trim_end_matches('/')).file(
            &format!("up/{outside}/pwned-relative"),
            0o644,
            b"pwned\n",
        ),
        Escape::HardlinkOut => layer.hardlink("link", &format!("/{outside}/secret")),
        Escape::WhiteoutDotDot => layer.file(&format!("{CLIMB}{outside}/.wh.victim"), 0o644, b""),
    };
    TestImage::new(vec![busybox_layer(), layer.finish()], &["sh"], "malicious")
}

/// The members of an OCI layout tar before it is written (uncompressed
/// layers, no tag), for tests that make archives lie: a digest naming a host
/// path, a blob replaced by a symlink.
pub struct OciMembers {
    /// Regular files by archive path, in write order.
    pub files: Vec<(String, Vec<u8>)>,
    /// Symlinks: archive path -> target, written after the files.
    pub symlinks: Vec<(String, String)>,
    /// `sha256:<hex>` of the image manifest.
    pub manifest_digest: String,
}

impl OciMembers {
    /// Replaces `index.json` with `index`.
    pub fn set_index(&mut self, index: &serde_json::Value) {
        let bytes = serde_json::to_vec(index).expect("index serializes");
        self.files.retain(|(p, _)| p != "index.json");
        self.files.push(("index.json".to_owned(), bytes));
    }

    /// Drops the regular file `path` and puts a symlink to `target` there.
    pub fn replace_with_symlink(&mut self, path: &str, target: &str) {
        self.files.retain(|(p, _)| p != path);
        self.symlinks.push((path.to_owned(), target.to_owned()));
    }

    /// Writes the tar to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        let mut tar = LayerBuilder::new();
        for (name, bytes) in &self.files {
            tar.file(name, 0o644, bytes);
        }
        for (name, target) in &self.symlinks {
            tar.symlink(name, target);
        }
        write(path, &tar.finish())
    }
}

impl TestImage {
    /// This image's OCI layout members (see [`OciMembers`]).
    pub fn oci_members(&self) -> OciMembers {
        let blob = |bytes: &[u8]| format!("blobs/sha256/{}", &digest(bytes)[7..]);
        let mut files = vec![(
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        )];
        let mut layers = Vec::new();
        for layer in &self.layers {
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(layer),
                "size": layer.len(),
            }));
            files.push((blob(layer), layer.clone()));
        }
        files.push((blob(&self.config), self.config.clone()));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": self.id(), "size": self.config.len() },
            "layers": layers,
        }))
        .expect("manifest serializes");
        let manifest_digest = digest(&manifest);
        files.push((blob(&manifest), manifest.clone()));
        let mut members = OciMembers {
            files,
            symlinks: Vec::new(),
            manifest_digest: manifest_digest.clone(),
        };
        members.set_index(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
            }],
        }));
        members
    }
}

/// busybox plus one layer holding `/who` with `who` in it (images that
/// differ only in their top layer).
pub fn busybox_with_file(who: &str) -> TestImage {
    let mut layer = LayerBuilder::new();
    layer.file("who", 0o644, who.as_bytes());
    TestImage::new(vec![busybox_layer(), layer.finish()], &["cat", "/who"], who)
}

/// busybox plus one layer of `size` pseudo-random bytes (`/big`): an
/// archive that takes a while to load.
pub fn busybox_with_big_file(size: usize) -> TestImage {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut layer = LayerBuilder::new();
    layer.file("big", 0o644, &data);
    TestImage::new(vec![busybox_layer(), layer.finish()], &["sh"], "big")
}
