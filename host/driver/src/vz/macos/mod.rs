//! The Virtualization.framework driver proper (macOS only).
//!
//! Type-checked by CI for `aarch64-apple-darwin`; never run there. See the
//! parent module for the split and the threading model: every VZ object is
//! in a [`Machine`] inside an [`OnQueue`] cell on one serial dispatch queue,
//! and [`VzDriver`] / [`VzDialer`] only submit closures to it.
#![allow(
    unsafe_code,
    reason = "FFI boundary: Virtualization.framework through objc2"
)]

mod config;
mod delegate;
mod queue;

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_forward::{BoxFuture, VsockDialer, VsockStream};
use block2::RcBlock;
use dispatch2::DispatchQueue;
use objc2::AnyThread;
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2_foundation::NSError;
use objc2_virtualization::{
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketListener, VZVirtualMachine,
};
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};

use self::delegate::{ListenerDelegate, VmDelegate};
use self::queue::OnQueue;
use super::plan::Plan;
use crate::{Arch, Driver, Error, Result, VmSpec};

/// Label of the VM's dispatch queue (seen in crash reports and Instruments).
const QUEUE_LABEL: &str = "dev.berth.vz";
/// How long a hard stop may take before the objects are released anyway.
const HARD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Unix sockets for guest-initiated connections: `<state>/vsock.sock_<port>`,
/// the names vhost-device-vsock uses under QEMU.
const LISTEN_PREFIX: &str = "vsock.sock_";

/// A host port guest connections are joined to, as `listen` recorded it.
#[derive(Clone)]
struct Listener {
    port: u32,
    /// The unix socket `listen` bound.
    path: PathBuf,
    runtime: tokio::runtime::Handle,
}

/// Everything framework-side of one running VM. Lives on its queue.
struct Machine {
    vm: Retained<VZVirtualMachine>,
    socket: Retained<VZVirtioSocketDevice>,
    /// The VM holds its delegate weakly; this keeps it alive.
    _delegate: Retained<VmDelegate>,
    /// Per host port: the listener and its (weakly held) delegate.
    listeners: HashMap<u32, (Retained<VZVirtioSocketListener>, Retained<ListenerDelegate>)>,
}

type SharedMachine = Arc<OnQueue<Machine>>;

impl Machine {
    /// Sets a `VZVirtioSocketListener` for `listener.port` whose delegate
    /// joins guest connections to `listener.path`. On the VM's queue.
    fn listen(&mut self, listener: Listener) {
        let Listener {
            port,
            path,
            runtime,
        } = listener;
        // SAFETY: `new` takes no arguments; on the VM's queue.
        let socket_listener = unsafe { VZVirtioSocketListener::new() };
        let delegate = ListenerDelegate::new(port, path, runtime);
        // SAFETY: the delegate is kept alive in `listeners` with it.
        unsafe { socket_listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate))) };
        // SAFETY: on the VM's queue; replaces any listener on `port`.
        unsafe {
            self.socket
                .setSocketListener_forPort(&socket_listener, port)
        };
        self.listeners.insert(port, (socket_listener, delegate));
    }
}

/// The Virtualization.framework backend.
pub struct VzDriver {
    state_dir: PathBuf,
    machine: Option<SharedMachine>,
    stopped: Option<watch::Receiver<Option<String>>>,
    dialer: Arc<VzDialer>,
}

impl VzDriver {
    /// A driver keeping its sockets in `state_dir`; starts nothing.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            machine: None,
            stopped: None,
            dialer: Arc::new(VzDialer {
                state_dir: state_dir.to_path_buf(),
                state: Mutex::new(DialerState::default()),
            }),
        }
    }

    /// Asks the guest to power off (the virtual power button). Returns why
    /// it could not be asked, if so.
    async fn request_stop(&self) -> Result<(), String> {
        let Some(cell) = &self.machine else {
            return Err("the VM is not running".into());
        };
        let (tx, rx) = oneshot::channel();
        cell.submit(move |slot, _| {
            let result = match slot {
                // SAFETY: on the VM's queue, as the framework requires.
                Some(machine) if unsafe { machine.vm.canRequestStop() } => {
                    // SAFETY: on the VM's queue; the VM can take the request.
                    unsafe { machine.vm.requestStopWithError() }.map_err(|error| describe(&error))
                }
                Some(_) => Err("the VM cannot take a stop request in its current state".into()),
                None => Err("the VM is not running".into()),
            };
            let _ = tx.send(result);
        });
        rx.await
            .map_err(|_| "the VM's queue dropped the request".to_owned())?
    }
}

