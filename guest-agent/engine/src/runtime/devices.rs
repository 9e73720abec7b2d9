//! Devices: which device nodes a container gets in its `/dev`, and which
//! devices its cgroup lets it open.
//!
//! Docker's default allow-list: `mknod` of any node (`c *:* m`, `b *:* m`),
//! and read/write only on `/dev/null`, `zero`, `full`, `random`, `urandom`,
//! `tty`, `console`, `ptmx`, the pts devices (`136:*`) and `tun`. Everything
//! else — `/dev/kvm`, loop and disk devices, a node shipped in an image layer
//! — cannot be opened, whatever the file's mode says. `--device` adds one
//! node and its rule, `--privileged` every host device and no restriction.
//!
//! cgroup v1 enforces the list through `devices.deny`/`devices.allow`;
//! cgroup v2 through a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the
//! container's group, assembled here like runc, crun and youki do.

#![allow(
    unsafe_code,
    reason = "the bpf(2) system call, which libc does not wrap"
)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One entry of `HostConfig.Devices` (`--device host[:container][:perms]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    #[serde(default)]
    pub path_on_host: String,
    #[serde(default)]
    pub path_in_container: String,
    #[serde(default)]
    pub cgroup_permissions: String,
}

/// A device node the runtime creates inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceNode {
    /// Absolute path inside the container.
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One allow rule; `None` major or minor is `*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRule {
    /// `a` (all), `c` or `b`.
    pub kind: char,
    pub major: Option<u64>,
    pub minor: Option<u64>,
    /// Some of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceRule {
    fn new(kind: char, major: Option<u64>, minor: Option<u64>, access: &str) -> Self {
        Self {
            kind,
            major,
            minor,
            access: access.into(),
        }
    }

    /// The rule as cgroup v1 writes it: `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let number = |n: Option<u64>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        if self.kind == 'a' {
            return "a".into();
        }
        format!(
            "{} {}:{} {}",
            self.kind,
            number(self.major),
            number(self.minor),
            self.access
        )
    }
}

/// What a container's cgroup allows: everything, or only the listed rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCgroup {
    pub allow_all: bool,
    pub allow: Vec<DeviceRule>,
}

/// Docker's default allow-list.
pub fn default_rules() -> Vec<DeviceRule> {
    let mut rules = vec![
        DeviceRule::new('c', None, None, "m"),
        DeviceRule::new('b', None, None, "m"),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(DeviceRule::new('c', Some(major), Some(minor), "rwm"));
    }
    rules.push(DeviceRule::new('c', Some(136), None, "rwm"));
    rules
}

fn node_of(host: &Path, in_container: String) -> Result<Option<DeviceNode>, String> {
    let meta = std::fs::metadata(host).map_err(|e| e.to_string())?;
    let kind = match meta.file_type() {
        t if t.is_char_device() => 'c',
        t if t.is_block_device() => 'b',
        _ => return Ok(None),
    };
    let rdev = meta.rdev();
    Ok(Some(DeviceNode {
        path: in_container,
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Device nodes under `dir` (recursively), mapped under `target`.
fn nodes_under(dir: &Path, target: &str, skip: &[&str]) -> Result<Vec<DeviceNode>, String> {
    let mut nodes = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        let inside = format!("{}/{name}", target.trim_end_matches('/'));
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            nodes.extend(nodes_under(&path, &inside, &[])?);
        } else if kind.is_char_device() || kind.is_block_device() {
            // A node that vanished meanwhile (hot-unplug) is skipped.
            if let Ok(Some(node)) = node_of(&path, inside) {
                nodes.push(node);
            }
        }
    }
    Ok(nodes)
}

/// The host's devices for `--privileged`, like runc's `HostDevices`
/// (without the per-container file systems under `/dev`).
pub fn host_devices() -> Result<Vec<DeviceNode>, String> {
    nodes_under(
        Path::new("/dev"),
        "/dev",
        &["pts", "shm", "fd", "mqueue", "console", "ptmx", "tty"],
    )
}

fn permissions(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Ok("rwm".into());
    }
    if text.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        Ok(text.into())
    } else {
        Err(format!(
            "invalid cgroup permissions {text:?}: use a combination of r, w and m"
        ))
    }
}

