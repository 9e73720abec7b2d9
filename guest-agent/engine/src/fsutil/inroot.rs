//! Path resolution inside a root directory, as the container would see it.
//!
//! A [`Root`] is an `O_PATH` descriptor of a directory (a container's
//! overlay root, `/proc/<pid>/root` of a running container, a build
//! context). Paths are resolved by the kernel with
//! `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
//!
//! - `..` at the root stays at the root, and an absolute symlink restarts
//!   at the root, never at the host's `/`;
//! - magic links (`/proc/<pid>/root`, `/proc/self/fd/N` inside the
//!   container's own `/proc`) are refused, since they jump to objects
//!   outside the root;
//! - after 40 symlinks the kernel fails with `ELOOP`. There is no "literal
//!   link" fallback that a later string-path operation could follow.
//!
//! The result is a descriptor. Callers then work with `*at` calls relative
//! to it (`mkdirat`, `openat(O_NOFOLLOW)`, `fchmod`, `unlinkat`,
//! `readlinkat`, `fstat`), or mount onto `/proc/self/fd/N` in the runtime
//! helper, so a path component swapped for a symlink after resolution
//! cannot redirect the operation.
//!
//! `openat2` exists since Linux 5.6; on older kernels every call fails with
//! an error that says so rather than falling back to a weaker resolver.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Every in-root lookup uses these.
const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// The kernel's symlink budget per lookup, also applied to the dangling
/// links [`Root::mkdir_all`] creates through.
pub const MAX_LINKS: usize = 40;

/// How often a lookup is retried when the kernel reports `EAGAIN` (a rename
/// or mount raced a `..` step; the kernel refuses rather than guess).
const EAGAIN_RETRIES: usize = 64;

