//! File shares on the kernel command line.
//!
//! The host passes each virtio-fs share as one `berth.share=` parameter:
//! `berth.share=<tag>,<rw|ro>,<mount point as hex>`. Hex keeps any path
//! (spaces, commas, non-UTF-8 bytes) intact through the command line, which
//! the guest reads before anything else runs: shares are mounted before the
//! engine starts containers that bind them.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The command-line parameter name.
pub const PARAM: &str = "berth.share";

/// Guest paths that show a share besides its mount point, as `(alias,
/// mount point)`: a Mac's `/tmp` is a symlink to `/private/tmp`, and Docker
/// clients there send `-v /tmp/x:/x` as typed, so the guest shows a share
/// of `/private/tmp` at `/tmp` too (as Docker Desktop does).
pub const ALIASES: &[(&str, &str)] = &[("/tmp", "/private/tmp")];

/// One share as the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The virtio-fs tag.
    pub tag: String,
    /// Where it appears in the guest (the same path as on the host unless
    /// the template says otherwise).
    pub mount_point: PathBuf,
    pub writable: bool,
}

impl Share {
    /// The `berth.share=...` parameter for this share.
    pub fn to_param(&self) -> String {
        let mode = if self.writable { "rw" } else { "ro" };
        let hex: String = self
            .mount_point
            .as_os_str()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{PARAM}={},{mode},{hex}", self.tag)
    }
}

impl Share {
    /// The other guest paths that show this share ([`ALIASES`]).
    pub fn aliases(&self) -> impl Iterator<Item = &'static Path> + '_ {
        ALIASES
            .iter()
            .filter(|(_, point)| self.mount_point == Path::new(point))
            .map(|(alias, _)| Path::new(*alias))
    }
}

/// `path` with an alias of one of `shares` ([`ALIASES`]) replaced by the
/// share's mount point: `/tmp/x` -> `/private/tmp/x` when `/private/tmp` is
/// shared; any other path unchanged.
pub fn unalias(shares: &[Share], path: &Path) -> PathBuf {
    for share in shares {
        for alias in share.aliases() {
            if let Ok(rel) = path.strip_prefix(alias) {
                return share.mount_point.join(rel);
            }
        }
    }
    path.to_path_buf()
}

/// Every well-formed `berth.share=` parameter of `cmdline`, in order;
/// malformed ones are skipped (and named in the error list).
pub fn parse_cmdline(cmdline: &str) -> (Vec<Share>, Vec<String>) {
    let mut shares = Vec::new();
    let mut bad = Vec::new();
    for word in cmdline.split_whitespace() {
        let Some(value) = word.strip_prefix(PARAM).and_then(|v| v.strip_prefix('=')) else {
            continue;
        };
        match parse_value(value) {
            Some(share) => shares.push(share),
            None => bad.push(word.to_owned()),
        }
    }
    (shares, bad)
}

fn parse_value(value: &str) -> Option<Share> {
    let mut parts = value.split(',');
    let tag = parts.next().filter(|t| !t.is_empty())?;
    let writable = match parts.next()? {
        "rw" => true,
        "ro" => false,
        _ => return None,
    };
    let hex = parts.next()?;
    if parts.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let mount_point = PathBuf::from(OsString::from_vec(bytes));
    if !mount_point.is_absolute() || mount_point == Path::new("/") {
        return None;
    }
    Some(Share {
        tag: tag.to_owned(),
        mount_point,
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_round_trips_through_the_command_line_with_awkward_paths() {
        let share = Share {
            tag: "berth0".into(),
            mount_point: PathBuf::from("/Users/me/My Projects,v2"),
            writable: true,
        };
        let ro = Share {
            tag: "berth1".into(),
            mount_point: PathBuf::from("/opt/data"),
            writable: false,
        };
        let cmdline = format!("console=ttyS0 {} quiet {}", share.to_param(), ro.to_param());

        let (shares, bad) = parse_cmdline(&cmdline);

        assert_eq!(shares, vec![share, ro]);
        assert!(bad.is_empty());
    }

    #[test]
    fn a_private_tmp_share_is_also_shown_at_tmp() {
        let tmp = Share {
            tag: "berth1".into(),
            mount_point: PathBuf::from("/private/tmp"),
            writable: true,
        };
        let home = Share {
            tag: "berth0".into(),
            mount_point: PathBuf::from("/Users/me"),
            writable: true,
        };
        assert_eq!(tmp.aliases().collect::<Vec<_>>(), [Path::new("/tmp")]);
        assert_eq!(home.aliases().count(), 0);
        let shares = [home, tmp];
        assert_eq!(
            unalias(&shares, Path::new("/tmp/d/x")),
            Path::new("/private/tmp/d/x")
        );
        assert_eq!(unalias(&shares, Path::new("/tmpfoo")), Path::new("/tmpfoo"));
        assert_eq!(
            unalias(&shares[..1], Path::new("/tmp/d")),
            Path::new("/tmp/d"),
            "no alias without the share"
        );
    }

    #[test]
    fn malformed_shares_are_reported_not_mounted() {
        let (shares, bad) = parse_cmdline(
            "berth.share=t,rw,2f berth.share=t,xx,2f61 berth.share=t,ro,zz berth.share=t,ro,6162",
        );
        assert!(shares.is_empty(), "{shares:?}");
        assert_eq!(bad.len(), 4, "/ itself, bad mode, bad hex, relative path");
    }
}
