//! A [`Plan`] as a `VZVirtualMachineConfiguration`, one device at a time.
//!
//! Runs on the VM's queue (every object made here belongs to it). Nothing is
//! decided here: the device list, order and checks come from the plan.

use std::path::Path;

use objc2::AnyThread;
use objc2::rc::Retained;
use objc2_foundation::{NSArray, NSString, NSURL};
use objc2_virtualization::{
    VZDirectorySharingDeviceConfiguration, VZDiskImageCachingMode,
    VZDiskImageStorageDeviceAttachment, VZDiskImageSynchronizationMode,
    VZEntropyDeviceConfiguration, VZFileSerialPortAttachment, VZGenericPlatformConfiguration,
    VZLinuxBootLoader, VZMemoryBalloonDeviceConfiguration, VZNATNetworkDeviceAttachment,
    VZNetworkDeviceConfiguration, VZSerialPortConfiguration, VZSharedDirectory,
    VZSingleDirectoryShare, VZSocketDeviceConfiguration, VZStorageDeviceConfiguration,
    VZVirtioBlockDeviceConfiguration, VZVirtioConsoleDeviceSerialPortConfiguration,
    VZVirtioEntropyDeviceConfiguration, VZVirtioFileSystemDeviceConfiguration,
    VZVirtioNetworkDeviceConfiguration, VZVirtioSocketDeviceConfiguration,
    VZVirtioTraditionalMemoryBalloonDeviceConfiguration, VZVirtualMachineConfiguration,
};

use super::describe;
use crate::vz::plan::{Device, Plan};
use crate::{Error, Result};

/// The configuration for `plan`, validated by the framework.
pub(super) fn build(plan: &Plan) -> Result<Retained<VZVirtualMachineConfiguration>> {
    // SAFETY: class methods without arguments; they read host limits.
    let limits = unsafe {
        (
            (
                VZVirtualMachineConfiguration::minimumAllowedCPUCount(),
                VZVirtualMachineConfiguration::maximumAllowedCPUCount(),
            ),
            (
                VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
                VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
            ),
        )
    };
    plan.check_limits(limits.0, limits.1)?;

    // SAFETY: `new` makes an empty configuration; it takes no arguments.
    let config = unsafe { VZVirtualMachineConfiguration::new() };
    let boot_loader = boot_loader(plan)?;
    // SAFETY: a fully initialised Linux boot loader, as the setter expects.
    unsafe { config.setBootLoader(Some(&boot_loader)) };
    // SAFETY: the generic platform (macOS 12+) is the one for Linux guests.
    let platform = unsafe { VZGenericPlatformConfiguration::new() };
    // SAFETY: a fully initialised platform configuration.
    unsafe { config.setPlatform(&platform) };
    // SAFETY: plain setters; the values were checked against the limits.
    unsafe { config.setCPUCount(plan.cpus) };
    // SAFETY: as above.
    unsafe { config.setMemorySize(plan.memory_bytes) };

    let mut storage: Vec<Retained<VZStorageDeviceConfiguration>> = Vec::new();
    let mut sockets: Vec<Retained<VZSocketDeviceConfiguration>> = Vec::new();
    let mut shares: Vec<Retained<VZDirectorySharingDeviceConfiguration>> = Vec::new();
    let mut networks: Vec<Retained<VZNetworkDeviceConfiguration>> = Vec::new();
    let mut serial: Vec<Retained<VZSerialPortConfiguration>> = Vec::new();
    let mut entropy: Vec<Retained<VZEntropyDeviceConfiguration>> = Vec::new();
    let mut balloons: Vec<Retained<VZMemoryBalloonDeviceConfiguration>> = Vec::new();
    for device in &plan.devices {
        match device {
            Device::Disk { path, read_only } => storage.push(disk(path, *read_only)?),
            Device::Socket => {
                // SAFETY: `new` takes no arguments.
                let socket = unsafe { VZVirtioSocketDeviceConfiguration::new() };
                sockets.push(Retained::into_super(socket));
            }
            Device::Share { tag, host_path } => shares.push(directory_share(tag, host_path)?),
            Device::NatNetwork => {
                // SAFETY: `new` takes no arguments.
                let nat = unsafe { VZNATNetworkDeviceAttachment::new() };
                // SAFETY: `new` takes no arguments; the framework assigns a
                // random locally administered MAC address.
                let network = unsafe { VZVirtioNetworkDeviceConfiguration::new() };
                // SAFETY: a fully initialised attachment.
                unsafe { network.setAttachment(Some(&nat)) };
                networks.push(Retained::into_super(network));
            }
            Device::SerialConsole { log } => serial.push(serial_console(log)?),
            Device::Entropy => {
                // SAFETY: `new` takes no arguments.
                let device = unsafe { VZVirtioEntropyDeviceConfiguration::new() };
                entropy.push(Retained::into_super(device));
            }
            Device::MemoryBalloon => {
                // SAFETY: `new` takes no arguments.
                let device = unsafe { VZVirtioTraditionalMemoryBalloonDeviceConfiguration::new() };
                balloons.push(Retained::into_super(device));
            }
        }
    }
    // SAFETY: each setter gets an array of fully initialised configurations
    // of the kind it expects.
    unsafe {
        config.setStorageDevices(&NSArray::from_retained_slice(&storage));
    }
    // SAFETY: as above.
    unsafe { config.setSocketDevices(&NSArray::from_retained_slice(&sockets)) };
    // SAFETY: as above.
    unsafe { config.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares)) };
    // SAFETY: as above.
    unsafe { config.setNetworkDevices(&NSArray::from_retained_slice(&networks)) };
    // SAFETY: as above.
    unsafe { config.setSerialPorts(&NSArray::from_retained_slice(&serial)) };
    // SAFETY: as above.
    unsafe { config.setEntropyDevices(&NSArray::from_retained_slice(&entropy)) };
    // SAFETY: as above.
    unsafe { config.setMemoryBalloonDevices(&NSArray::from_retained_slice(&balloons)) };

    // SAFETY: validation only reads the configuration.
    unsafe { config.validateWithError() }.map_err(|error| Error::Framework {
        op: "validate the VM configuration",
        message: describe(&error),
    })?;
    Ok(config)
}

