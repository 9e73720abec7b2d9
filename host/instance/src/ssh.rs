//! The instance's SSH keys: an ed25519 user key (the client's identity) and
//! an ed25519 host key (the guest server's), generated on the first start
//! and kept in the instance directory with mode 0600.
//!
//! The private keys are the source of truth; the `.pub` files are rewritten
//! from them. Generation uses the pure-Rust `ssh-key` crate: host crates
//! must not link ring or aws-lc (they do not build for every host target).

use std::io::Write;
use std::path::{Path, PathBuf};

use fs_err::os::unix::fs::OpenOptionsExt;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::{Error, InstanceName, InstancePaths, Result, io_err};

/// Mode of every key file.
const KEY_MODE: u32 = 0o600;

/// The two key pairs of an instance.
#[derive(Debug, Clone)]
pub struct SshKeys {
    user: PrivateKey,
    host: PrivateKey,
}

impl SshKeys {
    /// Loads the keys, generating whichever is missing, and (re)writes the
    /// public key files. Only the host agent calls this.
    pub fn ensure(paths: &InstancePaths, name: &InstanceName) -> Result<Self> {
        let comment = format!("berth-{name}");
        let user = load_or_generate(&paths.ssh_user_key(), &comment)?;
        let host = load_or_generate(&paths.ssh_host_key(), &comment)?;
        let keys = Self { user, host };
        write_private(
            &paths.ssh_user_key_pub(),
            keys.user_public_key()?.as_bytes(),
        )?;
        write_private(
            &paths.ssh_host_key_pub(),
            keys.host_public_key()?.as_bytes(),
        )?;
        Ok(keys)
    }

    /// Loads existing keys; an error names the missing file.
    pub fn load(paths: &InstancePaths) -> Result<Self> {
        Ok(Self {
            user: load(&paths.ssh_user_key())?,
            host: load(&paths.ssh_host_key())?,
        })
    }

    /// The user's public key as an `authorized_keys` line.
    pub fn user_public_key(&self) -> Result<String> {
        public_line(&self.user)
    }

    /// The host's public key (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> Result<String> {
        public_line(&self.host)
    }

    /// The host private key in OpenSSH PEM, for the guest.
    pub fn host_private_key(&self) -> Result<String> {
        self.host
            .to_openssh(LineEnding::LF)
            .map(|pem| pem.as_str().to_owned())
            .map_err(|source| Error::EncodeSshKey { source })
    }
}

fn public_line(key: &PrivateKey) -> Result<String> {
    key.public_key()
        .to_openssh()
        .map_err(|source| Error::EncodeSshKey { source })
}

fn load(path: &Path) -> Result<PrivateKey> {
    let text = fs_err::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingSshKey {
            path: path.to_owned(),
        },
        _ => io_err("read", path)(e),
    })?;
    PrivateKey::from_openssh(&text).map_err(|source| Error::InvalidSshKey {
        path: path.to_owned(),
        source,
    })
}

fn load_or_generate(path: &Path, comment: &str) -> Result<PrivateKey> {
    match load(path) {
        Err(Error::MissingSshKey { .. }) => {}
        other => return other,
    }
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519)
        .map_err(|source| Error::GenerateSshKey { source })?;
    key.set_comment(comment);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|source| Error::EncodeSshKey { source })?;
    write_private(path, pem.as_bytes())?;
    Ok(key)
}

/// Writes `contents` to `path` with mode 0600, atomically (a temporary
/// file in the same directory, then a rename).
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let _ = fs_err::remove_file(&tmp);
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_MODE)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    fs_err::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::BerthHome;

    fn instance() -> (tempfile::TempDir, InstancePaths, InstanceName) {
        let dir = tempfile::tempdir().unwrap();
        let name: InstanceName = "dev".parse().unwrap();
        let paths = BerthHome::new(dir.path()).instance(&name);
        std::fs::create_dir(&paths.dir).unwrap();
        (dir, paths, name)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ensure_generates_ed25519_key_files_with_mode_0600() {
        let (_dir, paths, name) = instance();

        let keys = SshKeys::ensure(&paths, &name).unwrap();

        for path in [
            paths.ssh_user_key(),
            paths.ssh_user_key_pub(),
            paths.ssh_host_key(),
            paths.ssh_host_key_pub(),
        ] {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        let user_pub = keys.user_public_key().unwrap();
        assert!(user_pub.starts_with("ssh-ed25519 "), "{user_pub}");
        assert!(user_pub.ends_with(" berth-dev"), "{user_pub}");
        assert_eq!(
            std::fs::read_to_string(paths.ssh_user_key_pub()).unwrap(),
            user_pub
        );
        assert_ne!(user_pub, keys.host_public_key().unwrap());
        assert!(
            keys.host_private_key()
                .unwrap()
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
    }

    #[test]
    fn ensure_keeps_existing_keys() {
        let (_dir, paths, name) = instance();
        let first = SshKeys::ensure(&paths, &name).unwrap();

        let second = SshKeys::ensure(&paths, &name).unwrap();

        assert_eq!(
            first.host_public_key().unwrap(),
            second.host_public_key().unwrap()
        );
        assert_eq!(
            first.user_public_key().unwrap(),
            second.user_public_key().unwrap()
        );
    }

    #[test]
    fn load_without_keys_names_the_missing_file() {
        let (_dir, paths, _name) = instance();

        let err = SshKeys::load(&paths).unwrap_err();

        assert!(
            matches!(&err, Error::MissingSshKey { path } if *path == paths.ssh_user_key()),
            "{err}"
        );
    }

    #[test]
    fn load_rejects_a_corrupt_key_naming_its_file() {
        let (_dir, paths, name) = instance();
        SshKeys::ensure(&paths, &name).unwrap();
        std::fs::write(paths.ssh_host_key(), "not a key").unwrap();

        let err = SshKeys::load(&paths).unwrap_err();

        assert!(
            matches!(&err, Error::InvalidSshKey { path, .. } if *path == paths.ssh_host_key()),
            "{err}"
        );
    }
}
