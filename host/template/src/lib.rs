//! berth's instance templates: `berth.yaml`.
//!
//! A template describes the VM a project needs (see [`Template`] for every
//! field). Loading is three steps, one file each: [`load`] (parse with
//! serde-saphyr, follow `base:`, merge layers) -> [`defaults`] (fill from
//! the host) -> [`validate`] (judge values, pointing at file:line:col).
//!
//! # Sources
//! - `berth start` in a directory with `./berth.yaml` uses it ([`discover`]);
//! - `berth start ./x.yaml` uses that file; `berth start template:k3s` a
//!   shipped one ([`Source::parse`], [`list_builtin`]).
//!
//! # Inheritance and layers
//! `base: template:NAME | ./path.yaml | [a, b]` — paths are relative to the
//! including file; in `[a, b]`, `a` wins over `b`, and the including file
//! wins over both. Cycles are errors naming the chain. The layers are
//! `$BERTH_HOME/_config/default.yaml` < the template (with its bases) <
//! `$BERTH_HOME/_config/override.yaml`, each with its own bases.
//!
//! Merge rules (Lima's, see [`load::merge`]): scalars — the upper layer
//! wins; maps (`env`, `hosts`) merge per key, upper wins; `mounts`,
//! `portForwards`, `images` — upper entries first (first match wins; a
//! lower mount on an already-used mount point is dropped); `provision`,
//! `probes` — lower (base) entries first, so a base's setup runs before the
//! child's; `docker` list options — upper first, duplicates dropped; `dns`
//! — a non-empty upper list replaces the lower one.
//!
//! # Errors
//! [`ParseError`] (syntax, unknown field, wrong type, duplicate key, bad
//! size, port out of range) and [`ValidationError`] (missing mount
//! location, empty port range, `vz` off macOS, ...) are distinct; both
//! render as `file:line:col: error: message` plus the offending line and a
//! caret.

pub mod builtin;
pub mod defaults;
mod error;
pub mod instance;
pub mod load;
mod schema;
mod tree;
pub mod validate;

use std::path::{Path, PathBuf};

use berth_instance::config::DriverKind;
use berth_instance::{InstanceConfig, InstanceName};

pub use builtin::{builtin, description, list_builtin};
pub use defaults::Host;
pub use error::{Error, ParseError, Pos, Report, Result, ValidationError, ValidationErrors};
pub use load::{Layers, Source};
pub use schema::*;

/// The file `berth start` looks for in the current directory.
pub const PROJECT_FILE: &str = "berth.yaml";

/// Loads `source` with its bases, applies defaults and validates; no
/// user-wide layers.
pub fn load_template(source: &Source, host: &Host) -> Result<Template> {
    load_layered(source, &Layers::default(), host)
}

/// What `berth start` uses: `layers.default` < `source` < `layers.override_`,
/// then defaults, then validation. Use [`Layers::in_berth_home`] for the
/// real layers; tests pass explicit paths.
pub fn load_layered(source: &Source, layers: &Layers, host: &Host) -> Result<Template> {
    let loaded = load::load_layers(source, layers, host.home.as_deref())?;
    let template = defaults::apply(loaded.template.clone(), host);
    validate::validate(&loaded, &template, host).map_err(Error::Invalid)?;
    Ok(template)
}

/// `berth validate FILE` / `berth template validate FILE`: the file with
/// its bases, defaulted and validated for this host.
pub fn validate(path: &Path) -> Result<Template, Report> {
    load_template(&Source::File(path.to_path_buf()), &Host::detect())
}

/// `berth edit NAME`: validates the edited `text` as if it were saved at
/// `path` (relative `base:` and mount paths resolve next to it), before
/// anything is written.
pub fn validate_text(path: &Path, text: &str, host: &Host) -> Result<Template, Report> {
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let source = Source::Inline {
        name: path.display().to_string(),
        dir,
        text: text.to_owned(),
    };
    load_template(&source, host)
}

/// `berth template show NAME`: the YAML of a shipped template.
pub fn show(name: &str) -> Result<&'static str> {
    let name = name.strip_prefix("template:").unwrap_or(name);
    builtin(name).ok_or_else(|| Error::UnknownBuiltin {
        name: name.to_owned(),
        known: builtin::known(),
    })
}

