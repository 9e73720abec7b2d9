//! Builds berth's guest images (x86_64 and aarch64) from a source checkout.
//!
//! An image is two files, booted directly (no firmware, no bootloader):
//!
//! * the kernel: the pinned Debian cloud kernel ([`kernel::X86_64`],
//!   [`kernel::AARCH64`]); for x86_64 a PVH `vmlinux` uncompressed out of
//!   its bzImage, for aarch64 the arm64 `Image`;
//! * `initramfs.cpio.zst`: the static `berth-agent` as `/init`, busybox (debug
//!   shell, `mke2fs`) and the module closure of
//!   [`GuestArch::modules`].
//!
//! Outputs live in `<out>/image-<hash>/`, where the hash covers every input
//! (architecture, kernel checksum, module list, busybox and agent binaries,
//! this crate's layout version), so an unchanged input set is never rebuilt
//! and a changed one never reuses a stale image. `<out>/current` names the
//! newest x86_64 image, `<out>/current-aarch64` the newest aarch64 one
//! ([`GuestArch::current_file`]). This crate owns the build; it must not
//! depend on any berth runtime crate. See [`arch`] for what differs per
//! architecture.

pub mod arch;
pub mod busybox;
pub mod cpio;
pub mod kernel;
pub mod modules;

pub use arch::GuestArch;

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Bumped whenever the initramfs layout changes without an input changing.
const LAYOUT_VERSION: &str = "berth-initramfs-v1";

/// File names inside an image directory: the kernel is `vmlinux` (x86_64)
/// or `Image` (aarch64), see [`GuestArch::kernel_file`].
pub const KERNEL_FILES: [&str; 2] = ["vmlinux", "Image"];
pub const INITRAMFS_FILE: &str = "initramfs.cpio.zst";

/// What went wrong while building the image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error")]
    Io(#[source] std::io::Error),
    #[error("`{what}` could not be started (is it installed? run vm-images/install-deps.sh)")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{what}` failed ({status}): {stderr}")]
    Command {
        what: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("checksum mismatch for {}: expected {expected}, got {got}", file.display())]
    Checksum {
        file: PathBuf,
        expected: String,
        got: String,
    },
    #[error("unexpected kernel image: {0}")]
    BadKernel(String),
    #[error("{} is missing (apt-get install busybox-static)", .0.display())]
    NoBusybox(PathBuf),
    #[error(
        "{} is not the same busybox build as {} ({banner}); its applet list cannot be taken from the host's",
        foreign.display(),
        host.display()
    )]
    BusyboxMismatch {
        host: PathBuf,
        foreign: PathBuf,
        banner: String,
    },
    #[error("no guest image in {}", .0.display())]
    NotBuilt(PathBuf),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A built guest image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl Image {
    /// The image in `dir`, if a kernel (`vmlinux` or `Image`) and the
    /// initramfs are there.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let initramfs = dir.join(INITRAMFS_FILE);
        KERNEL_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|kernel| kernel.is_file())
            .filter(|_| initramfs.is_file())
            .map(|kernel| Self {
                dir: dir.to_path_buf(),
                kernel,
                initramfs,
            })
            .ok_or_else(|| Error::NotBuilt(dir.to_path_buf()))
    }
}

/// The workspace root of the source checkout this crate was compiled from,
/// if it is still there.
pub fn source_checkout() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .parent()?
        .to_path_buf();
    (root.join("Cargo.toml").is_file() && root.join("guest-agent/agent").is_dir()).then_some(root)
}

/// Where a checkout keeps its built images.
pub fn default_out_dir(workspace: &Path) -> PathBuf {
    workspace.join("target/vm-images")
}

/// The newest x86_64 image built in `out`, if any.
pub fn current(out: &Path) -> Result<Image> {
    current_for(out, GuestArch::X86_64)
}

/// The newest image for `arch` built in `out`, if any.
pub fn current_for(out: &Path, arch: GuestArch) -> Result<Image> {
    let name = fs_err::read_to_string(out.join(arch.current_file()))
        .map_err(|_| Error::NotBuilt(out.to_path_buf()))?;
    Image::in_dir(&out.join(name.trim()))
}