/// A directory that paths are resolved inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens the directory at `path` (a host path the engine trusts, such
    /// as an overlay mount point or `/proc/<pid>/root`) as a root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self { fd })
    }

    /// The root's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (absolute or relative, both taken from the root) with
    /// `flags`, every symlink followed inside the root. Add
    /// `OFlags::NOFOLLOW` to get a final symlink itself.
    pub fn open_with(&self, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
        openat2_in(self.fd(), path, flags, Mode::empty())
    }

    /// An `O_PATH` descriptor of `path`, every symlink followed.
    pub fn resolve(&self, path: &str) -> io::Result<OwnedFd> {
        self.open_with(path, OFlags::PATH)
    }

    /// An `O_PATH` descriptor of the directory `path`, created (with its
    /// missing parents, mode `mode`) if it does not exist. Each missing
    /// component is made with `mkdirat` relative to the descriptor of its
    /// resolved parent, so a symlink can only lead to another place inside
    /// the root. A dangling symlink on the way is created at its target,
    /// inside the root, as `mkdir -p` in the container would; at most
    /// [`MAX_LINKS`] of those, then `ELOOP`.
    pub fn mkdir_all(&self, path: &str, mode: u32) -> io::Result<OwnedFd> {
        self.mkdir_all_counting(path, mode, 0)
    }

    fn mkdir_all_counting(&self, path: &str, mode: u32, links: usize) -> io::Result<OwnedFd> {
        let mut dir = self.open_with(".", OFlags::PATH | OFlags::DIRECTORY)?;
        let mut prefix = String::with_capacity(path.len());
        for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let parent_len = prefix.len();
            prefix.push('/');
            prefix.push_str(component);
            dir = match self.open_with(&prefix, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && component != ".." => {
                    match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(mode)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            if let Ok(target) = read_link_at(&dir, component) {
                                if links >= MAX_LINKS {
                                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                                }
                                let target = target.to_string_lossy();
                                let target = if target.starts_with('/') {
                                    target.into_owned()
                                } else {
                                    format!("{}/{target}", &prefix[..parent_len])
                                };
                                self.mkdir_all_counting(&target, mode, links + 1)?;
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                    self.open_with(&prefix, OFlags::PATH | OFlags::DIRECTORY)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(dir)
    }

    /// An `O_PATH` descriptor of the non-directory `path`, created as an
    /// empty file (mode `0644`, parents `0755`) if nothing is there. An
    /// existing entry is returned as it resolves (it may be a directory;
    /// callers check the type). A dangling symlink at `path` (an image's
    /// `/etc/resolv.conf -> ../run/...`) gets its target created inside the
    /// root, at most [`MAX_LINKS`] deep.
    pub fn create_file(&self, path: &str) -> io::Result<OwnedFd> {
        self.create_file_counting(path, 0)
    }

    fn create_file_counting(&self, path: &str, links: usize) -> io::Result<OwnedFd> {
        match self.resolve(path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let (parent, name) = split_parent(path);
        let Some(name) = name else {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        let dir = self.mkdir_all(parent, 0o755)?;
        match rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        ) {
            Ok(_) | Err(Errno::EXIST) => {}
            Err(Errno::LOOP) => {
                if links >= MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = read_link_at(&dir, name)?;
                let target = target.to_string_lossy();
                let target = if target.starts_with('/') {
                    target.into_owned()
                } else {
                    format!("{parent}/{target}")
                };
                self.create_file_counting(&target, links + 1)?;
                return self.resolve(path);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }
}

/// `openat2(dir, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
/// with `O_CLOEXEC`, retried on `EAGAIN`. `ENOSYS` (Linux < 5.6) becomes an
/// error that names the missing system call.
fn openat2_in(dir: BorrowedFd<'_>, path: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let path = if path.trim_start_matches('/').is_empty() {
        "."
    } else {
        path
    };
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, RESOLVE) {
            Err(Errno::AGAIN) if attempts < EAGAIN_RETRIES => attempts += 1,
            Err(Errno::NOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel has no openat2 (Linux 5.6 or later is required to resolve paths inside a container root)",
                ));
            }
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Splits `path` into its parent (as a string for [`Root`]) and its last
/// component; `None` when the path ends in `/`, `.` or `..`, which name a
/// directory that has to be resolved as a whole (so `/link/` follows
/// `link`, as with Docker's `filepath.Split`).
pub fn split_parent(path: &str) -> (&str, Option<&str>) {
    let (parent, last) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    match last {
        "" | "." | ".." => (path, None),
        name => (parent, Some(name)),
    }
}

/// The `/proc/self/fd/N` path of `fd`: how the runtime helper names a
/// resolved descriptor to `mount(2)`, which takes paths.
pub fn proc_fd_path(fd: &impl AsFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// The metadata of an open descriptor (`O_PATH` ones included).
pub fn metadata(fd: &impl AsFd) -> io::Result<rustix::fs::Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// The target of the symlink `name` in `dir` (`""` for `dir` itself when it
/// is an `O_PATH` descriptor of a symlink).
pub fn read_link_at(dir: &impl AsFd, name: &str) -> io::Result<PathBuf> {
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    Ok(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
}

/// Whether an error is the kernel's "no such file" (or a component that is
/// not a directory), i.e. the path simply does not exist in the root.
pub fn is_not_found(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn absolute_and_parent_links_stay_inside_the_root() {
        let (dir, root) = root();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts"), "inside").unwrap();
        symlink("/", dir.path().join("up")).unwrap();
        symlink("../../../../etc", dir.path().join("parent")).unwrap();
        for path in ["/up/etc/hosts", "/parent/hosts", "/../../etc/hosts"] {
            let fd = root.open_with(path, OFlags::RDONLY).unwrap();
            let text = std::io::read_to_string(std::fs::File::from(fd)).unwrap();
            assert_eq!(text, "inside", "{path}");
        }
    }

    #[test]
    fn a_chain_longer_than_the_link_budget_is_eloop() {
        let (dir, root) = root();
        // link0 -> link1 -> ... -> link44 -> /etc: 45 links, the kernel allows 40.
        for i in 0..45 {
            symlink(
                format!("/link{}", i + 1),
                dir.path().join(format!("link{i}")),
            )
            .unwrap();
        }
        symlink("/etc", dir.path().join("link45")).unwrap();
        let err = root.resolve("/link0/passwd").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        let err = root.mkdir_all("/link0/x", 0o755).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn mkdir_all_creates_through_links_inside_the_root() {
        let (dir, root) = root();
        symlink("/real", dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        root.mkdir_all("/link/a/b", 0o755).unwrap();
        assert!(dir.path().join("real/a/b").is_dir());
        let file = root.create_file("/link/a/f").unwrap();
        assert!(metadata(&file).unwrap().st_size == 0);
        assert!(dir.path().join("real/a/f").is_file());
    }

    #[test]
    fn mkdir_all_creates_a_dangling_link_target_inside_the_root() {
        let (dir, root) = root();
        symlink("/made/here", dir.path().join("dangling")).unwrap();
        root.mkdir_all("/dangling/sub", 0o755).unwrap();
        assert!(dir.path().join("made/here/sub").is_dir());
    }

    #[test]
    fn create_file_creates_a_dangling_link_target_inside_the_root() {
        let (dir, root) = root();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        symlink(
            "../run/stub/resolv.conf",
            dir.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let file = root.create_file("/etc/resolv.conf").unwrap();
        assert_eq!(
            metadata(&file).unwrap().st_mode & libc::S_IFMT,
            libc::S_IFREG
        );
        assert!(dir.path().join("run/stub/resolv.conf").is_file());
    }

    #[test]
    fn magic_links_are_refused() {
        // The host's own root has a procfs at /proc: /proc/self/root is a
        // magic link back to `/`, which RESOLVE_NO_MAGICLINKS refuses.
        let root = Root::open(Path::new("/")).unwrap();
        let err = root.resolve("/proc/self/root/etc").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
    }

    #[test]
    fn split_parent_names_the_last_component() {
        assert_eq!(split_parent("/a/b"), ("/a", Some("b")));
        assert_eq!(split_parent("/a/b/"), ("/a/b/", None));
        assert_eq!(split_parent("b"), ("", Some("b")));
        assert_eq!(split_parent("/a/.."), ("/a/..", None));
        assert_eq!(split_parent("/"), ("/", None));
    }
}
