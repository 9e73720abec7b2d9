//! The runtime helpers: the code that runs in a re-executed, single-threaded
//! copy of the agent binary and turns a resolved spec into a process inside
//! namespaces.
//!
//! ```text
//! engine (tokio) ──spawn──> `berth-agent __berth-shim <spec>`   (the shim)
//!    fd 0-2: container stdio       │ unshare(mnt,uts,ipc,pid,net)
//!    fd 3:   sync pipe  <──────────┤ fork ──> container init (pid 1 in the new pid ns)
//!                                  │            joins cgroups, unshare(cgroup),
//!                                  │            overlay root, /proc, /dev, /sys, mounts,
//!                                  │            pivot_root, masks, user, caps, no_new_privs,
//!                                  │            execve (or: our reaper as pid 1 + fork + execve)
//!                                  └ waits; exits with the container's status (128+signal)
//! ```
//!
//! The sync pipe (fd 3) carries [`Report`] lines: the shim writes the
//! container's host pid, the child writes an error if setup or `execve`
//! fails. The child's copy is close-on-exec, so EOF without an error means
//! the container process is running the user's program.
//!
//! Forking is only sound here because the helper never starts a thread;
//! that is why it is a separate process and not code in the engine.

#![allow(
    unsafe_code,
    reason = "fork, ioctl and fd adoption in the single-threaded runtime helper"
)]

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use crate::fsutil::inroot::proc_fd_path;
use crate::fsutil::{self, Root, tree};

use super::spec::{ContainerSpec, ExecSpec, MountSpec, NetworkSpec, ProcessSpec, Report};

/// argv[1] of the container shim.
pub const SHIM_ARG: &str = "__berth-shim";
/// argv[1] of the exec helper.
pub const EXEC_ARG: &str = "__berth-exec";
/// The fd the engine passes the sync pipe on.
const SYNC_FD: i32 = 3;

/// A failure inside the helper: a message for the API and Docker's exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    code: i32,
}

impl Failure {
    fn setup(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 125,
        }
    }
}

fn sys(what: impl FnOnce() -> String) -> impl FnOnce(nix::Error) -> Failure {
    move |errno| Failure::setup(format!("{}: {}", what(), errno.desc().to_lowercase()))
}

/// Runs a helper if argv asks for one; `None` means "not a helper".
pub fn dispatch() -> Option<ExitCode> {
    let mut args = std::env::args();
    args.next();
    let mode = args.next()?;
    if mode != SHIM_ARG && mode != EXEC_ARG {
        return None;
    }
    let spec_path = args.next()?;
    // SAFETY: the engine always spawns helpers with the sync pipe on fd 3,
    // and nothing else in this fresh process owns that fd.
    let sync = File::from(unsafe { OwnedFd::from_raw_fd(SYNC_FD) });
    let code = if mode == SHIM_ARG {
        shim(&spec_path, sync)
    } else {
        exec_helper(&spec_path, sync)
    };
    Some(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(255),
    ))
}

fn report(sync: &mut File, report: &Report) {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    let _ = sync.write_all(&line);
}

fn read_spec<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::setup(format!("reading runtime spec {path}: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::setup(format!("parsing runtime spec {path}: {e}")))
}

fn join_cgroups(files: &[PathBuf]) -> Result<(), Failure> {
    for file in files {
        std::fs::write(file, "0")
            .map_err(|e| Failure::setup(format!("joining cgroup {}: {e}", file.display())))?;
    }
    Ok(())
}

/// Encodes a wait status as a shell-style exit code.
fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Waits for `child` and returns its exit code.
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    return code;
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return 255,
        }
    }
}

/// The parent side after fork: report the pid, let go of stdio, wait.
fn supervise(child: Pid, mut sync: File) -> i32 {
    report(
        &mut sync,
        &Report::Pid {
            pid: child.as_raw(),
        },
    );
    drop(sync);
    // Our copies of the container's stdio would keep its pipes open after it exits.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard fds of this single-threaded helper;
            // `null` stays open for the duration of the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    wait_for(child)
}