/// Build inputs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Workspace root (for `cargo build` of the agent).
    pub workspace: PathBuf,
    /// Output and cache directory.
    pub out: PathBuf,
    /// A prebuilt static agent to use instead of building one.
    pub agent: Option<PathBuf>,
    /// The host's static busybox: included in x86_64 images, and the source
    /// of the applet list for aarch64 ones (see [`busybox`]).
    pub busybox: PathBuf,
    /// The guest architecture.
    pub arch: GuestArch,
}

impl BuildOptions {
    pub fn for_checkout(workspace: &Path) -> Self {
        Self {
            workspace: workspace.to_path_buf(),
            out: default_out_dir(workspace),
            agent: None,
            busybox: PathBuf::from("/bin/busybox"),
            arch: GuestArch::X86_64,
        }
    }
}

/// Builds the image (or finds it already built) and marks it current.
/// `progress` receives one short line per step.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Image> {
    let arch = opts.arch;
    let pin = arch.kernel_pin();
    let guest_modules = arch.modules();
    if !opts.busybox.is_file() {
        return Err(Error::NoBusybox(opts.busybox.clone()));
    }
    let busybox = match arch {
        GuestArch::X86_64 => opts.busybox.clone(),
        GuestArch::Aarch64 => {
            progress(&format!(
                "fetching busybox-static:arm64 {}",
                busybox::AARCH64.version
            ));
            let foreign = busybox::fetch(&busybox::AARCH64, &opts.out.join("cache"))?;
            busybox::check_same_build(&opts.busybox, &foreign)?;
            foreign
        }
    };
    let agent = match &opts.agent {
        Some(path) => path.clone(),
        None => {
            progress(&format!(
                "building the guest agent (cargo build --release --target {})",
                arch.agent_target()
            ));
            build_agent(&opts.workspace, arch)?
        }
    };
    let agent_sha = kernel::sha256_file(&agent)?;
    let busybox_sha = kernel::sha256_file(&busybox)?;
    let hash = input_hash(&[
        LAYOUT_VERSION,
        arch.name(),
        pin.deb.sha256,
        &guest_modules
            .iter()
            .chain(&["|"])
            .chain(modules::DEFERRED_MODULES)
            .chain(modules::LAZY_MODULES)
            .copied()
            .collect::<Vec<_>>()
            .join(","),
        &busybox_sha,
        &agent_sha,
    ]);
    let name = format!("image-{}", &hash[..16]);
    let dir = opts.out.join(&name);
    if let Ok(image) = Image::in_dir(&dir) {
        progress(&format!("guest image up to date ({name})"));
        mark_current(&opts.out, arch, &name)?;
        return Ok(image);
    }

    // The kernel part depends on the pinned package only.
    let kdir = opts.out.join(format!("kernel-{}", &pin.deb.sha256[..16]));
    let kernel_file = arch.kernel_file();
    let vmlinux = kdir.join(kernel_file);
    let kroot = kdir.join("root");
    if !vmlinux.is_file() || !kroot.join("lib/modules").join(pin.release).is_dir() {
        progress(&format!(
            "fetching kernel {} {}",
            pin.deb.package, pin.deb.version
        ));
        let deb = kernel::fetch(&pin.deb, &opts.out.join("cache"))?;
        kernel::unpack(&deb, &kroot)?;
        let vmlinuz = kroot.join("boot").join(format!("vmlinuz-{}", pin.release));
        let tmp = kdir.join(format!("{kernel_file}.tmp"));
        match arch {
            GuestArch::X86_64 => {
                progress("extracting the PVH vmlinux");
                kernel::extract_vmlinux(&vmlinuz, &kdir, &tmp)?;
            }
            GuestArch::Aarch64 => kernel::copy_arm64_image(&vmlinuz, &tmp)?,
        }
        fs_err::rename(&tmp, &vmlinux).map_err(Error::Io)?;
    }

    progress("assembling the initramfs");
    let staging = opts.out.join(format!("{name}.staging"));
    if staging.exists() {
        fs_err::remove_dir_all(&staging).map_err(Error::Io)?;
    }
    fs_err::create_dir_all(&staging).map_err(Error::Io)?;
    let staged_modules = modules::stage(&kroot, pin.release, &staging, &guest_modules)?;
    let cpio_path = staging.join("initramfs.cpio");
    write_initramfs(
        &cpio_path,
        &Layout {
            staging: &staging,
            staged_modules: &staged_modules,
            guest_modules: &guest_modules,
            agent: &agent,
            busybox: &busybox,
            applets_from: &opts.busybox,
            release: pin.release,
            strip: arch.strip(),
        },
    )?;

    let tmp_dir = opts.out.join(format!("{name}.tmp"));
    if tmp_dir.exists() {
        fs_err::remove_dir_all(&tmp_dir).map_err(Error::Io)?;
    }
    fs_err::create_dir_all(&tmp_dir).map_err(Error::Io)?;
    run(
        Command::new("zstd")
            .args(["-q", "-19", "-T0", "-f"])
            .arg(&cpio_path)
            .arg("-o")
            .arg(tmp_dir.join(INITRAMFS_FILE)),
        "zstd",
    )?;
    if fs_err::hard_link(&vmlinux, tmp_dir.join(kernel_file)).is_err() {
        fs_err::copy(&vmlinux, tmp_dir.join(kernel_file)).map_err(Error::Io)?;
    }
    fs_err::write(tmp_dir.join("kernel.release"), pin.release).map_err(Error::Io)?;
    fs_err::rename(&tmp_dir, &dir).map_err(Error::Io)?;
    fs_err::remove_dir_all(&staging).map_err(Error::Io)?;
    mark_current(&opts.out, arch, &name)?;
    progress(&format!("guest image ready ({name})"));
    Image::in_dir(&dir)
}

