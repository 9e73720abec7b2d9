//! The Virtualization.framework backend (macOS).
//!
//! Split in two so that most of it is tested on every OS:
//!
//! * [`plan`]: pure. Turns a [`VmSpec`](crate::VmSpec) into the list of
//!   devices the VM gets and checks it; unit-tested on Linux.
//! * `macos` (only on macOS): the FFI half on `objc2-virtualization`. It
//!   translates a plan into `VZ*Configuration` objects, owns the
//!   `VZVirtualMachine`, and implements [`Driver`](crate::Driver) and
//!   [`VsockDialer`](berth_forward::VsockDialer). CI type-checks it with
//!   `cargo clippy --target aarch64-apple-darwin`; it has not been run.
//!
//! Threading: every VZ object is created, used and released on one serial
//! dispatch queue, which is also where the framework calls back (completion
//! handlers, delegates). [`VzDriver`] is a `Send` handle that submits
//! closures to that queue and awaits their answers over channels.

pub mod plan;

#[cfg(target_os = "macos")]
mod macos;

#[cfg(target_os = "macos")]
pub use macos::{VzDialer, VzDriver};

/// Opens the vz driver for `state_dir` (macOS).
#[cfg(target_os = "macos")]
pub(crate) fn open(state_dir: &std::path::Path) -> crate::Result<crate::AnyDriver> {
    Ok(crate::AnyDriver::Vz(VzDriver::new(state_dir)))
}

/// Refuses the vz driver where Virtualization.framework does not exist.
#[cfg(not(target_os = "macos"))]
pub(crate) fn open(_state_dir: &std::path::Path) -> crate::Result<crate::AnyDriver> {
    Err(crate::Error::Unsupported {
        driver: "vz",
        os: std::env::consts::OS,
    })
}
