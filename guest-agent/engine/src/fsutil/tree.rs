//! Directory trees walked through descriptors: archiving a tree as a tar
//! and copying one tree into another.
//!
//! Each entry is opened relative to its parent's descriptor with
//! `O_NOFOLLOW` (`O_PATH` first, so that opening a device or FIFO has no
//! side effect), its type is taken from that descriptor, and a regular
//! file's content is read from a second `openat` that must name the same
//! inode. A directory is entered through its own descriptor. So a
//! concurrent rename (say `renameat2(RENAME_EXCHANGE)` of a directory and
//! a symlink to `/`) can change which of the container's own files are
//! read, but never makes the walk follow a link.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::inroot::read_link_at;

/// Opens `name` in `dir` without following a final symlink: an `O_PATH`
/// descriptor, whatever the entry is.
pub fn open_entry(dir: &impl AsFd, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// A readable descriptor of the directory `fd` refers to (which may be an
/// `O_PATH` descriptor): `openat(fd, ".")` stays on the same inode.
pub fn open_dir(fd: &impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        fd,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the regular file `name` in `dir` for reading and checks that it is
/// the inode `expected` describes (the entry was not swapped since).
pub fn open_content(dir: &impl AsFd, name: &OsStr, expected: &Metadata) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if meta.dev() != expected.dev() || meta.ino() != expected.ino() || !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} changed while it was being read",
            Path::new(name).display()
        )));
    }
    Ok(file)
}

/// The names in directory `dir` (readable descriptor), sorted, without `.`
/// and `..`.
pub fn sorted_names(dir: OwnedFd) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Writes trees to a tar, fd-relative.
pub struct TarWalk<'a, W: Write> {
    builder: &'a mut tar::Builder<W>,
    /// When set, directories on another device are listed but not entered
    /// (`docker export` skips a running container's `/proc`, volumes).
    one_device: Option<u64>,
    /// The first name of each multiply-linked file, for hard link entries.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'a, W: Write> TarWalk<'a, W> {
    pub fn new(builder: &'a mut tar::Builder<W>) -> Self {
        Self {
            builder,
            one_device: None,
            links: HashMap::new(),
        }
    }

    /// Do not descend into directories on another device than `dev`.
    #[must_use]
    pub fn one_device(mut self, dev: u64) -> Self {
        self.one_device = Some(dev);
        self
    }

    /// Appends entry `name` of directory `dir` (and, for a directory, its
    /// tree) as `rel`.
    pub fn append_at(&mut self, dir: &impl AsFd, name: &OsStr, rel: &Path) -> io::Result<()> {
        let entry = open_entry(dir, name)?;
        let meta = entry.metadata()?;
        if meta.is_file() {
            let content = open_content(dir, name, &meta)?;
            return self.append_file(content, &meta, rel);
        }
        self.append_opened(entry, &meta, rel)
    }

    /// Appends the entry open as `entry` (any type but a regular file,
    /// whose content needs its parent: see [`Self::append_at`]).
    pub fn append_opened(&mut self, entry: File, meta: &Metadata, rel: &Path) -> io::Result<()> {
        let mut header = header_for(meta);
        let kind = meta.file_type();
        if kind.is_dir() {
            self.builder.append_data(&mut header, rel, io::empty())?;
            return self.append_children(&entry, meta, rel);
        }
        if kind.is_symlink() {
            let target = read_link_at(&entry, "")?;
            header.set_size(0);
            return self.builder.append_link(&mut header, rel, target);
        }
        if kind.is_file() {
            return Err(io::Error::other(format!(
                "{} is a regular file opened without its directory",
                rel.display()
            )));
        }
        if kind.is_socket() {
            return Ok(());
        }
        header.set_size(0);
        self.builder.append_data(&mut header, rel, io::empty())
    }

    /// Appends the entries below directory `dir` (described by `meta`) as
    /// `rel/<name>` (bare names when `rel` is empty).
    pub fn append_children(
        &mut self,
        dir: &impl AsFd,
        meta: &Metadata,
        rel: &Path,
    ) -> io::Result<()> {
        if self.one_device.is_some_and(|dev| dev != meta.dev()) {
            return Ok(());
        }
        let readable = open_dir(dir)?;
        let names = sorted_names(open_dir(&readable)?)?;
        for name in names {
            self.append_at(&readable, &name, &rel.join(&name))?;
        }
        Ok(())
    }

    fn append_file(&mut self, content: File, meta: &Metadata, rel: &Path) -> io::Result<()> {
        let mut header = header_for(meta);
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                return self.builder.append_link(&mut header, rel, first);
            }
            self.links.insert(key, rel.to_path_buf());
        }
        self.builder.append_data(&mut header, rel, content)
    }
}

fn header_for(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header
}

