//! Objective-C delegate classes the framework calls back on the VM's queue.
//!
//! * [`VmDelegate`]: learns that the VM stopped (the guest powered off, or
//!   the framework stopped it on an error) and publishes a description on a
//!   watch channel, which `Driver::wait` awaits.
//! * [`ListenerDelegate`]: accepts guest-initiated vsock connections to one
//!   host port and hands each to the tokio runtime, which connects it to the
//!   unix socket `VsockDialer::listen` bound (the same `<uds>_<port>`
//!   convention as vhost-device-vsock, so forwarders need not care).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use objc2::rc::Retained;
use objc2::runtime::NSObject;
use objc2::{AnyThread, DefinedClass, define_class, msg_send};
use objc2_foundation::{NSError, NSObjectProtocol};
use objc2_virtualization::{
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketListener,
    VZVirtioSocketListenerDelegate, VZVirtualMachine, VZVirtualMachineDelegate,
};
use tokio::sync::watch;

use super::{describe, stream_from_fd, take_fd};

/// State of a [`VmDelegate`].
pub(super) struct VmDelegateIvars {
    stopped: watch::Sender<Option<String>>,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements, and VmDelegate does
    // not implement Drop.
    #[unsafe(super(NSObject))]
    #[name = "BerthVzVmDelegate"]
    #[ivars = VmDelegateIvars]
    pub(super) struct VmDelegate;

    unsafe impl NSObjectProtocol for VmDelegate {}

    unsafe impl VZVirtualMachineDelegate for VmDelegate {
        #[unsafe(method(guestDidStopVirtualMachine:))]
        fn guest_did_stop(&self, _machine: &VZVirtualMachine) {
            self.ivars()
                .stopped
                .send_replace(Some("the guest powered the VM off".into()));
        }

        #[unsafe(method(virtualMachine:didStopWithError:))]
        fn did_stop_with_error(&self, _machine: &VZVirtualMachine, error: &NSError) {
            self.ivars().stopped.send_replace(Some(format!(
                "the VM stopped with an error: {}",
                describe(error)
            )));
        }
    }
);

impl VmDelegate {
    /// A delegate publishing how the VM stopped on `stopped`.
    pub(super) fn new(stopped: watch::Sender<Option<String>>) -> Retained<Self> {
        let this = Self::alloc().set_ivars(VmDelegateIvars { stopped });
        // SAFETY: `init` is NSObject's designated initializer; it takes no
        // arguments and returns the initialized object.
        unsafe { msg_send![super(this), init] }
    }
}

/// State of a [`ListenerDelegate`].
pub(super) struct ListenerIvars {
    port: u32,
    /// The unix socket each accepted connection is joined to.
    path: PathBuf,
    runtime: tokio::runtime::Handle,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements, and ListenerDelegate
    // does not implement Drop.
    #[unsafe(super(NSObject))]
    #[name = "BerthVzListenerDelegate"]
    #[ivars = ListenerIvars]
    pub(super) struct ListenerDelegate;

    unsafe impl NSObjectProtocol for ListenerDelegate {}

    unsafe impl VZVirtioSocketListenerDelegate for ListenerDelegate {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            let ivars = self.ivars();
            match take_fd(connection) {
                Ok(fd) => {
                    let path = ivars.path.clone();
                    ivars.runtime.spawn(join(fd, path, ivars.port));
                    true
                }
                Err(err) => {
                    tracing::warn!(port = ivars.port, %err, "refusing a guest vsock connection");
                    false
                }
            }
        }
    }
);

impl ListenerDelegate {
    /// A delegate joining guest connections to host `port` with the unix
    /// socket at `path`, on `runtime`.
    pub(super) fn new(port: u32, path: PathBuf, runtime: tokio::runtime::Handle) -> Retained<Self> {
        let this = Self::alloc().set_ivars(ListenerIvars {
            port,
            path,
            runtime,
        });
        // SAFETY: `init` is NSObject's designated initializer; it takes no
        // arguments and returns the initialized object.
        unsafe { msg_send![super(this), init] }
    }
}

/// Copies between a guest connection and a fresh connection to `path`
/// until both sides are done.
async fn join(fd: OwnedFd, path: PathBuf, port: u32) {
    let result = async {
        let mut guest = stream_from_fd(fd)?;
        let mut host = tokio::net::UnixStream::connect(&path).await?;
        tokio::io::copy_bidirectional(&mut guest, &mut host).await
    }
    .await;
    if let Err(err) = result {
        tracing::debug!(port, path = %path.display(), %err, "guest vsock connection ended");
    }
}