/// Resolves `--device` mappings into nodes to create and cgroup rules.
pub fn resolve(mappings: &[DeviceMapping]) -> Result<(Vec<DeviceNode>, Vec<DeviceRule>), String> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for m in mappings {
        let host = PathBuf::from(&m.path_on_host);
        let fail = |e: String| {
            format!(
                "error gathering device information while adding custom device {:?}: {e}",
                m.path_on_host
            )
        };
        if !host.is_absolute() {
            return Err(fail("not an absolute path".into()));
        }
        let target = if m.path_in_container.is_empty() {
            m.path_on_host.clone()
        } else {
            m.path_in_container.clone()
        };
        if !target.starts_with('/') {
            return Err(fail(format!(
                "the path in the container {target:?} is not absolute"
            )));
        }
        let access = permissions(&m.cgroup_permissions).map_err(fail)?;
        let meta = std::fs::metadata(&host).map_err(|e| fail(e.to_string()))?;
        let found = if meta.is_dir() {
            nodes_under(&host, &target, &[]).map_err(fail)?
        } else {
            let node = node_of(&host, target).map_err(fail)?;
            vec![node.ok_or_else(|| fail("not a device node".into()))?]
        };
        for node in found {
            rules.push(DeviceRule::new(
                node.kind,
                Some(node.major),
                Some(node.minor),
                &access,
            ));
            nodes.push(node);
        }
    }
    Ok((nodes, rules))
}

/// Creates `nodes` in the container's root (before pivot_root), replacing
/// whatever is at each path. `parent_of` resolves a container path's parent
/// directory inside the root (creating it) and returns its descriptor and
/// the last component; every call below goes through that descriptor, so a
/// symlink in the image cannot place a node outside the root.
pub(crate) fn create_nodes(
    nodes: &[DeviceNode],
    parent_of: impl Fn(&str) -> Result<(std::os::fd::OwnedFd, String), String>,
) -> Result<(), String> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{Mode, SFlag, makedev, mknodat};
    use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};
    for node in nodes {
        let (dir, name) = parent_of(&node.path)?;
        match unlinkat(&dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(format!("replacing {}: {}", node.path, e.desc())),
        }
        let kind = if node.kind == 'b' {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFCHR
        };
        mknodat(
            &dir,
            name.as_str(),
            kind,
            Mode::from_bits_truncate(node.mode),
            makedev(node.major, node.minor),
        )
        .map_err(|e| format!("creating device {}: {}", node.path, e.desc()))?;
        fchownat(
            &dir,
            name.as_str(),
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| format!("chown {}: {}", node.path, e.desc()))?;
    }
    Ok(())
}

