//! Seccomp: Docker's profile format, its default profile, and compilation
//! into BPF programs that the runtime helper installs just before `execve`.
//!
//! A profile is evaluated for one container at spec time: `includes` and
//! `excludes` (capabilities, architectures, minimum kernel) are resolved
//! against the container's capability set and this machine, names the
//! architecture lacks are skipped (as runc does), and the rest becomes BPF
//! with `seccompiler`.
//!
//! `seccompiler` gives a filter one on-match action, so a profile with
//! several actions becomes a stack of filters, relying on the kernel's rule
//! that the most restrictive result of all filters wins and, between equal
//! kinds, the most recently installed filter's data wins:
//!
//! 1. every rule's condition, on match `ALLOW`, otherwise the default action;
//! 2. for each non-`ALLOW` action, that action's rules, on match the action,
//!    otherwise `ALLOW`; installed after (1) so that e.g. `clone3` gets
//!    `ENOSYS` and not the default `EPERM`.
//!
//! Differences from libseccomp: only the native architecture is accepted
//! (a 32-bit system call on x86_64 kills the process instead of being
//! filtered by the i386 table), and overlapping rules of different actions
//! resolve to the most restrictive one.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

use super::syscalls;

/// A Docker seccomp profile (`profiles/seccomp/default.json` format).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub listener_path: Option<String>,
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    #[serde(default)]
    pub syscalls: Option<Vec<Syscall>>,
}

/// One entry of a profile's `syscalls`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    /// The legacy single-name form.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub names: Option<Vec<String>>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<Arg>>,
    #[serde(default)]
    pub includes: Option<Filter>,
    #[serde(default)]
    pub excludes: Option<Filter>,
}

/// An argument condition (`SCMP_CMP_*`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// `includes` / `excludes` of a syscall entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// One BPF instruction (`struct sock_filter`): code, jt, jf, k.
pub type Instruction = (u16, u8, u8, u32);

/// Compiled filters, in installation order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Program {
    pub filters: Vec<Vec<Instruction>>,
}

/// What the container and the machine look like to `includes`/`excludes`.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The container's capabilities (`CAP_*`).
    pub capabilities: &'a [String],
    /// Go's name of this architecture (`amd64`, `arm64`), as profiles use.
    pub arch: &'static str,
    /// `(major, minor)` of the running kernel.
    pub kernel: (u32, u32),
}

impl<'a> Context<'a> {
    /// This machine, with `capabilities`.
    pub fn native(capabilities: &'a [String]) -> Self {
        Self {
            capabilities,
            arch: go_arch(),
            kernel: kernel_version(),
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn kernel_version() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| parse_version(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

const EPERM: u32 = libc::EPERM as u32;

fn action(name: &str, errno: Option<u32>) -> Result<SeccompAction, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        "SCMP_ACT_NOTIFY" => return Err("action SCMP_ACT_NOTIFY is not supported".into()),
        other => return Err(format!("unknown action {other:?}")),
    })
}

fn condition(arg: &Arg) -> Result<SeccompCondition, String> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
        "SCMP_CMP_LE" => SeccompCmpOp::Le,
        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
        "SCMP_CMP_MASKED_EQ" => SeccompCmpOp::MaskedEq(arg.value),
        other => return Err(format!("unknown comparison {other:?}")),
    };
    let value = if arg.op == "SCMP_CMP_MASKED_EQ" {
        arg.value_two
    } else {
        arg.value
    };
    SeccompCondition::new(arg.index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("argument {}: {e}", arg.index))
}