impl Driver for VzDriver {
    async fn start(&mut self, spec: &VmSpec) -> Result<()> {
        let host = Arch::host().ok_or(Error::Unsupported {
            driver: "vz",
            os: std::env::consts::ARCH,
        })?;
        let plan = Plan::new(spec, Arch::of_kernel_file(&spec.kernel)?, host)?;
        for path in [&spec.initramfs, &spec.disk] {
            std::fs::metadata(path).map_err(|source| Error::Io {
                op: "find",
                path: path.clone(),
                source,
            })?;
        }
        let (stopped_tx, stopped_rx) = watch::channel(None);
        let cell: SharedMachine = OnQueue::new(QUEUE_LABEL);
        let (tx, rx) = oneshot::channel();
        // Ports `listen`ed before the VM existed (the host agent's READY
        // port) get their listeners before the guest can call them.
        let listeners = self.dialer.lock().listeners.clone();
        cell.submit(move |slot, queue| match create(&plan, queue, stopped_tx) {
            Err(err) => {
                let _ = tx.send(Err(err));
            }
            Ok(mut machine) => {
                for listener in listeners {
                    machine.listen(listener);
                }
                let vm = machine.vm.clone();
                *slot = Some(machine);
                let tx = Cell::new(Some(tx));
                let done = RcBlock::new(move |error: *mut NSError| {
                    // SAFETY: the framework passes nil or a valid NSError
                    // that outlives this call.
                    let result = match unsafe { error.as_ref() } {
                        None => Ok(()),
                        Some(error) => Err(Error::Framework {
                            op: "start the VM",
                            message: describe(error),
                        }),
                    };
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(result);
                    }
                });
                // SAFETY: on the VM's queue; the block is copied by the
                // framework and called once, on this queue.
                unsafe { vm.startWithCompletionHandler(&done) };
            }
        });
        self.machine = Some(Arc::clone(&cell));
        self.stopped = Some(stopped_rx);
        self.dialer.lock().machine = Some(cell);
        rx.await.map_err(|_| Error::Framework {
            op: "start the VM",
            message: "the VM's dispatch queue dropped the request".into(),
        })?
    }

    async fn wait(&mut self) -> String {
        let Some(stopped) = self.stopped.as_mut() else {
            return std::future::pending().await;
        };
        match stopped.wait_for(Option::is_some).await {
            Ok(how) => how.clone().unwrap_or_default(),
            Err(_) => "the VM's delegate went away".into(),
        }
    }

    async fn kill(&mut self) {
        let Some(cell) = self.machine.take() else {
            return;
        };
        let (tx, rx) = oneshot::channel::<()>();
        cell.submit(move |slot, _| {
            let Some(machine) = slot.as_ref() else {
                let _ = tx.send(());
                return;
            };
            // SAFETY: on the VM's queue.
            if unsafe { machine.vm.canStop() } {
                let tx = Cell::new(Some(tx));
                let done = RcBlock::new(move |_error: *mut NSError| {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                });
                // SAFETY: on the VM's queue; the VM can stop (macOS 12+:
                // a hard stop, the guest is not asked).
                unsafe { machine.vm.stopWithCompletionHandler(&done) };
            } else {
                let _ = tx.send(());
            }
        });
        if tokio::time::timeout(HARD_STOP_TIMEOUT, rx).await.is_err() {
            tracing::warn!("the VM did not stop within {HARD_STOP_TIMEOUT:?}; releasing it");
        }
        // Release every VZ object on its queue.
        cell.submit(|slot, _| drop(slot.take()));
        *self.dialer.lock() = DialerState::default();
        self.stopped = None;
        remove_listen_sockets(&self.state_dir);
    }

    async fn stop(&mut self, grace: Duration) {
        // The host agent already asked the guest agent over vsock; the power
        // button reaches a guest whose agent no longer answers.
        if let Err(why) = self.request_stop().await {
            tracing::debug!(%why, "no stop request sent");
        }
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            tracing::warn!("the guest did not power off within {grace:?}; stopping it");
        }
        self.kill().await;
    }

    fn dialer(&self) -> Arc<dyn VsockDialer> {
        self.dialer.clone()
    }

    fn describe(&self) -> String {
        "vz (Virtualization.framework)".into()
    }
}

/// Builds the configuration and the VM on `queue`, with its delegate.
fn create(
    plan: &Plan,
    queue: &DispatchQueue,
    stopped: watch::Sender<Option<String>>,
) -> Result<Machine> {
    let configuration = config::build(plan)?;
    // SAFETY: a validated configuration and the serial queue this closure
    // runs on, which from now on is the only place the VM is touched.
    let vm = unsafe {
        VZVirtualMachine::initWithConfiguration_queue(
            VZVirtualMachine::alloc(),
            &configuration,
            queue,
        )
    };
    let delegate = VmDelegate::new(stopped);
    // SAFETY: on the VM's queue; the delegate is kept alive by `Machine`.
    unsafe { vm.setDelegate(Some(ProtocolObject::from_ref(&*delegate))) };
    // SAFETY: on the VM's queue.
    let devices = unsafe { vm.socketDevices() };
    let socket = devices
        .firstObject()
        .and_then(|device| device.downcast::<VZVirtioSocketDevice>().ok())
        .ok_or(Error::Framework {
            op: "find the VM's virtio socket device",
            message: "the VM has none".into(),
        })?;
    Ok(Machine {
        vm,
        socket,
        _delegate: delegate,
        listeners: HashMap::new(),
    })
}