/// Applies `cgroup` to a cgroup v1 `devices` group directory.
pub fn apply_v1(dir: &Path, cgroup: &DeviceCgroup) -> std::io::Result<()> {
    let write = |file: &str, value: &str| {
        std::fs::write(dir.join(file), value).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("writing {value:?} to {}: {e}", dir.join(file).display()),
            )
        })
    };
    if cgroup.allow_all {
        return write("devices.allow", "a");
    }
    write("devices.deny", "a")?;
    for rule in &cgroup.allow {
        write("devices.allow", &rule.v1_line())?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes: class | op | source.
const LDX_MEM_W: u8 = 0x01 | 0x60;
const ALU32_AND_K: u8 = 0x04 | 0x50;
const ALU32_RSH_K: u8 = 0x04 | 0x70;
const ALU32_MOV_X: u8 = 0x04 | 0xb0 | 0x08;
const ALU64_MOV_K: u8 = 0x07 | 0xb0;
const JMP_JNE_K: u8 = 0x05 | 0x50;
const JMP_EXIT: u8 = 0x05 | 0x90;

/// `BPF_DEVCG_DEV_*` and `BPF_DEVCG_ACC_*`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// The device program for `rules`: 1 (allow) when a rule matches, else 0.
///
/// The context is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major;
/// u32 minor; }` with the device type in the low 16 bits of `access_type`
/// and the access bits in the high 16.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut out = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        // Jumps are patched to the end of the block once its length is known.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        match rule.kind {
            'c' => block.push((insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR), true)),
            'b' => block.push((insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK), true)),
            _ => {}
        }
        let access = rule.access.chars().fold(0, |acc, c| {
            acc | match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            }
        });
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE {
            block.push((insn(ALU32_MOV_X, 1, 3, 0, 0), false));
            block.push((insn(ALU32_AND_K, 1, 0, 0, !access), false));
            block.push((insn(JMP_JNE_K, 1, 0, 0, 0), true));
        }
        // Device numbers fit in 32 bits (12-bit major, 20-bit minor).
        if let Some(major) = rule.major {
            block.push((insn(JMP_JNE_K, 4, 0, 0, major as i32), true));
        }
        if let Some(minor) = rule.minor {
            block.push((insn(JMP_JNE_K, 5, 0, 0, minor as i32), true));
        }
        block.push((insn(ALU64_MOV_K, 0, 0, 0, 1), false));
        block.push((insn(JMP_EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (mut ins, jump)) in block.into_iter().enumerate() {
            if jump {
                ins.off = i16::try_from(len - i - 1).expect("a rule block is a few instructions");
            }
            out.push(ins);
        }
    }
    out.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    out.push(insn(JMP_EXIT, 0, 0, 0, 0));
    out
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(command: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a fully initialised `#[repr(C)]` prefix of `union
    // bpf_attr` for `command`, valid for the call; the size passed is its
    // size (the kernel treats the missing tail as zero).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_ref(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the device program for `rules` and attaches it to the cgroup v2
/// directory `dir`. The attachment keeps the program alive with the group.
pub fn attach_v2(dir: &Path, rules: &[DeviceRule]) -> std::io::Result<()> {
    let instructions = program(rules);
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"berth_devs");
    let mut log = vec![0u8; 64 * 1024];
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(instructions.len()).map_err(std::io::Error::other)?,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &load) {
        Ok(fd) => fd,
        Err(first) => {
            // Load again with the verifier's log, for the error message.
            load.log_level = 1;
            load.log_size = u32::try_from(log.len()).map_err(std::io::Error::other)?;
            load.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &load);
            let text = String::from_utf8_lossy(&log);
            return Err(std::io::Error::new(
                first.kind(),
                format!(
                    "loading the device cgroup program: {first}: {}",
                    text.trim_end_matches('\0').trim()
                ),
            ));
        }
    };
    let raw = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(raw) };
    let group = std::fs::File::open(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let attach = ProgAttachAttr {
        target_fd: u32::try_from(group.as_raw_fd()).map_err(std::io::Error::other)?,
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).map_err(std::io::Error::other)?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    bpf(BPF_PROG_ATTACH, &attach).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("attaching the device program to {}: {e}", dir.display()),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_render_like_docker() {
        let lines: Vec<String> = default_rules().iter().map(DeviceRule::v1_line).collect();
        assert_eq!(lines[0], "c *:* m");
        assert_eq!(lines[1], "b *:* m");
        assert!(lines.contains(&"c 1:3 rwm".to_owned()));
        assert!(lines.contains(&"c 136:* rwm".to_owned()));
        assert!(lines.contains(&"c 10:200 rwm".to_owned()));
        assert!(!lines.iter().any(|l| l.starts_with("c 10:232")));
    }

    #[test]
    fn program_jumps_land_on_the_next_rule() {
        let rules = vec![
            DeviceRule::new('c', Some(1), Some(3), "rwm"),
            DeviceRule::new('c', None, None, "m"),
        ];
        let prog = program(&rules);
        // prologue 6, rule 1: type, major, minor, mov, exit = 5,
        // rule 2: type, mov, and, jne, mov, exit = 6, epilogue 2.
        assert_eq!(prog.len(), 6 + 5 + 6 + 2);
        assert_eq!(prog[6].off, 4);
        assert_eq!(prog[7].off, 3);
        assert_eq!(prog[8].off, 2);
        assert_eq!(prog[11].off, 5);
        assert_eq!(prog[13].imm, !ACC_MKNOD);
        assert_eq!(prog[14].off, 2);
    }

    #[test]
    fn resolve_rejects_non_devices_and_bad_permissions() {
        let err = resolve(&[DeviceMapping {
            path_on_host: "/etc/hostname".into(),
            ..DeviceMapping::default()
        }])
        .unwrap_err();
        assert!(err.contains("not a device node"), "{err}");
        let err = resolve(&[DeviceMapping {
            path_on_host: "/dev/null".into(),
            cgroup_permissions: "rwx".into(),
            ..DeviceMapping::default()
        }])
        .unwrap_err();
        assert!(err.contains("invalid cgroup permissions"), "{err}");
        let (nodes, rules) = resolve(&[DeviceMapping {
            path_on_host: "/dev/null".into(),
            path_in_container: "/dev/mynull".into(),
            cgroup_permissions: "rw".into(),
        }])
        .unwrap();
        assert_eq!(nodes[0].path, "/dev/mynull");
        assert_eq!(rules[0].v1_line(), "c 1:3 rw");
    }
}