fn file_url(what: &'static str, path: &Path) -> Result<Retained<NSURL>> {
    NSURL::from_file_path(path).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "the {what} path {} is not a valid file URL",
            path.display()
        ))
    })
}

fn boot_loader(plan: &Plan) -> Result<Retained<VZLinuxBootLoader>> {
    let kernel = file_url("kernel", &plan.kernel)?;
    let initramfs = file_url("initramfs", &plan.initramfs)?;
    // SAFETY: a file URL, as `initWithKernelURL:` expects.
    let loader =
        unsafe { VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &kernel) };
    // SAFETY: a file URL.
    unsafe { loader.setInitialRamdiskURL(Some(&initramfs)) };
    // SAFETY: any string is a valid command line.
    unsafe { loader.setCommandLine(&NSString::from_str(&plan.cmdline)) };
    Ok(loader)
}

fn disk(path: &Path, read_only: bool) -> Result<Retained<VZStorageDeviceConfiguration>> {
    let url = file_url("disk", path)?;
    // SAFETY: a file URL and valid caching/synchronization constants
    // (macOS 12+). Cached + fsync is Lima's choice for raw images.
    let attachment = unsafe {
        VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_cachingMode_synchronizationMode_error(
            VZDiskImageStorageDeviceAttachment::alloc(),
            &url,
            read_only,
            VZDiskImageCachingMode::Cached,
            VZDiskImageSynchronizationMode::Fsync,
        )
    }
    .map_err(|error| Error::Framework {
        op: "attach the data disk",
        message: format!("{}: {}", path.display(), describe(&error)),
    })?;
    // SAFETY: a fully initialised attachment.
    let block = unsafe {
        VZVirtioBlockDeviceConfiguration::initWithAttachment(
            VZVirtioBlockDeviceConfiguration::alloc(),
            &attachment,
        )
    };
    Ok(Retained::into_super(block))
}

fn directory_share(
    tag: &str,
    host_path: &Path,
) -> Result<Retained<VZDirectorySharingDeviceConfiguration>> {
    let url = NSURL::from_directory_path(host_path).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "share {tag:?}: {} is not a valid directory URL",
            host_path.display()
        ))
    })?;
    let ns_tag = NSString::from_str(tag);
    // SAFETY: validation of a string; no other input.
    unsafe { VZVirtioFileSystemDeviceConfiguration::validateTag_error(&ns_tag) }
        .map_err(|error| Error::InvalidSpec(format!("share tag {tag:?}: {}", describe(&error))))?;
    // SAFETY: a directory URL; exported writable (see `Device::Share`).
    let directory =
        unsafe { VZSharedDirectory::initWithURL_readOnly(VZSharedDirectory::alloc(), &url, false) };
    // SAFETY: a fully initialised shared directory.
    let single = unsafe {
        VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &directory)
    };
    // SAFETY: the tag was validated above.
    let device = unsafe {
        VZVirtioFileSystemDeviceConfiguration::initWithTag(
            VZVirtioFileSystemDeviceConfiguration::alloc(),
            &ns_tag,
        )
    };
    // SAFETY: a fully initialised directory share.
    unsafe { device.setShare(Some(&single)) };
    Ok(Retained::into_super(device))
}

fn serial_console(log: &Path) -> Result<Retained<VZSerialPortConfiguration>> {
    let url = file_url("serial log", log)?;
    // SAFETY: a file URL; `append: false` truncates, so the log shows this
    // boot only (as under QEMU).
    let attachment = unsafe {
        VZFileSerialPortAttachment::initWithURL_append_error(
            VZFileSerialPortAttachment::alloc(),
            &url,
            false,
        )
    }
    .map_err(|error| Error::Framework {
        op: "open the serial log",
        message: format!("{}: {}", log.display(), describe(&error)),
    })?;
    // SAFETY: `new` takes no arguments.
    let console = unsafe { VZVirtioConsoleDeviceSerialPortConfiguration::new() };
    // SAFETY: a fully initialised attachment.
    unsafe { console.setAttachment(Some(&attachment)) };
    Ok(Retained::into_super(console))
}