/// The text of an NSError, for errors that leave the queue.
fn describe(error: &NSError) -> String {
    error.localizedDescription().to_string()
}

/// Takes a connection's socket: a duplicate the caller owns, after which
/// the connection's own descriptor is closed.
fn take_fd(connection: &VZVirtioSocketConnection) -> io::Result<OwnedFd> {
    // SAFETY: reading a property of a live connection.
    let raw = unsafe { connection.fileDescriptor() };
    if raw < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the vsock connection is already closed",
        ));
    }
    // SAFETY: `raw` is the connection's open descriptor, which stays open
    // until `close` below; it is only borrowed for `dup`.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let owned = nix::unistd::dup(borrowed).map_err(io::Error::from)?;
    // SAFETY: closes the connection's descriptor, not our duplicate.
    unsafe { connection.close() };
    Ok(owned)
}

/// A tokio stream over a connected vsock socket descriptor.
fn stream_from_fd(fd: OwnedFd) -> io::Result<VsockStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    VsockStream::from_std(stream)
}

fn listen_socket(state_dir: &Path, port: u32) -> PathBuf {
    state_dir.join(format!("{LISTEN_PREFIX}{port}"))
}

fn remove_listen_sockets(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(LISTEN_PREFIX))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Dials guest ports through the VM's `VZVirtioSocketDevice`, and accepts
/// guest connections through `VZVirtioSocketListener`s.
pub struct VzDialer {
    state_dir: PathBuf,
    state: Mutex<DialerState>,
}

#[derive(Default)]
struct DialerState {
    /// The running VM, set by `start` and cleared by `kill`.
    machine: Option<SharedMachine>,
    /// Every port `listen`ed since the last `kill`, so that a VM started
    /// after the call gets its listeners too.
    listeners: Vec<Listener>,
}

impl VzDialer {
    fn lock(&self) -> std::sync::MutexGuard<'_, DialerState> {
        // Every update of the state is a single assignment or push; a panic
        // elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn running(&self) -> io::Result<SharedMachine> {
        self.lock()
            .machine
            .clone()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the VM is not running"))
    }
}

impl VsockDialer for VzDialer {
    fn dial(&self, port: u32) -> BoxFuture<'_, io::Result<VsockStream>> {
        let cell = self.running();
        Box::pin(async move {
            let cell = cell?;
            let (tx, rx) = oneshot::channel::<io::Result<OwnedFd>>();
            cell.submit(move |slot, _| {
                let Some(machine) = slot.as_ref() else {
                    let _ = tx.send(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "the VM is not running",
                    )));
                    return;
                };
                let tx = Cell::new(Some(tx));
                let done = RcBlock::new(
                    move |connection: *mut VZVirtioSocketConnection, error: *mut NSError| {
                        // SAFETY: the framework passes nil or objects valid
                        // for the duration of this call.
                        let (connection, error) = unsafe { (connection.as_ref(), error.as_ref()) };
                        let result = match (connection, error) {
                            (Some(connection), _) => take_fd(connection),
                            (None, Some(error)) => Err(io::Error::new(
                                io::ErrorKind::ConnectionRefused,
                                format!("guest vsock port {port}: {}", describe(error)),
                            )),
                            (None, None) => Err(io::Error::other(format!(
                                "guest vsock port {port}: no connection and no error"
                            ))),
                        };
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(result);
                        }
                    },
                );
                // SAFETY: on the VM's queue; the block is copied by the
                // framework and called once, on this queue.
                unsafe { machine.socket.connectToPort_completionHandler(port, &done) };
            });
            let fd = rx.await.map_err(|_| {
                io::Error::other("the VM's dispatch queue dropped the connect request")
            })??;
            stream_from_fd(fd)
        })
    }

    /// Binds `<state>/vsock.sock_<port>` and joins every guest connection to
    /// host `port` to it. Works before `start` too: the listener is set up
    /// on the VM as soon as it exists.
    fn listen(&self, port: u32) -> io::Result<UnixListener> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let path = listen_socket(&self.state_dir, port);
        let _ = std::fs::remove_file(&path);
        let socket = UnixListener::bind(&path)?;
        let listener = Listener {
            port,
            path,
            runtime,
        };
        let mut state = self.lock();
        state.listeners.retain(|known| known.port != port);
        state.listeners.push(listener.clone());
        if let Some(cell) = state.machine.clone() {
            cell.submit(move |slot, _| {
                if let Some(machine) = slot.as_mut() {
                    machine.listen(listener);
                }
            });
        }
        Ok(socket)
    }
}
