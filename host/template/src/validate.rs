//! Step 3: judge values. Each document is checked on its own, so an error
//! points at the file, line and column that wrote the value; then the
//! merged, defaulted template is checked against the host (e.g. `vz` off
//! macOS), pointing at the layer whose value won.

use std::path::Path;

use crate::defaults::Host;
use crate::error::{Pos, ValidationError, ValidationErrors};
use crate::load::{Document, Loaded};
use crate::schema::{Arch, Size, Template, VmType};
use crate::tree::Seg;

/// Bounds shared with `berth_instance::InstanceConfig::validate`.
pub const MAX_CPUS: u32 = 64;
pub const MIN_MEMORY: Size = Size::from_bytes(256 * Size::MIB);
pub const MAX_MEMORY: Size = Size::from_bytes(256 * Size::GIB);
pub const MIN_DISK: Size = Size::from_bytes(Size::GIB);
pub const MAX_DISK: Size = Size::from_bytes(4 * Size::TIB);

struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, pos: Pos, message: impl Into<String>) {
        self.0.push(ValidationError {
            pos,
            message: message.into(),
        });
    }
}

/// Checks every document of `loaded` and the merged `template` (after
/// defaults). All errors are collected, in document order.
pub fn validate(loaded: &Loaded, template: &Template, host: &Host) -> Result<(), ValidationErrors> {
    let mut errors = Errors(Vec::new());
    for doc in &loaded.documents {
        document(doc, &mut errors);
    }
    merged(loaded, template, host, &mut errors);
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors.0))
    }
}

