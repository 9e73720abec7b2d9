//! The template's types: plain serde data, camelCase keys like Lima, unknown
//! keys rejected. Every field is optional so a template can be a partial
//! layer; [`crate::defaults`] fills the gaps.
//!
//! Newtypes ([`Size`], [`Port`], [`PortRange`], [`Arch`]) are checked while
//! parsing, so a bad value is a parse error pointing at the value.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `berth.yaml` layer, or the merged result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Template {
    /// Templates this one builds on: `template:NAME`, a path relative to this
    /// file, or a list of those (earlier entries win over later ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Bases>,
    /// VM backend: `vz` (macOS only) or `qemu`. Default: vz on macOS, qemu elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_type: Option<VmType>,
    /// Guest architecture. Default: the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// Virtual CPUs. Default: min(4, host CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Guest memory, e.g. "4GiB". Default: min(4GiB, half of host memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    /// Data disk size, e.g. "100GiB". Default: "32GiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Size>,
    /// Kernel and initrd overrides; the first entry matching the arch wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// Host directories shared into the guest. Default: the home directory, read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<Mount>>,
    /// Port forwarding rules; the first matching rule wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<PortForward>,
    /// Environment for provisioning scripts and probes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Scripts run in the guest on every boot, in order; they must be idempotent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provision: Vec<Provision>,
    /// Readiness probes; `berth start` waits until each exits 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// Docker engine options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    /// DNS servers for the guest; replaces (does not extend) a base's list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// Host-resolver settings: static names for the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_resolver: Option<HostResolver>,
    /// Static host names (name -> IP) for the guest; shorthand for `hostResolver.hosts`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, std::net::IpAddr>,
    /// Printed after `berth start` succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `base: x` or `base: [x, y]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Bases {
    One(String),
    Many(Vec<String>),
}

impl Bases {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Bases::One(one) => std::slice::from_ref(one),
            Bases::Many(many) => many,
        }
    }
}

/// VM backend. Both parse on every OS; validation rejects `vz` off macOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmType {
    Vz,
    Qemu,
}

/// Guest CPU architecture. Lima's spellings `amd64` and `arm64` are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Arch {
    #[serde(rename = "x86_64", alias = "amd64")]
    X86_64,
    #[serde(rename = "aarch64", alias = "arm64")]
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on, if the guest can be it.
    pub fn host() -> Option<Self> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

/// A byte size written with a binary unit: "512MiB", "4GiB", "1TiB" (also
/// "KiB" and a bare byte count). Decimal units ("4GB") are rejected because
/// they are ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(u64);

impl JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(B|KiB|MiB|GiB|TiB)?$",
            "description": "A size with a binary unit, e.g. \"4GiB\" or \"512MiB\""
        })
    }
}

impl Size {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;
    pub const TIB: u64 = 1 << 40;

    pub const fn from_bytes(bytes: u64) -> Self {
        Size(bytes)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
    /// Whole MiB, rounded down.
    pub const fn mib(self) -> u64 {
        self.0 / Self::MIB
    }
    /// Whole GiB, rounded up (a disk is never smaller than asked).
    pub const fn gib_ceil(self) -> u64 {
        self.0.div_ceil(Self::GIB)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = (&text[..split], text[split..].trim());
        let unit_bytes = match unit {
            "" | "B" => 1,
            "KiB" => Self::KIB,
            "MiB" => Self::MIB,
            "GiB" => Self::GIB,
            "TiB" => Self::TIB,
            "K" | "M" | "G" | "T" | "KB" | "MB" | "GB" | "TB" | "k" | "kB" | "Ki" | "Mi" | "Gi"
            | "Ti" => {
                return Err(format!(
                    "size {text:?} has an ambiguous unit {unit:?}: use a binary unit (KiB, MiB, GiB, TiB), e.g. \"4GiB\" or \"512MiB\""
                ));
            }
            _ => {
                return Err(format!(
                    "size {text:?} has an unknown unit {unit:?}: use KiB, MiB, GiB or TiB, e.g. \"4GiB\""
                ));
            }
        };
        let invalid =
            || format!("invalid size {text:?}: expected a number and a unit such as \"4GiB\"");
        if number.is_empty() {
            return Err(invalid());
        }
        let bytes = if let Some((int, frac)) = number.split_once('.') {
            // "1.5GiB": exact for the fractions people write.
            let int: u64 = int.parse().map_err(|_| invalid())?;
            if frac.is_empty() || frac.len() > 6 {
                return Err(invalid());
            }
            let frac_val: u64 = frac.parse().map_err(|_| invalid())?;
            let scale = 10u64.pow(frac.len() as u32);
            int.checked_mul(unit_bytes)
                .and_then(|v| v.checked_add(frac_val.checked_mul(unit_bytes)? / scale))
        } else {
            number
                .parse::<u64>()
                .map_err(|_| invalid())?
                .checked_mul(unit_bytes)
        };
        bytes
            .map(Size)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, name) in [
            (Self::TIB, "TiB"),
            (Self::GIB, "GiB"),
            (Self::MIB, "MiB"),
            (Self::KIB, "KiB"),
        ] {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{name}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A TCP/UDP port, 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Port(u16);

impl JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "integer", "minimum": 1, "maximum": 65535})
    }
}

