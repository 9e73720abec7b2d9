//! A container's confinement from its `HostConfig`: seccomp, no_new_privs
//! and devices. Computed (and so validated) at create time, where an error
//! is the client's (400), and again for each start and exec.

use serde::{Deserialize, Serialize};

use super::devices::{self, DeviceCgroup, DeviceNode};
use super::seccomp::{self, Context, Profile};
use super::seccomp_default;
use crate::container::HostConfig;
use crate::{Error, Result};

/// The device part of a container's spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Nodes to create inside the container (`--device`, `--privileged`).
    pub nodes: Vec<DeviceNode>,
    /// What the container's cgroup lets it open.
    pub cgroup: DeviceCgroup,
}

/// Everything confinement adds to a container's runtime spec.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    pub seccomp: Option<seccomp::Program>,
    pub no_new_privileges: bool,
    pub devices: DeviceSpec,
}

enum SeccompChoice {
    Default,
    Unconfined,
    Custom(Box<Profile>),
}

struct Options {
    seccomp: SeccompChoice,
    no_new_privileges: bool,
}

fn invalid(option: &str, problem: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("invalid --security-opt {option}: {problem}"))
}

fn parse_bool(option: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(invalid(
            option,
            format!("{other:?} is not a boolean (true or false)"),
        )),
    }
}

/// Parses `HostConfig.SecurityOpt` the way dockerd does: `key=value` (the
/// old `key:value` form too), `no-new-privileges` alone meaning true.
fn options(security_opt: &[String]) -> Result<Options> {
    let mut parsed = Options {
        seccomp: SeccompChoice::Default,
        no_new_privileges: false,
    };
    for opt in security_opt {
        if opt == "no-new-privileges" {
            parsed.no_new_privileges = true;
            continue;
        }
        let (key, value) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "invalid --security-opt {opt:?}: expected key=value"
                ))
            })?;
        match key {
            "no-new-privileges" => {
                parsed.no_new_privileges = parse_bool("no-new-privileges", value)?;
            }
            "seccomp" => {
                parsed.seccomp = match value {
                    "unconfined" => SeccompChoice::Unconfined,
                    "builtin" | "" => SeccompChoice::Default,
                    json => SeccompChoice::Custom(Box::new(
                        seccomp::parse(json).map_err(|e| invalid("seccomp", e))?,
                    )),
                };
            }
            // Neither AppArmor nor SELinux is enabled in berth's VM; dockerd
            // ignores these options on such hosts too.
            "apparmor" | "label" => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "invalid --security-opt {opt:?}: unknown option {key:?} (berth supports seccomp, no-new-privileges, apparmor, label)"
                )));
            }
        }
    }
    Ok(parsed)
}

/// The confinement of a container (or an exec) with `host` and the
/// capability set `capabilities`.
pub fn confinement(host: &HostConfig, capabilities: &[String]) -> Result<Confinement> {
    let options = options(&host.security_opt)?;
    let context = Context::native(capabilities);
    let seccomp = match (&options.seccomp, host.privileged) {
        (_, true) | (SeccompChoice::Unconfined, _) => None,
        (SeccompChoice::Default, false) => Some(
            seccomp::compile(&seccomp_default::profile(), &context).map_err(|e| {
                Error::Runtime {
                    context: format!("compiling the default seccomp profile: {e}"),
                    source: None,
                }
            })?,
        ),
        (SeccompChoice::Custom(profile), false) => {
            Some(seccomp::compile(profile, &context).map_err(|e| invalid("seccomp", e))?)
        }
    };
    let (mut nodes, rules) = devices::resolve(&host.devices).map_err(Error::InvalidArgument)?;
    let cgroup = if host.privileged {
        let host_nodes = devices::host_devices().map_err(|e| Error::Runtime {
            context: format!("listing the host's devices for --privileged: {e}"),
            source: None,
        })?;
        // `--device` entries come last so that their paths win.
        nodes.splice(0..0, host_nodes);
        DeviceCgroup {
            allow_all: true,
            allow: Vec::new(),
        }
    } else {
        let mut allow = devices::default_rules();
        allow.extend(rules);
        DeviceCgroup {
            allow_all: false,
            allow,
        }
    };
    Ok(Confinement {
        seccomp,
        no_new_privileges: options.no_new_privileges,
        devices: DeviceSpec { nodes, cgroup },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(opts: &[&str]) -> HostConfig {
        HostConfig {
            security_opt: opts.iter().map(|o| (*o).to_owned()).collect(),
            ..HostConfig::default()
        }
    }

    fn caps() -> Vec<String> {
        super::super::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect()
    }

    #[test]
    fn defaults_match_dockerd() {
        let c = confinement(&host(&[]), &caps()).unwrap();
        assert!(c.seccomp.is_some());
        assert!(!c.no_new_privileges);
        assert!(!c.devices.cgroup.allow_all);
    }

    #[test]
    fn no_new_privileges_forms() {
        for (opt, want) in [
            ("no-new-privileges", true),
            ("no-new-privileges=true", true),
            ("no-new-privileges:true", true),
            ("no-new-privileges=false", false),
        ] {
            assert_eq!(
                confinement(&host(&[opt]), &caps())
                    .unwrap()
                    .no_new_privileges,
                want,
                "{opt}"
            );
        }
        let err = confinement(&host(&["no-new-privileges=maybe"]), &caps()).unwrap_err();
        assert!(err.to_string().contains("no-new-privileges"), "{err}");
    }

    #[test]
    fn unconfined_and_privileged_have_no_filter() {
        assert!(
            confinement(&host(&["seccomp=unconfined"]), &caps())
                .unwrap()
                .seccomp
                .is_none()
        );
        let privileged = HostConfig {
            privileged: true,
            ..HostConfig::default()
        };
        let c = confinement(&privileged, &caps()).unwrap();
        assert!(c.seccomp.is_none());
        assert!(c.devices.cgroup.allow_all);
        assert!(c.devices.nodes.iter().any(|n| n.path == "/dev/null"));
    }

    #[test]
    fn bad_profiles_name_the_option_and_the_problem() {
        let err = confinement(&host(&["seccomp={not json"]), &caps()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
        assert!(err.to_string().contains("--security-opt seccomp"), "{err}");
        let err = confinement(
            &host(&[r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOPE"}]}"#]),
            &caps(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_NOPE"), "{err}");
        let err = confinement(&host(&["bogus=1"]), &caps()).unwrap_err();
        assert!(err.to_string().contains("unknown option"), "{err}");
    }

    #[test]
    fn custom_profile_compiles() {
        let c = confinement(
            &host(&[r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#]),
            &caps(),
        )
        .unwrap();
        assert_eq!(c.seccomp.unwrap().filters.len(), 1);
    }
}
