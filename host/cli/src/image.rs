//! Finding the guest image: `$BERTH_IMAGE_DIR`, else the image built in
//! this source checkout (built on first use).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use berth_vm_images::{BuildOptions, GuestArch, Image};

use crate::env;

/// The image to boot; builds it from the source checkout when missing.
pub(crate) fn find() -> Result<Image> {
    if let Some(dir) = std::env::var_os(env::BERTH_IMAGE_DIR) {
        let dir = PathBuf::from(dir);
        return Image::in_dir(&dir)
            .with_context(|| format!("${} = {}", env::BERTH_IMAGE_DIR, dir.display()));
    }
    let Some(workspace) = berth_vm_images::source_checkout() else {
        bail!(
            "no guest image: set ${} to a directory with vmlinux (or Image) and initramfs.cpio.zst",
            env::BERTH_IMAGE_DIR
        );
    };
    let arch = GuestArch::host();
    match berth_vm_images::current_for(&berth_vm_images::default_out_dir(&workspace), arch) {
        Ok(image) => Ok(image),
        Err(_) => build_from_checkout(None, arch),
    }
}

/// Builds (or finds up to date) the `arch` image of this source checkout.
pub(crate) fn build_from_checkout(agent: Option<PathBuf>, arch: GuestArch) -> Result<Image> {
    let Some(workspace) = berth_vm_images::source_checkout() else {
        bail!("not running from a berth source checkout; cannot build the guest image");
    };
    let mut opts = BuildOptions::for_checkout(&workspace);
    opts.agent = agent;
    opts.arch = arch;
    let image = berth_vm_images::build(&opts, &mut |step| eprintln!("berth: image: {step}"))
        .context("building the guest image")?;
    eprintln!("berth: image: {}", image.dir.display());
    Ok(image)
}