/// Whether `entry` applies to this container and machine.
fn applies(entry: &Syscall, context: &Context<'_>) -> Result<bool, String> {
    let has_cap = |c: &String| context.capabilities.iter().any(|have| have == c);
    if let Some(inc) = &entry.includes {
        if let Some(arches) = &inc.arches
            && !arches.is_empty()
            && !arches.iter().any(|a| a == context.arch)
        {
            return Ok(false);
        }
        if let Some(caps) = &inc.caps
            && !caps.iter().all(has_cap)
        {
            return Ok(false);
        }
        if let Some(min) = inc.min_kernel.as_deref().filter(|m| !m.is_empty()) {
            let min = parse_version(min).ok_or_else(|| format!("invalid minKernel {min:?}"))?;
            if context.kernel < min {
                return Ok(false);
            }
        }
    }
    if let Some(exc) = &entry.excludes {
        if exc
            .arches
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == context.arch))
        {
            return Ok(false);
        }
        if exc.caps.as_ref().is_some_and(|c| c.iter().any(has_cap)) {
            return Ok(false);
        }
        if let Some(min) = exc.min_kernel.as_deref().filter(|m| !m.is_empty()) {
            let min = parse_version(min).ok_or_else(|| format!("invalid minKernel {min:?}"))?;
            if context.kernel >= min {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The rules of one entry: conditions on the same argument are alternatives
/// (one rule each, as runc does), otherwise they all must hold (one rule).
/// An empty list means "unconditionally".
fn rules(entry: &Syscall) -> Result<Vec<SeccompRule>, String> {
    let args = entry.args.as_deref().unwrap_or_default();
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let conditions = args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
    let mut indexes: Vec<u8> = args.iter().map(|a| a.index).collect();
    indexes.sort_unstable();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    let rules = if repeated {
        conditions
            .into_iter()
            .map(|c| SeccompRule::new(vec![c]))
            .collect::<Result<Vec<_>, _>>()
    } else {
        SeccompRule::new(conditions).map(|r| vec![r])
    };
    rules.map_err(|e| e.to_string())
}

type RuleMap = BTreeMap<i64, Option<Vec<SeccompRule>>>;

/// Adds `rules` for `nr`; `None` marks an unconditional match, which
/// absorbs any conditional rule.
fn add(map: &mut RuleMap, nr: i64, rules: Vec<SeccompRule>) {
    let slot = map.entry(nr).or_insert_with(|| Some(Vec::new()));
    match (slot.as_mut(), rules.is_empty()) {
        (_, true) => *slot = None,
        (Some(existing), false) => existing.extend(rules),
        (None, false) => {}
    }
}

fn filter(
    map: RuleMap,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    arch: TargetArch,
) -> Result<Vec<Instruction>, String> {
    let rules = map
        .into_iter()
        .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, on_match, arch).map_err(|e| e.to_string())?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the filter: {e}"))?;
    Ok(program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect())
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

/// Compiles `profile` for a container described by `context`.
pub fn compile(profile: &Profile, context: &Context<'_>) -> Result<Program, String> {
    if profile
        .listener_path
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err("listenerPath (seccomp notify) is not supported".into());
    }
    for flag in profile.flags.as_deref().unwrap_or_default() {
        if !matches!(
            flag.as_str(),
            "SECCOMP_FILTER_FLAG_LOG" | "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
        ) {
            return Err(format!("unsupported flag {flag:?}"));
        }
    }
    let default = action(&profile.default_action, profile.default_errno_ret)
        .map_err(|e| format!("defaultAction: {e}"))?;
    let arch = target_arch()?;
    let mut all = RuleMap::new();
    let mut by_action: Vec<(SeccompAction, RuleMap)> = Vec::new();
    for (i, entry) in profile
        .syscalls
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let what = |e: String| format!("syscalls[{i}]: {e}");
        let act = action(&entry.action, entry.errno_ret).map_err(what)?;
        let rules = rules(entry).map_err(what)?;
        let names: Vec<&String> = entry
            .name
            .iter()
            .chain(entry.names.iter().flatten())
            .collect();
        if names.is_empty() {
            return Err(what("no name or names".into()));
        }
        if !applies(entry, context).map_err(what)? {
            continue;
        }
        for nr in names.iter().filter_map(|n| syscalls::number(n)) {
            add(&mut all, nr, rules.clone());
            if act != SeccompAction::Allow && act != default {
                let slot = match by_action.iter_mut().find(|(a, _)| *a == act) {
                    Some((_, map)) => map,
                    None => {
                        by_action.push((act.clone(), RuleMap::new()));
                        &mut by_action.last_mut().expect("just pushed").1
                    }
                };
                add(slot, nr, rules.clone());
            }
        }
    }
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        filters.push(filter(all, default, SeccompAction::Allow, arch)?);
    }
    for (act, map) in by_action {
        filters.push(filter(map, SeccompAction::Allow, act, arch)?);
    }
    Ok(Program { filters })
}

/// Parses a profile as sent in `--security-opt seccomp=<json>`.
pub fn parse(json: &str) -> Result<Profile, String> {
    let profile: Profile =
        serde_json::from_str(json).map_err(|e| format!("decoding the profile: {e}"))?;
    if profile.default_action.is_empty() {
        return Err("the profile has no defaultAction".into());
    }
    Ok(profile)
}

/// Installs `program` on the calling thread, filter by filter. Without
/// `no_new_privs` this needs `CAP_SYS_ADMIN`.
#[expect(unsafe_code, reason = "the seccomp system call")]
pub(crate) fn install(program: &Program) -> std::io::Result<()> {
    for instructions in &program.filters {
        let mut filter: Vec<libc::sock_filter> = instructions
            .iter()
            .map(|&(code, jt, jf, k)| libc::sock_filter { code, jt, jf, k })
            .collect();
        let len = u16::try_from(filter.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seccomp filter too long")
        })?;
        let fprog = libc::sock_fprog {
            len,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: `fprog` points at `filter`, which outlives the call; the
        // kernel copies the program and keeps no reference to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &raw const fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