fn mark_current(out: &Path, arch: GuestArch, name: &str) -> Result<()> {
    let current = out.join(arch.current_file());
    let tmp = current.with_extension("tmp");
    fs_err::write(&tmp, name).map_err(Error::Io)?;
    fs_err::rename(&tmp, current).map_err(Error::Io)
}

/// Hex sha256 over length-prefixed parts (so `["ab","c"]` != `["a","bc"]`).
pub fn input_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Builds the static guest agent for `arch` and returns its path.
pub fn build_agent(workspace: &Path, arch: GuestArch) -> Result<PathBuf> {
    let target = arch.agent_target();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "-p",
        "berth-guest",
        "--target",
        target,
    ])
    .current_dir(workspace)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    // `cargo run`/`cargo test` hand their own package's variables to the
    // programs they run. ring's build script tracks some of them
    // (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`), so inheriting them would
    // rebuild ring and everything above it whenever the caller changes.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_package_env) {
            cmd.env_remove(key);
        }
    }
    for (key, value) in arch.cross_env() {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    let what = match arch {
        GuestArch::X86_64 => {
            "cargo build -p berth-guest (needs `rustup target add x86_64-unknown-linux-musl` and musl-tools)"
        }
        GuestArch::Aarch64 => {
            "cargo build -p berth-guest (needs `rustup target add aarch64-unknown-linux-musl` and gcc-aarch64-linux-gnu)"
        }
    };
    let status = cmd.status().map_err(|source| Error::Spawn {
        what: what.into(),
        source,
    })?;
    if !status.success() {
        return Err(Error::Command {
            what: what.into(),
            status,
            stderr: "see the cargo output above".into(),
        });
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from);
    Ok(target_dir.join(target).join("release/berth-agent"))
}

/// Whether `key` is one of the variables cargo sets for one package's
/// build script or binary (not configuration such as `CARGO_HOME`).
fn is_package_env(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_MANIFEST_")
        || key.starts_with("CARGO_BIN_")
        || matches!(
            key,
            "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
        )
}

/// What goes into the initramfs besides its fixed skeleton.
struct Layout<'a> {
    staging: &'a Path,
    staged_modules: &'a [PathBuf],
    guest_modules: &'a [&'a str],
    agent: &'a Path,
    busybox: &'a Path,
    /// A runnable busybox of the same build, for `--list-full`.
    applets_from: &'a Path,
    release: &'a str,
    strip: &'a str,
}