/// Copies the tree below directory `from` into directory `to` (both
/// descriptors, `O_PATH` allowed), keeping modes, owners and symlinks.
/// Devices, FIFOs and sockets are not copied (Docker's volume copy-up does
/// the same). Entries are created with `O_EXCL`/`mkdirat`, so an existing
/// name in `to` is an error, never a path that is followed.
pub fn copy_tree(from: &impl AsFd, to: &impl AsFd) -> io::Result<()> {
    let source = open_dir(from)?;
    for name in sorted_names(open_dir(&source)?)? {
        let entry = open_entry(&source, &name)?;
        let meta = entry.metadata()?;
        let kind = meta.file_type();
        let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
        let owner = (
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
        );
        if kind.is_dir() {
            rustix::fs::mkdirat(to, &name, Mode::from_raw_mode(0o700))?;
            let target = rustix::fs::openat(
                to,
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            copy_tree(&entry, &target)?;
            rustix::fs::fchown(&target, owner.0, owner.1)?;
            rustix::fs::fchmod(&target, mode)?;
        } else if kind.is_symlink() {
            let link = read_link_at(&entry, "")?;
            rustix::fs::symlinkat(&link, to, &name)?;
            rustix::fs::chownat(to, &name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
        } else if kind.is_file() {
            let mut content = open_content(&source, &name, &meta)?;
            let target = rustix::fs::openat(
                to,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut target = File::from(target);
            io::copy(&mut content, &mut target)?;
            // chown first: it clears set-user-ID bits that chmod then sets.
            rustix::fs::fchown(&target, owner.0, owner.1)?;
            rustix::fs::fchmod(&target, mode)?;
        }
    }
    Ok(())
}

/// Docker's volume copy-up: when directory `volume` is empty and the
/// image directory `image_dir` is not, the image's tree is copied into the
/// volume (modes, owners and links kept, nothing followed) and the volume
/// root takes the image directory's mode and owner. Returns whether it
/// copied.
pub fn copy_up(image_dir: &impl AsFd, volume: &impl AsFd) -> io::Result<bool> {
    let empty = |dir: &dyn AsFd| {
        open_dir(&dir.as_fd())
            .and_then(sorted_names)
            .map(|n| n.is_empty())
    };
    if !empty(volume)? || empty(image_dir)? {
        return Ok(false);
    }
    let volume = open_dir(volume)?;
    copy_tree(image_dir, &volume)?;
    let st = rustix::fs::fstat(image_dir)?;
    rustix::fs::fchown(
        &volume,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )?;
    rustix::fs::fchmod(&volume, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::fsutil::Root;

    fn names(tar: &[u8]) -> Vec<String> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn tar_walk_keeps_links_as_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/f"), "x").unwrap();
        symlink("/etc/passwd", dir.path().join("d/l")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        TarWalk::new(&mut builder)
            .append_at(&root.fd(), OsStr::new("d"), Path::new("d"))
            .unwrap();
        let bytes = builder.into_inner().unwrap();
        assert_eq!(names(&bytes), ["d", "d/f", "d/l"]);
        let mut archive = tar::Archive::new(&bytes[..]);
        let link = archive.entries().unwrap().nth(2).unwrap().unwrap();
        assert_eq!(
            link.link_name().unwrap().unwrap().to_str(),
            Some("/etc/passwd")
        );
    }

    #[test]
    fn copy_tree_copies_modes_and_links_without_following() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("sub")).unwrap();
        std::fs::write(from.path().join("sub/f"), "data").unwrap();
        std::fs::set_permissions(
            from.path().join("sub/f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();
        symlink("/", from.path().join("up")).unwrap();
        let source = Root::open(from.path()).unwrap();
        let target = Root::open(to.path()).unwrap();
        copy_tree(&source.fd(), &target.fd()).unwrap();
        assert_eq!(std::fs::read(to.path().join("sub/f")).unwrap(), b"data");
        assert_eq!(
            std::fs::metadata(to.path().join("sub/f")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_link(to.path().join("up")).unwrap(),
            Path::new("/")
        );
    }

    #[test]
    fn commit_upper_walk_records_links_and_never_follows_them() {
        // A container made its upper dir hold links to host paths: commit's
        // layer and `docker diff` list the links themselves, not the
        // host's /etc behind them.
        let upper = tempfile::tempdir().unwrap();
        symlink("/etc", upper.path().join("etc")).unwrap();
        std::fs::create_dir(upper.path().join("d")).unwrap();
        symlink("/", upper.path().join("d/up")).unwrap();
        let mut layer = Vec::new();
        crate::image::commit::write_upper_tar(upper.path(), &mut layer).unwrap();
        assert_eq!(names(&layer), ["d", "d/up", "etc"]);
        let changes = crate::image::commit::changes(upper.path(), &[]).unwrap();
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/d", "/d/up", "/etc"]);
    }
}