fn shim(spec_path: &str, mut sync: File) -> i32 {
    match shim_setup(spec_path) {
        Ok((spec, flags)) => {
            // SAFETY: this helper process is single-threaded (never starts a
            // thread), so the child may run arbitrary code after fork.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let Err(Failure { message, code }) = container_init(&spec, &mut sync, flags);
                    report(&mut sync, &Report::Error { message, code });
                    // SAFETY: _exit is always safe to call; it skips atexit handlers
                    // that belong to the parent.
                    unsafe { libc::_exit(code) }
                }
                Ok(ForkResult::Parent { child }) => supervise(child, sync),
                Err(errno) => {
                    report(
                        &mut sync,
                        &Report::Error {
                            message: format!("fork: {errno}"),
                            code: 125,
                        },
                    );
                    125
                }
            }
        }
        Err(Failure { message, code }) => {
            report(&mut sync, &Report::Error { message, code });
            code
        }
    }
}

/// Everything the shim does before forking the container's init.
fn shim_setup(spec_path: &str) -> Result<(ContainerSpec, CloneFlags), Failure> {
    let spec: ContainerSpec = read_spec(spec_path)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(sys(|| "setting the parent-death signal".into()))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    let netns = match &spec.network {
        NetworkSpec::None => {
            flags |= CloneFlags::CLONE_NEWNET;
            None
        }
        NetworkSpec::Host => None,
        NetworkSpec::Join { path } => Some(File::open(path).map_err(|e| {
            Failure::setup(format!("opening network namespace {}: {e}", path.display()))
        })?),
    };
    unshare(flags).map_err(sys(|| "creating namespaces".into()))?;
    if let Some(netns) = netns {
        setns(netns, CloneFlags::CLONE_NEWNET)
            .map_err(sys(|| "joining the network namespace".into()))?;
    }
    Ok((spec, flags))
}

/// The container's first process: builds its world, then becomes the user's
/// program. Returns only on failure.
fn container_init(
    spec: &ContainerSpec,
    sync: &mut File,
    flags: CloneFlags,
) -> Result<Infallible, Failure> {
    // If the shim dies (because the engine died), so does the container:
    // nothing may outlive the engine that owns it.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(sys(|| "setting the parent-death signal".into()))?;
    // Only the container's own processes are in its cgroup (`top`, `stats`
    // and limits see them alone): the init joins it, not the shim, and
    // then takes its cgroup namespace there.
    join_cgroups(&spec.cgroup_procs)?;
    if spec.cgroup2 {
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(sys(|| "creating the cgroup namespace".into()))?;
    }
    set_cloexec(sync)?;
    nix::unistd::setsid().map_err(sys(|| "setsid".into()))?;
    if spec.process.tty {
        set_controlling_tty()?;
    }
    umask(Mode::empty());
    build_root(spec)?;
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up()?;
    }
    nix::unistd::sethostname(&spec.hostname)
        .map_err(sys(|| format!("setting hostname {}", spec.hostname)))?;
    umask(Mode::from_bits_truncate(0o022));
    let prepared = prepare_process(&spec.process)?;
    if spec.init {
        run_as_reaper(prepared, sync)
    } else {
        prepared.exec()
    }
}