fn write_initramfs(path: &Path, layout: &Layout<'_>) -> Result<()> {
    let Layout {
        staging,
        staged_modules,
        guest_modules,
        agent,
        busybox,
        applets_from,
        release,
        strip,
    } = *layout;
    let file = fs_err::File::create(path).map_err(Error::Io)?;
    let mut w = cpio::CpioWriter::new(BufWriter::new(file));
    let io = Error::Io;
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "run",
        "var",
        "var/lib",
        "var/lib/berth",
        "mnt",
        "lib",
        "lib/modules",
    ] {
        w.dir(dir, 0o755).map_err(io)?;
    }
    w.char_device("dev/console", 0o600, 5, 1).map_err(io)?;
    w.char_device("dev/null", 0o666, 1, 3).map_err(io)?;
    w.file("etc/hostname", 0o644, b"berth\n").map_err(io)?;
    w.dir("etc/berth", 0o755).map_err(io)?;
    let module_list = guest_modules.join("\n") + "\n";
    w.file("etc/berth/modules", 0o644, module_list.as_bytes())
        .map_err(io)?;
    let deferred = modules::DEFERRED_MODULES.join("\n") + "\n";
    w.file("etc/berth/modules-deferred", 0o644, deferred.as_bytes())
        .map_err(io)?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io)?;
    w.file("etc/group", 0o644, b"root:x:0:\n").map_err(io)?;
    w.file("init", 0o755, &strip_or_read(strip, agent, staging)?)
        .map_err(io)?;
    w.file("bin/busybox", 0o755, &fs_err::read(busybox).map_err(io)?)
        .map_err(io)?;
    for applet in busybox_applets(applets_from)? {
        if applet != "bin/busybox" && !applet.contains("..") {
            w.symlink(&applet, "/bin/busybox").map_err(io)?;
        }
    }
    // Module tree: directories first, then files (sorted, for reproducibility).
    let mod_root = staging.join("lib/modules").join(release);
    let mut entries = Vec::new();
    collect(&mod_root, &mut entries)?;
    entries.sort();
    w.dir(&format!("lib/modules/{release}"), 0o755)
        .map_err(io)?;
    for entry in entries {
        let rel = entry
            .strip_prefix(staging)
            .expect("invariant: collected under staging");
        let name = rel.to_string_lossy();
        if entry.is_dir() {
            w.dir(&name, 0o755).map_err(io)?;
        } else {
            w.file(&name, 0o644, &fs_err::read(&entry).map_err(io)?)
                .map_err(io)?;
        }
    }
    debug_assert!(staged_modules.iter().all(|m| staging.join(m).is_file()));
    let mut out = w.finish().map_err(io)?;
    std::io::Write::flush(&mut out).map_err(io)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs_err::read_dir(dir).map_err(Error::Io)? {
        let path = entry.map_err(Error::Io)?.path();
        out.push(path.clone());
        if path.is_dir() {
            collect(&path, out)?;
        }
    }
    Ok(())
}

/// The agent binary without symbols when `strip` (for its architecture) is
/// available.
fn strip_or_read(strip: &str, agent: &Path, staging: &Path) -> Result<Vec<u8>> {
    let stripped = staging.join("init.stripped");
    let ok = Command::new(strip)
        .arg("-o")
        .arg(&stripped)
        .arg(agent)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    fs_err::read(if ok { &stripped } else { agent }).map_err(Error::Io)
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = run_output(
        Command::new(busybox).arg("--list-full"),
        "busybox --list-full",
    )?;
    Ok(out.lines().map(str::to_owned).collect())
}

pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<()> {
    run_output(cmd, what).map(drop)
}

pub(crate) fn run_output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            what: what.to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            what: what.to_owned(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_hash_separates_parts() {
        assert_ne!(input_hash(&["ab", "c"]), input_hash(&["a", "bc"]));
    }

    #[test]
    fn package_variables_are_not_passed_to_the_agent_build() {
        for key in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_BIN_EXE_berth",
            "CARGO_CRATE_NAME",
        ] {
            assert!(is_package_env(key), "{key}");
        }
    }

    #[test]
    fn cargo_configuration_is_passed_to_the_agent_build() {
        for key in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO",
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER",
        ] {
            assert!(!is_package_env(key), "{key}");
        }
    }

    #[test]
    fn input_hash_is_stable() {
        assert_eq!(input_hash(&["x"]), input_hash(&["x"]));
    }

    #[test]
    fn current_reports_not_built_in_empty_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(current(dir.path()), Err(Error::NotBuilt(_))));
    }
}
