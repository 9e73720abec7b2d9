//! Recursive read-only bind mounts (`-v /:/host:ro`).
//!
//! `MS_REMOUNT | MS_RDONLY` changes only the top mount of a recursive bind,
//! so every submount (`/host/proc`, `/host/sys/fs/cgroup`, a tmpfs under the
//! source...) would stay writable. `mount_setattr(AT_RECURSIVE)` (Linux 5.12)
//! changes the whole tree at once; on older kernels each mount under the
//! target is remounted read-only in turn, found in `/proc/self/mountinfo`.

#![allow(unsafe_code, reason = "mount_setattr(2), which libc does not wrap")]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes the mount at `path` and every mount below it read-only.
pub(crate) fn make_readonly(path: &Path) -> Result<(), String> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: path contains a NUL byte", path.display()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c_path` and `attr` are valid for the call, and the size
    // passed is `attr`'s; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(format!(
            "making {} read-only (recursively): {err}",
            path.display()
        ));
    }
    remount_each(path)
}

/// The fallback: remount `path` and each mount under it read-only, keeping
/// each mount's other flags (a bind remount must restate them).
fn remount_each(path: &Path) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    for (point, options) in mounts_under(&info, path) {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for option in options.split(',') {
            flags |= match option {
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                "strictatime" => MsFlags::MS_STRICTATIME,
                _ => MsFlags::empty(),
            };
        }
        nix::mount::mount(
            None::<&str>,
            point.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(|e| format!("remounting {point} read-only: {}", e.desc()))?;
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(mount point, per-mount options)` of `path` and the mounts below it.
fn mounts_under(mountinfo: &str, path: &Path) -> Vec<(String, String)> {
    let base = path.to_string_lossy();
    let base = base.trim_end_matches('/');
    mountinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let point = unescape(fields.nth(4)?);
            let options = fields.next()?.to_owned();
            let inside = point == base
                || point
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('/'));
            inside.then_some((point, options))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_finds_the_tree_and_unescapes() {
        let info = "\
22 1 0:21 / /host rw,nosuid - ext4 /dev/sda rw
23 22 0:22 / /host/proc rw,nosuid,nodev,noexec - proc proc rw
24 22 0:23 / /host/a\\040b rw - tmpfs tmpfs rw
25 1 0:24 / /hostile rw - tmpfs tmpfs rw
";
        let found = mounts_under(info, Path::new("/host"));
        let points: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(points, ["/host", "/host/proc", "/host/a b"]);
        assert_eq!(found[1].1, "rw,nosuid,nodev,noexec");
    }
}