fn document(doc: &Document, errors: &mut Errors) {
    let t = &doc.template;
    if let Some(cpus) = t.cpus
        && !(1..=MAX_CPUS).contains(&cpus)
    {
        errors.push(
            doc.value_pos(&[Seg::Key("cpus")]),
            format!("cpus must be between 1 and {MAX_CPUS}, got {cpus}"),
        );
    }
    for (key, value, min, max) in [
        ("memory", t.memory, MIN_MEMORY, MAX_MEMORY),
        ("disk", t.disk, MIN_DISK, MAX_DISK),
    ] {
        if let Some(size) = value
            && !(min..=max).contains(&size)
        {
            errors.push(
                doc.value_pos(&[Seg::Key(key)]),
                format!("{key} must be between {min} and {max}, got {size}"),
            );
        }
    }
    for (i, image) in t.images.iter().enumerate() {
        for (key, file) in [("kernel", &image.kernel), ("initrd", &image.initrd)] {
            let Some(file) = file else { continue };
            let at = |leaf| {
                doc.value_pos(&[
                    Seg::Key("images"),
                    Seg::Index(i),
                    Seg::Key(key),
                    Seg::Key(leaf),
                ])
            };
            if file.location.trim().is_empty() {
                errors.push(
                    at("location"),
                    format!("images[{i}].{key}.location is empty"),
                );
            }
            if let Some(digest) = &file.digest
                && !is_sha256_digest(digest)
            {
                errors.push(
                    at("digest"),
                    format!(
                        "digest {digest:?} must be \"sha256:\" followed by 64 lowercase hex digits"
                    ),
                );
            }
        }
        if image.kernel.is_none() && image.initrd.is_none() {
            errors.push(
                doc.value_pos(&[Seg::Key("images"), Seg::Index(i)]),
                "an image entry needs a kernel or an initrd",
            );
        }
    }
    for (i, mount) in t.mounts.iter().flatten().enumerate() {
        let path = Path::new(&mount.location);
        let at = |leaf| doc.value_pos(&[Seg::Key("mounts"), Seg::Index(i), Seg::Key(leaf)]);
        if !path.is_absolute() {
            errors.push(
                at("location"),
                format!(
                    "mount location {} must be absolute or start with ~",
                    mount.location
                ),
            );
        } else if !path.exists() {
            errors.push(
                at("location"),
                format!("mount location {} does not exist", mount.location),
            );
        } else if !path.is_dir() {
            errors.push(
                at("location"),
                format!("mount location {} is not a directory", mount.location),
            );
        }
        if let Some(point) = &mount.mount_point
            && !point.starts_with('/')
        {
            errors.push(
                at("mountPoint"),
                format!("mountPoint {point} must be an absolute guest path"),
            );
        }
    }
    for (i, rule) in t.port_forwards.iter().enumerate() {
        let key = |leaf| doc.key_pos(&[Seg::Key("portForwards"), Seg::Index(i), Seg::Key(leaf)]);
        let item = doc.value_pos(&[Seg::Key("portForwards"), Seg::Index(i)]);
        match (rule.guest_port, rule.guest_port_range) {
            (None, None) => errors.push(item, "a port forward needs guestPort or guestPortRange"),
            (Some(_), Some(_)) => errors.push(
                key("guestPortRange"),
                "guestPort and guestPortRange are exclusive",
            ),
            _ => {}
        }
        if rule.host_port.is_some() && rule.host_port_range.is_some() {
            errors.push(
                key("hostPortRange"),
                "hostPort and hostPortRange are exclusive",
            );
        }
        for (leaf, range) in [
            ("guestPortRange", rule.guest_port_range),
            ("hostPortRange", rule.host_port_range),
        ] {
            if let Some(r) = range
                && r.is_empty()
            {
                errors.push(
                    doc.value_pos(&[Seg::Key("portForwards"), Seg::Index(i), Seg::Key(leaf)]),
                    format!(
                        "{leaf} [{}, {}] is empty: the first port must not exceed the last",
                        r.0.get(),
                        r.1.get()
                    ),
                );
            }
        }
        match (rule.guest_port_range, rule.host_port_range, rule.host_port) {
            (Some(g), Some(h), _) if !g.is_empty() && !h.is_empty() && g.len() != h.len() => {
                errors.push(
                    doc.value_pos(&[
                        Seg::Key("portForwards"),
                        Seg::Index(i),
                        Seg::Key("hostPortRange"),
                    ]),
                    format!(
                        "hostPortRange covers {} ports but guestPortRange covers {}",
                        h.len(),
                        g.len()
                    ),
                );
            }
            (Some(_), None, Some(_)) => errors.push(
                key("hostPort"),
                "a guestPortRange needs a hostPortRange, not a hostPort",
            ),
            (None, Some(_), _) if rule.guest_port.is_some() => errors.push(
                key("hostPortRange"),
                "a guestPort needs a hostPort, not a hostPortRange",
            ),
            _ => {}
        }
    }
    for name in t.env.keys() {
        if !is_env_name(name) {
            errors.push(
                doc.key_pos(&[Seg::Key("env"), Seg::Key(name)]),
                format!("{name:?} is not a valid environment variable name"),
            );
        }
    }
    for (i, p) in t.provision.iter().enumerate() {
        if p.script.trim().is_empty() {
            errors.push(
                doc.value_pos(&[Seg::Key("provision"), Seg::Index(i), Seg::Key("script")]),
                "provision script is empty",
            );
        }
    }
    for (i, p) in t.probes.iter().enumerate() {
        if p.script.trim().is_empty() {
            errors.push(
                doc.value_pos(&[Seg::Key("probes"), Seg::Index(i), Seg::Key("script")]),
                "probe script is empty",
            );
        }
    }
    if let Some(docker) = &t.docker {
        for (i, pool) in docker.address_pools.iter().enumerate() {
            let at = |leaf| {
                doc.value_pos(&[
                    Seg::Key("docker"),
                    Seg::Key("addressPools"),
                    Seg::Index(i),
                    Seg::Key(leaf),
                ])
            };
            match parse_cidr(&pool.base) {
                None => errors.push(
                    at("base"),
                    format!(
                        "address pool base {:?} is not a CIDR such as \"172.30.0.0/16\"",
                        pool.base
                    ),
                ),
                Some((bits, prefix)) if pool.size < prefix || pool.size > bits => errors.push(
                    at("size"),
                    format!(
                        "address pool size /{} must be between /{prefix} and /{bits}",
                        pool.size
                    ),
                ),
                Some(_) => {}
            }
        }
        for (i, mirror) in docker.registry_mirrors.iter().enumerate() {
            if !(mirror.starts_with("https://") || mirror.starts_with("http://")) {
                errors.push(
                    doc.value_pos(&[
                        Seg::Key("docker"),
                        Seg::Key("registryMirrors"),
                        Seg::Index(i),
                    ]),
                    format!("registry mirror {mirror:?} must be an http:// or https:// URL"),
                );
            }
        }
        for (i, reg) in docker.insecure_registries.iter().enumerate() {
            if reg.is_empty() || reg.contains("://") || reg.contains(char::is_whitespace) {
                errors.push(
                    doc.value_pos(&[
                        Seg::Key("docker"),
                        Seg::Key("insecureRegistries"),
                        Seg::Index(i),
                    ]),
                    format!(
                        "insecure registry {reg:?} must be host[:port] or a CIDR, without a scheme"
                    ),
                );
            }
        }
    }
    let resolver_hosts = t
        .host_resolver
        .iter()
        .flat_map(|r| r.hosts.keys().map(move |k| (true, k)));
    for (nested, name) in t.hosts.keys().map(|k| (false, k)).chain(resolver_hosts) {
        if !is_host_name(name) {
            let pos = if nested {
                doc.key_pos(&[Seg::Key("hostResolver"), Seg::Key("hosts"), Seg::Key(name)])
            } else {
                doc.key_pos(&[Seg::Key("hosts"), Seg::Key(name)])
            };
            errors.push(pos, format!("{name:?} is not a valid host name"));
        }
    }
}