fn set_cloexec(file: &File) -> Result<(), Failure> {
    nix::fcntl::fcntl(
        file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map(drop)
    .map_err(sys(|| "marking the sync pipe close-on-exec".into()))
}

fn set_controlling_tty() -> Result<(), Failure> {
    // SAFETY: TIOCSCTTY takes an int argument and fd 0 is ours.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(Failure::setup(format!(
            "setting the controlling terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Brings `lo` up in a new network namespace.
fn loopback_up() -> Result<(), Failure> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys(|| "opening a socket to configure lo".into()))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) } < 0 {
        return Err(Failure::setup(format!(
            "reading lo flags: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the flags member of the union is the one SIOCGIFFLAGS filled in.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) } < 0 {
        return Err(Failure::setup(format!(
            "bringing lo up: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// A failure to resolve or create `path` inside the container root.
fn in_root(what: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> Failure {
    let path = path.to_owned();
    move |e| Failure::setup(format!("{what} {path} inside the container root: {e}"))
}

/// Mounts onto the resolved descriptor `target` (container path
/// `container_path`, for messages) through `/proc/self/fd/N`, as runc
/// does: the mount lands on exactly the inode that was resolved inside the
/// root, whatever a symlink on the path says by now.
fn mount_on(
    source: Option<&str>,
    target: &OwnedFd,
    container_path: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Failure> {
    mount(source, &proc_fd_path(target), fstype, flags, data).map_err(sys(|| {
        format!(
            "mounting {} on {container_path}",
            fstype.or(source).unwrap_or("?")
        )
    }))
}

/// The directory `path` in `root` (created if missing) as an `O_PATH`
/// descriptor to mount onto.
fn mount_dir(root: &Root, path: &str) -> Result<OwnedFd, Failure> {
    root.mkdir_all(path, 0o755)
        .map_err(in_root("creating the mount point", path))
}

/// `path` re-resolved after something was mounted on it, checked to be a
/// different file system than `before` (the mount is what it now names).
fn mounted_dir(root: &Root, path: &str, before: &OwnedFd) -> Result<OwnedFd, Failure> {
    let after = root
        .resolve(path)
        .map_err(in_root("re-opening the mount point", path))?;
    let dev = |fd: &OwnedFd| {
        fsutil::inroot::metadata(fd)
            .map(|st| st.st_dev)
            .map_err(in_root("stat of the mount point", path))
    };
    if dev(&after)? == dev(before)? {
        return Err(Failure::setup(format!(
            "mount point {path} changed while it was being mounted"
        )));
    }
    Ok(after)
}

fn mount_at(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Failure> {
    mount(source, target, fstype, flags, data).map_err(sys(|| {
        format!(
            "mounting {} on {}",
            fstype.or(source).unwrap_or("?"),
            target.display()
        )
    }))
}

fn mkdir_all(path: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(path)
        .map_err(|e| Failure::setup(format!("creating {}: {e}", path.display())))
}

/// overlay `lowerdir=` value: the top layer first. When all layers share a
/// parent directory, chdir there and use bare names, so that many layers fit
/// in the one-page limit on mount options.
fn lowerdir_option(lower: &[PathBuf]) -> Result<String, Failure> {
    let parent = lower.first().and_then(|p| p.parent());
    let shared = parent.filter(|parent| lower.iter().all(|p| p.parent() == Some(*parent)));
    let names: Vec<String> = match shared {
        Some(parent) => {
            nix::unistd::chdir(parent).map_err(sys(|| format!("entering {}", parent.display())))?;
            lower
                .iter()
                .rev()
                .map(|p| {
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        }
        None => lower
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect(),
    };
    Ok(names.join(":"))
}

fn build_root(spec: &ContainerSpec) -> Result<(), Failure> {
    mount_at(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let rootfs = &spec.rootfs;
    let root = rootfs.target.as_path();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir_option(&rootfs.lower)?,
        rootfs.upper.display(),
        rootfs.work.display()
    );
    mount_at(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )?;
    nix::unistd::chdir("/").map_err(sys(|| "chdir /".into()))?;

    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let in_root_fs = Root::open(root).map_err(|e| {
        Failure::setup(format!(
            "opening the container root {}: {e}",
            root.display()
        ))
    })?;
    let proc_dir = mount_dir(&in_root_fs, "/proc")?;
    mount_on(Some("proc"), &proc_dir, "/proc", Some("proc"), nodev, None)?;

    let dev_below = mount_dir(&in_root_fs, "/dev")?;
    mount_on(
        Some("tmpfs"),
        &dev_below,
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    // The fresh tmpfs holds nothing but what populate_dev makes, so paths
    // below its descriptor cannot meet a container's symlink.
    let dev = mounted_dir(&in_root_fs, "/dev", &dev_below)?;
    populate_dev(&proc_fd_path(&dev), spec.privileged)?;
    super::devices::create_nodes(&spec.devices.nodes, |path| {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() || name == "." || name == ".." {
            return Err(format!("device path {path:?} does not name a file"));
        }
        let dir = in_root_fs
            .mkdir_all(if parent.is_empty() { "/" } else { parent }, 0o755)
            .map_err(|e| format!("creating the directory of device {path}: {e}"))?;
        Ok((dir, name.to_owned()))
    })
    .map_err(Failure::setup)?;

    let sys_below = mount_dir(&in_root_fs, "/sys")?;
    let sys_flags = if spec.privileged {
        nodev
    } else {
        nodev | MsFlags::MS_RDONLY
    };
    mount_on(
        Some("sysfs"),
        &sys_below,
        "/sys",
        Some("sysfs"),
        sys_flags,
        None,
    )?;
    if spec.cgroup2 {
        let sys_dir = mounted_dir(&in_root_fs, "/sys", &sys_below)?;
        // sysfs is the kernel's: no container file is on this path.
        let cgroup = proc_fd_path(&sys_dir).join("fs/cgroup");
        if cgroup.is_dir() {
            mount_at(Some("cgroup"), &cgroup, Some("cgroup2"), sys_flags, None)?;
        }
    }

    for m in &spec.mounts {
        user_mount(&in_root_fs, m)?;
    }
    drop(in_root_fs);

    nix::unistd::chdir(root).map_err(sys(|| format!("entering {}", root.display())))?;
    nix::unistd::pivot_root(".", ".").map_err(sys(|| "pivot_root".into()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys(|| "detaching the old root".into()))?;
    nix::unistd::chdir("/").map_err(sys(|| "chdir /".into()))?;

    if !spec.privileged {
        for path in &spec.masked_paths {
            mask(Path::new(path))?;
        }
        for path in &spec.readonly_paths {
            readonly(Path::new(path))?;
        }
    }
    if rootfs.readonly {
        mount_at(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

fn populate_dev(dev: &Path, privileged: bool) -> Result<(), Failure> {
    let nodes: [(&str, u64, u64); 6] = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(sys(|| format!("creating /dev/{name}")))?;
    }
    let _ = privileged;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| Failure::setup(format!("creating /dev/{name}: {e}")))?;
    }
    let pts = dev.join("pts");
    mkdir_all(&pts)?;
    mount_at(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    mkdir_all(&shm)?;
    mount_at(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let mqueue = dev.join("mqueue");
    mkdir_all(&mqueue)?;
    mount_at(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    Ok(())
}

fn user_mount(root: &Root, m: &MountSpec) -> Result<(), Failure> {
    let destination = m.destination.as_str();
    match m.kind.as_str() {
        "bind" => {
            let source = Path::new(&m.source);
            let source_meta = std::fs::metadata(source)
                .map_err(|e| Failure::setup(format!("bind source {}: {e}", source.display())))?;
            let is_dir = source_meta.is_dir();
            let target = if is_dir {
                mount_dir(root, destination)?
            } else {
                root.create_file(destination)
                    .map_err(in_root("creating the mount point", destination))?
            };
            let kind = fsutil::inroot::metadata(&target)
                .map_err(in_root("stat of the mount point", destination))?
                .st_mode
                & libc::S_IFMT;
            if kind == libc::S_IFLNK || (kind == libc::S_IFDIR) != is_dir {
                return Err(Failure::setup(format!(
                    "mount point {destination} is not a {} inside the container root",
                    if is_dir { "directory" } else { "file" }
                )));
            }
            if m.copy_up && is_dir {
                copy_up(&target, source)?;
            }
            mount_on(
                Some(&m.source),
                &target,
                destination,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if m.readonly {
                // Make what is now on top of the destination (the bind, with
                // every submount) read-only.
                use std::os::unix::fs::MetadataExt;
                let top = root
                    .resolve(destination)
                    .map_err(in_root("re-opening the mount point", destination))?;
                let st = fsutil::inroot::metadata(&top)
                    .map_err(in_root("stat of the mount point", destination))?;
                if st.st_dev != source_meta.dev() || st.st_ino != source_meta.ino() {
                    return Err(Failure::setup(format!(
                        "mount point {destination} changed while it was being mounted"
                    )));
                }
                super::readonly::make_readonly(&proc_fd_path(&top)).map_err(Failure::setup)?;
            }
        }
        kind => {
            let target = mount_dir(root, destination)?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let data = (!m.data.is_empty()).then_some(m.data.as_str());
            mount_on(
                Some(&m.source),
                &target,
                destination,
                Some(kind),
                flags,
                data,
            )?;
        }
    }
    Ok(())
}

/// Docker's volume copy-up: an empty volume mounted over image content
/// starts as a copy of that content (modes, owners, links kept). The image
/// side is the resolved mount point's descriptor and the copy walks
/// descriptors only (`fsutil::tree`), so no link in the image is followed.
fn copy_up(image_dir: &OwnedFd, volume: &Path) -> Result<(), Failure> {
    let failed = |e: std::io::Error| {
        Failure::setup(format!(
            "copying image content into volume {}: {e}",
            volume.display()
        ))
    };
    let volume_dir = rustix::fs::open(
        volume,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| failed(e.into()))?;
    let empty = |dir: &OwnedFd| {
        tree::open_dir(dir)
            .and_then(tree::sorted_names)
            .map(|names| names.is_empty())
    };
    if !empty(&volume_dir).map_err(failed)? || empty(image_dir).map_err(failed)? {
        return Ok(());
    }
    tree::copy_tree(image_dir, &volume_dir).map_err(failed)?;
    // The volume root takes the image directory's mode and owner.
    let st = fsutil::inroot::metadata(image_dir).map_err(failed)?;
    rustix::fs::fchown(
        &volume_dir,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| failed(e.into()))?;
    rustix::fs::fchmod(
        &volume_dir,
        rustix::fs::Mode::from_raw_mode(st.st_mode & 0o7777),
    )
    .map_err(|e| failed(e.into()))?;
    Ok(())
}

fn mask(path: &Path) -> Result<(), Failure> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => mount_at(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        ),
        Ok(_) => mount_at(Some("/dev/null"), path, None, MsFlags::MS_BIND, None),
        Err(_) => Ok(()),
    }
}

fn readonly(path: &Path) -> Result<(), Failure> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount_at(
        Some(path.to_str().unwrap_or("/")),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    mount_at(
        None,
        path,
        None,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None,
    )
}

/// A user's identity as resolved from the container's files.
struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    home: String,
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`) against
/// `/etc/passwd` and `/etc/group` of the current root.
fn resolve_user(user: &str, additional: &[String]) -> Result<Identity, Failure> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, home) = match (found, user_part.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse()
                .map_err(|_| Failure::setup(format!("bad uid in /etc/passwd for {}", f[0])))?,
            f[3].parse()
                .map_err(|_| Failure::setup(format!("bad gid in /etc/passwd for {}", f[0])))?,
            f[5].to_owned(),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_owned()),
        (None, Err(_)) => {
            return Err(Failure {
                message: format!(
                    "unable to find user {user_part}: no matching entries in passwd file"
                ),
                code: 125,
            });
        }
    };
    let groups_of: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    let lookup_group = |name: &str| -> Result<u32, Failure> {
        if let Ok(n) = name.parse() {
            return Ok(n);
        }
        groups_of
            .iter()
            .find(|f| f[0] == name)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                Failure::setup(format!(
                    "unable to find group {name}: no matching entries in group file"
                ))
            })
    };
    if let Some(g) = group_part {
        gid = lookup_group(g)?;
    }
    // As dockerd: the primary gid is always a supplementary group, and the
    // user's memberships in /etc/group count only without an explicit group.
    let name = found.map(|f| f[0]).unwrap_or("");
    let mut groups: Vec<u32> = std::iter::once(gid)
        .chain(
            groups_of
                .iter()
                .filter(|f| {
                    group_part.is_none()
                        && f.len() >= 4
                        && !name.is_empty()
                        && f[3].split(',').any(|m| m == name)
                })
                .filter_map(|f| f[2].parse().ok()),
        )
        .collect();
    for g in additional {
        groups.push(lookup_group(g)?);
    }
    groups.sort_unstable();
    groups.dedup();
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

/// A process ready to exec: everything resolved, privileges not yet dropped.
struct Prepared {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    identity: Identity,
    capabilities: Vec<String>,
    no_new_privileges: bool,
    seccomp: Option<super::seccomp::Program>,
}

fn cstring(s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| Failure::setup(format!("argument contains a NUL byte: {s:?}")))
}

/// Finds `name` like execvp does, with Docker's error texts (which the CLI
/// maps to exit codes 127 and 126).
fn find_program(name: &str, env: &[String]) -> Result<PathBuf, Failure> {
    let check = |path: &Path| -> Result<bool, Failure> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {
                if meta.permissions().mode() & 0o111 == 0 {
                    return Err(Failure {
                        message: format!("exec: \"{}\": permission denied", path.display()),
                        code: 126,
                    });
                }
                Ok(true)
            }
            Ok(meta) if meta.is_dir() => Err(Failure {
                message: format!(
                    "exec: \"{}\": is a directory: permission denied",
                    path.display()
                ),
                code: 126,
            }),
            _ => Ok(false),
        }
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if check(&path)? {
            Ok(path)
        } else {
            Err(Failure {
                message: format!("exec: \"{name}\": stat {name}: no such file or directory"),
                code: 127,
            })
        };
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if check(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(Failure {
        message: format!("exec: \"{name}\": executable file not found in $PATH"),
        code: 127,
    })
}

fn prepare_process(process: &ProcessSpec) -> Result<Prepared, Failure> {
    let identity = resolve_user(&process.user, &process.additional_groups)?;
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home));
    }
    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd.as_str()
    };
    mkdir_all(Path::new(cwd))?;
    nix::unistd::chdir(cwd).map_err(sys(|| format!("entering working directory {cwd}")))?;
    let Some(first) = process.args.first() else {
        return Err(Failure::setup("no command specified"));
    };
    let program = find_program(first, &env)?;
    Ok(Prepared {
        program: cstring(&program.to_string_lossy())?,
        argv: process
            .args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        identity,
        capabilities: process.capabilities.clone(),
        no_new_privileges: process.no_new_privileges,
        seccomp: process.seccomp.clone(),
    })
}

impl Prepared {
    /// The capabilities to keep. The runtime cannot grant what its own
    /// bounding set lacks (berth nested in a restricted container): for
    /// `--privileged` (every capability) those are left out, as "all the
    /// runtime has"; a missing one asked for by name is an error.
    fn kept_capabilities(&self) -> Result<caps::CapsHashSet, Failure> {
        let wanted: caps::CapsHashSet = self
            .capabilities
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let bounding = caps::read(None, caps::CapSet::Bounding)
            .map_err(|e| Failure::setup(format!("reading the bounding set: {e}")))?;
        if wanted == caps::all() {
            return Ok(wanted.intersection(&bounding).copied().collect());
        }
        if let Some(missing) = wanted.difference(&bounding).next() {
            return Err(Failure::setup(format!(
                "capability {missing} is not available to the runtime (not in its bounding set)"
            )));
        }
        Ok(wanted)
    }

    /// Drops privileges and executes the program. Returns only on failure.
    fn exec(self) -> Result<Infallible, Failure> {
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN, so
        // it goes in before the capabilities are dropped (as runc does);
        // the profile must then allow what follows (setuid, capset, execve).
        let install_seccomp = |program: &super::seccomp::Program| {
            super::seccomp::install(program)
                .map_err(|e| Failure::setup(format!("installing the seccomp filter: {e}")))
        };
        if let Some(program) = self.seccomp.as_ref().filter(|_| !self.no_new_privileges) {
            install_seccomp(program)?;
        }
        let keep = self.kept_capabilities()?;
        for cap in caps::all() {
            if !keep.contains(&cap) {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(|e| {
                    Failure::setup(format!("dropping {cap} from the bounding set: {e}"))
                })?;
            }
        }
        let groups: Vec<Gid> = self
            .identity
            .groups
            .iter()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(sys(|| "setgroups".into()))?;
        nix::unistd::setgid(Gid::from_raw(self.identity.gid))
            .map_err(sys(|| format!("setgid {}", self.identity.gid)))?;
        nix::unistd::setuid(Uid::from_raw(self.identity.uid))
            .map_err(sys(|| format!("setuid {}", self.identity.uid)))?;
        if self.identity.uid == 0 {
            for set in [
                caps::CapSet::Inheritable,
                caps::CapSet::Effective,
                caps::CapSet::Permitted,
            ] {
                caps::set(None, set, &keep)
                    .map_err(|e| Failure::setup(format!("setting capabilities: {e}")))?;
            }
        }
        if self.no_new_privileges {
            nix::sys::prctl::set_no_new_privs().map_err(sys(|| "setting no_new_privs".into()))?;
        }
        reset_signals();
        if let Some(program) = self.seccomp.as_ref().filter(|_| self.no_new_privileges) {
            install_seccomp(program)?;
        }
        let errno = nix::unistd::execve(&self.program, &self.argv, &self.env).unwrap_err();
        let name = self.program.to_string_lossy();
        let code = match errno {
            nix::Error::ENOENT => 127,
            nix::Error::EACCES | nix::Error::EPERM | nix::Error::ENOEXEC => 126,
            _ => 126,
        };
        let reason = match errno {
            nix::Error::ENOENT => "no such file or directory".to_owned(),
            nix::Error::EACCES | nix::Error::EPERM => "permission denied".to_owned(),
            other => other.desc().to_lowercase(),
        };
        Err(Failure {
            message: format!("exec: \"{name}\": {reason}"),
            code,
        })
    }
}

/// Restores default dispositions and an empty mask, as a fresh process has.
fn reset_signals() {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// `--init`: stay as PID 1, fork the program, forward signals to it and reap
/// every orphan, then exit with the program's status.
fn run_as_reaper(prepared: Prepared, sync: &mut File) -> Result<Infallible, Failure> {
    let all = SigSet::all();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None)
        .map_err(sys(|| "blocking signals".into()))?;
    // SAFETY: still single-threaded (we are the helper's forked child).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => prepared.exec(),
        Ok(ForkResult::Parent { child }) => {
            // The child reports its own exec errors; drop our copy of the pipe.
            // SAFETY: fd is ours; after this we never touch `sync` again.
            unsafe { libc::close(sync.as_raw_fd()) };
            loop {
                let Ok(signal) = all.wait() else { continue };
                if signal == Signal::SIGCHLD {
                    loop {
                        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(status) if status.pid() == Some(child) => {
                                let code = exit_code(status).unwrap_or(255);
                                std::process::exit(code);
                            }
                            Ok(_) => {}
                        }
                    }
                } else {
                    let _ = kill(child, signal);
                }
            }
        }
        Err(errno) => Err(Failure::setup(format!("fork: {errno}"))),
    }
}

fn exec_helper(spec_path: &str, mut sync: File) -> i32 {
    let setup = || -> Result<ExecSpec, Failure> {
        let spec: ExecSpec = read_spec(spec_path)?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .map_err(sys(|| "setting the parent-death signal".into()))?;
        join_cgroups(&spec.cgroup_procs)?;
        let pid = spec.target_pid;
        let mut namespaces = Vec::new();
        for (name, flag) in [
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let path = format!("/proc/{pid}/ns/{name}");
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| Failure::setup(format!("opening {path}: {e}")))?;
            namespaces.push((file, flag, name));
        }
        let own = |name: &str| std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        for (file, flag, name) in namespaces {
            // Joining a namespace we are already in (host network) is skipped.
            if own(name) == std::fs::read_link(format!("/proc/{pid}/ns/{name}")).ok() {
                continue;
            }
            setns(file, flag)
                .map_err(sys(|| format!("joining the container's {name} namespace")))?;
        }
        Ok(spec)
    };
    let spec = match setup() {
        Ok(spec) => spec,
        Err(Failure { message, code }) => {
            report(&mut sync, &Report::Error { message, code });
            return code;
        }
    };
    // SAFETY: this helper process is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let result = (|| -> Result<Infallible, Failure> {
                set_cloexec(&sync)?;
                nix::unistd::setsid().map_err(sys(|| "setsid".into()))?;
                if spec.process.tty {
                    set_controlling_tty()?;
                }
                prepare_process(&spec.process)?.exec()
            })();
            let Err(Failure { message, code }) = result;
            report(&mut sync, &Report::Error { message, code });
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => supervise(child, sync),
        Err(errno) => {
            report(
                &mut sync,
                &Report::Error {
                    message: format!("fork: {errno}"),
                    code: 126,
                },
            );
            126
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_program_reports_docker_texts() {
        let err = find_program("definitely-not-here", &["PATH=/nonexistent".into()]).unwrap_err();
        assert_eq!(err.code, 127);
        assert!(err.message.contains("executable file not found in $PATH"));
        let err = find_program("/nonexistent/x", &[]).unwrap_err();
        assert_eq!(err.code, 127);
        assert!(err.message.contains("no such file or directory"));
    }

    #[test]
    fn lowerdir_lists_top_layer_first() {
        let lower = vec![PathBuf::from("/a/base"), PathBuf::from("/b/top")];
        assert_eq!(lowerdir_option(&lower).unwrap(), "/b/top:/a/base");
    }
}