/// `berth template copy NAME DEST`: writes a shipped template to `dest`
/// (a file, or a directory to receive `berth.yaml`); never overwrites.
pub fn copy(name: &str, dest: &Path) -> Result<PathBuf> {
    let text = show(name)?;
    let dest = if dest.is_dir() {
        dest.join(PROJECT_FILE)
    } else {
        dest.to_path_buf()
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dest)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Exists { path: dest.clone() },
            _ => Error::Write {
                path: dest.clone(),
                source,
            },
        })?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|source| Error::Write {
        path: dest.clone(),
        source,
    })?;
    Ok(dest)
}

/// `berth template schema`: the JSON Schema of [`Template`], pretty-printed.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Template);
    serde_json::to_string_pretty(&schema).expect("invariant: a JSON schema always serializes")
}

/// A project template found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// `<dir>/berth.yaml`.
    pub path: PathBuf,
    /// The directory's name made into a valid instance name.
    pub instance: InstanceName,
}

/// `berth start` with no template argument: `<dir>/berth.yaml` if it exists.
pub fn discover(dir: &Path) -> Option<Discovered> {
    let path = dir.join(PROJECT_FILE);
    if !path.is_file() {
        return None;
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let base = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Discovered {
        path,
        instance: sanitize_instance_name(&base),
    })
}

/// Lowercases, maps anything outside `[a-z0-9-]` to `-`, collapses runs of
/// `-`, trims them from the ends and cuts to the maximum length; `default`
/// if nothing is left.
pub fn sanitize_instance_name(raw: &str) -> InstanceName {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(berth_instance::name::MAX_LEN);
    let trimmed = out.trim_end_matches('-');
    trimmed
        .parse()
        .unwrap_or_else(|_| InstanceName::default_instance())
}

impl Template {
    /// The instance config a defaulted, validated template describes:
    /// `vmType` -> `driver`, `cpus`, `memory` -> `memory_mib` (rounded down),
    /// `disk` -> `disk_gib` (rounded up). Unset fields take
    /// `InstanceConfig::default()`'s values.
    pub fn to_instance_config(&self) -> InstanceConfig {
        let base = InstanceConfig::default();
        InstanceConfig {
            driver: match self.vm_type {
                Some(VmType::Vz) => DriverKind::Vz,
                Some(VmType::Qemu) => DriverKind::Qemu,
                None => base.driver,
            },
            cpus: self.cpus.unwrap_or(base.cpus),
            memory_mib: self.memory.map_or(base.memory_mib, |m| {
                u32::try_from(m.mib()).unwrap_or(u32::MAX)
            }),
            disk_gib: self.disk.map_or(base.disk_gib, |d| {
                u32::try_from(d.gib_ceil()).unwrap_or(u32::MAX)
            }),
            mounts: match &self.mounts {
                None => base.mounts,
                Some(mounts) => mounts
                    .iter()
                    .map(|m| berth_instance::config::MountConfig {
                        location: m.location.clone().into(),
                        mount_point: m
                            .mount_point
                            .clone()
                            .unwrap_or_else(|| m.location.clone())
                            .into(),
                        writable: m.writable.unwrap_or(true),
                    })
                    .collect(),
            },
            port_forwards: self
                .port_forwards
                .iter()
                .map(|r| {
                    let (start, end) = match (r.guest_port_range, r.guest_port) {
                        (Some(range), _) => (range.0.get(), range.1.get()),
                        (None, Some(p)) => (p.get(), p.get()),
                        (None, None) => (1, 65535),
                    };
                    berth_instance::config::PortForwardConfig {
                        guest_port_start: start,
                        guest_port_end: end,
                        guest_ip: r.guest_ip,
                        host_ip: r
                            .host_ip
                            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                        host_port_start: r
                            .host_port_range
                            .map(|range| range.0.get())
                            .or(r.host_port.map(schema::Port::get)),
                        proto: match r.proto {
                            schema::Proto::Tcp => "tcp",
                            schema::Proto::Udp => "udp",
                            schema::Proto::Any => "any",
                        }
                        .to_owned(),
                        ignore: r.ignore,
                    }
                })
                .collect(),
        }
    }

    /// Whether the guest runs the Docker engine (default true).
    pub fn docker_enabled(&self) -> bool {
        self.docker.as_ref().and_then(|d| d.enabled).unwrap_or(true)
    }

    /// The merged static host names (`hosts` and `hostResolver.hosts`; the
    /// top-level map wins).
    pub fn all_hosts(&self) -> std::collections::BTreeMap<String, std::net::IpAddr> {
        let mut out = self
            .host_resolver
            .as_ref()
            .map(|r| r.hosts.clone())
            .unwrap_or_default();
        out.extend(self.hosts.clone());
        out
    }