fn merged(loaded: &Loaded, t: &Template, host: &Host, errors: &mut Errors) {
    // Where the winning value of a top-level key was written.
    let origin = |key: &str| -> Option<Pos> {
        let doc = loaded.documents.get(*loaded.origins.get(key)?)?;
        Some(doc.value_pos(&[Seg::Key(key)]))
    };
    let fallback = || {
        loaded
            .documents
            .first()
            .map(|d| Pos::new(&d.name, &d.text, 1, 1))
            .unwrap_or_else(|| Pos::new("<template>", "", 1, 1))
    };
    if t.vm_type == Some(VmType::Vz) {
        if !host.is_macos() {
            errors.push(
                origin("vmType").unwrap_or_else(fallback),
                format!(
                    "vmType vz needs macOS (this host runs {}); use qemu",
                    host.os
                ),
            );
        } else if t.arch.is_some() && t.arch != host.arch {
            errors.push(
                origin("arch").unwrap_or_else(fallback),
                format!(
                    "vmType vz cannot emulate {}; use the host architecture or vmType qemu",
                    arch_name(t.arch)
                ),
            );
        }
    }
    if t.arch.is_none() {
        errors.push(
            fallback(),
            format!(
                "the host architecture {} is not supported; set arch",
                std::env::consts::ARCH
            ),
        );
    }
}

fn arch_name(arch: Option<Arch>) -> &'static str {
    match arch {
        Some(Arch::X86_64) => "x86_64",
        Some(Arch::Aarch64) => "aarch64",
        None => "an unknown architecture",
    }
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `(address bits, prefix)` of an IPv4 or IPv6 CIDR.
fn parse_cidr(cidr: &str) -> Option<(u8, u8)> {
    let (addr, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    let bits = match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(_) => 32,
        std::net::IpAddr::V6(_) => 128,
    };
    (prefix <= bits).then_some((bits, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cidr_reads_v4_and_v6() {
        assert_eq!(parse_cidr("172.30.0.0/16"), Some((32, 16)));
        assert_eq!(parse_cidr("fd00::/8"), Some((128, 8)));
        assert_eq!(parse_cidr("172.30.0.0/33"), None);
        assert_eq!(parse_cidr("172.30.0.0"), None);
    }

    #[test]
    fn env_and_host_names_are_checked() {
        assert!(is_env_name("FOO_1"));
        assert!(!is_env_name("1FOO"));
        assert!(is_host_name("host.docker.internal"));
        assert!(!is_host_name("bad_name"));
    }
}