impl Port {
    pub fn new(port: u64) -> Result<Self, String> {
        match u16::try_from(port) {
            Ok(p) if p != 0 => Ok(Port(p)),
            _ => Err(format!("port {port} is out of range: ports are 1-65535")),
        }
    }
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        let n = u64::try_from(n).map_err(|_| {
            serde::de::Error::custom(format!("port {n} is out of range: ports are 1-65535"))
        })?;
        Port::new(n).map_err(serde::de::Error::custom)
    }
}

/// An inclusive port range written `[first, last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PortRange(pub Port, pub Port);

impl PortRange {
    pub fn len(self) -> u32 {
        u32::from(self.1.get()).saturating_sub(u32::from(self.0.get())) + 1
    }
    pub fn is_empty(self) -> bool {
        self.1 < self.0
    }
}

/// A kernel/initrd override.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    /// Architecture this image is for. Default: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<File>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<File>,
}

/// A file to fetch: a local path or an http(s) URL, optionally pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct File {
    pub location: String,
    /// `sha256:<64 hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A host directory shared into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Host path; `~` expands to the home directory. Must exist.
    pub location: String,
    /// Guest path. Default: the (expanded) location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// Whether containers (and the VM) can write to it. Default: true;
    /// false makes the share read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<bool>,
}

/// Transport protocol a forwarding rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
    Any,
}

/// A port forwarding rule (Lima semantics; the first matching rule wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortForward {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_port_range: Option<PortRange>,
    /// Guest address the rule matches. Default 127.0.0.1 (which also matches 0.0.0.0 and ::).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<std::net::IpAddr>,
    /// Host address to listen on. Default 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::IpAddr>,
    /// Default: the guest port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<Port>,
    /// Default: the guest port range. Must be as long as it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_range: Option<PortRange>,
    #[serde(default)]
    pub proto: Proto,
    /// Do not forward matching ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore: bool,
}

/// Who runs a provisioning script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionMode {
    /// As root.
    System,
    /// As the default (non-root) guest user.
    User,
}

/// A script run in the guest on every boot, after mounts and before probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provision {
    pub mode: ProvisionMode,
    /// Script text; starts with a `#!` line or runs under `/bin/sh -eu`.
    pub script: String,
}

/// What a probe gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    #[default]
    Readiness,
}

/// A readiness probe: run (as root) until it exits 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probe {
    #[serde(default)]
    pub mode: ProbeMode,
    pub script: String,
    /// Shown when the probe keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Docker engine options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Docker {
    /// Run the Docker-compatible engine and forward its socket. Default true;
    /// `false` gives a bare VM (the `minimal` template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Pools for user-defined networks (dockerd `default-address-pools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_pools: Vec<AddressPool>,
    /// Registry mirrors for docker.io, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_mirrors: Vec<String>,
    /// Registries reached over plain HTTP or with unverified TLS (`host[:port]` or a CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
}

/// A network pool: `base` CIDR split into subnets of prefix length `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddressPool {
    /// e.g. "172.30.0.0/16".
    pub base: String,
    /// Prefix length of each network, e.g. 24.
    pub size: u8,
}

/// Guest name resolution served by the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostResolver {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// name -> IP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, std::net::IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_parses_binary_units() {
        assert_eq!("4GiB".parse::<Size>().unwrap().bytes(), 4 << 30);
        assert_eq!("512MiB".parse::<Size>().unwrap().mib(), 512);
        assert_eq!("1.5GiB".parse::<Size>().unwrap().mib(), 1536);
    }

    #[test]
    fn size_rejects_decimal_units_with_a_hint() {
        let err = "4GB".parse::<Size>().unwrap_err();
        assert!(err.contains("GiB"), "{err}");
    }

    #[test]
    fn size_displays_in_largest_exact_unit() {
        assert_eq!(Size::from_bytes(100 * Size::GIB).to_string(), "100GiB");
        assert_eq!(Size::from_bytes(1536 * Size::MIB).to_string(), "1536MiB");
    }

    #[test]
    fn port_rejects_zero_and_above_65535() {
        assert!(Port::new(0).is_err());
        assert!(Port::new(70000).is_err());
        assert_eq!(Port::new(65535).unwrap().get(), 65535);
    }
}