    /// `message` with `{{.Name}}` replaced by the instance name.
    pub fn render_message(&self, instance: &str) -> Option<String> {
        self.message.as_ref().map(|m| {
            m.replace("{{.Name}}", instance)
                .replace("{{ .Name }}", instance)
        })
    }

    /// The template as YAML-compatible JSON (for `berth template show
    /// --resolved` or debugging).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("invariant: a template always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            os: "linux".into(),
            arch: Some(Arch::X86_64),
            cpus: 8,
            memory: Some(Size::from_bytes(16 * Size::GIB)),
            home: Some(std::env::temp_dir()),
        }
    }

    #[test]
    fn every_shipped_template_loads_and_validates() {
        for name in list_builtin() {
            let t = load_template(&Source::Builtin(name.into()), &host())
                .unwrap_or_else(|e| panic!("template:{name}:\n{e}"));
            t.to_instance_config().validate().unwrap();
        }
    }

    #[test]
    fn default_template_runs_docker_and_shares_the_defaults_writable() {
        let t = load_template(&Source::Builtin("default".into()), &host()).unwrap();
        assert!(t.docker_enabled());
        let mounts = t.mounts.unwrap();
        let locations: Vec<PathBuf> = mounts.iter().map(|m| PathBuf::from(&m.location)).collect();
        assert_eq!(
            locations,
            berth_instance::config::default_mount_paths("linux", Some(&std::env::temp_dir()))
        );
        assert!(mounts.iter().all(|m| m.writable == Some(true)));
        assert!(t.port_forwards.is_empty());
    }

    #[test]
    fn minimal_template_has_no_engine() {
        let t = load_template(&Source::Builtin("minimal".into()), &host()).unwrap();
        assert!(!t.docker_enabled());
    }

    #[test]
    fn k3s_template_provisions_and_probes() {
        let t = load_template(&Source::Builtin("k3s".into()), &host()).unwrap();
        assert!(t.provision.iter().any(|p| p.script.contains("get.k3s.io")));
        assert_eq!(t.probes.len(), 1);
    }

    #[test]
    fn list_builtin_hides_partials() {
        assert_eq!(list_builtin(), vec!["default", "minimal", "k3s"]);
    }

    #[test]
    fn show_rejects_unknown_names_listing_known_ones() {
        let err = show("nope").unwrap_err().to_string();
        assert!(err.contains("default, minimal, k3s"), "{err}");
    }

    #[test]
    fn sanitize_instance_name_makes_directory_names_valid() {
        assert_eq!(
            sanitize_instance_name("My_Project.v2").as_str(),
            "my-project-v2"
        );
        assert_eq!(sanitize_instance_name("--").as_str(), "default");
        assert_eq!(
            sanitize_instance_name(&"a".repeat(40)).as_str(),
            "a".repeat(32)
        );
    }

    #[test]
    fn to_instance_config_maps_sizes() {
        let t = Template {
            vm_type: Some(VmType::Vz),
            cpus: Some(3),
            memory: Some("1.5GiB".parse().unwrap()),
            disk: Some("100GiB".parse().unwrap()),
            ..Template::default()
        };
        assert_eq!(
            t.to_instance_config(),
            InstanceConfig {
                driver: DriverKind::Vz,
                cpus: 3,
                memory_mib: 1536,
                disk_gib: 100,
                mounts: berth_instance::config::default_mounts(),
                port_forwards: Vec::new(),
            }
        );
    }

    #[test]
    fn render_message_substitutes_the_instance_name() {
        let t = load_template(&Source::Builtin("default".into()), &host()).unwrap();
        assert!(t.render_message("web").unwrap().contains("berth-web"));
    }

    #[test]
    fn validate_text_points_into_the_edited_buffer() {
        let err = validate_text(Path::new("/x/berth.yaml"), "cpus: 0\n", &host()).unwrap_err();
        let pos = err.pos().unwrap();
        assert_eq!(
            (pos.file.as_str(), pos.line, pos.column),
            ("/x/berth.yaml", 1, 7)
        );
    }

    #[test]
    fn schema_describes_camel_case_fields() {
        let s = schema();
        assert!(s.contains("\"portForwards\""));
        assert!(s.contains("\"vmType\""));
    }
}
