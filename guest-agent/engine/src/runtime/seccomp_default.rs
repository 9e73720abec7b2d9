//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`),
//! expressed as a [`Profile`] value: default `ERRNO(EPERM)`, a fixed allow
//! list, and the entries whose effect depends on the container's
//! capabilities, the architecture or the kernel. Compare with the upstream
//! file when Docker changes it; [`tests`] pin the behaviours issue 13 names.

use super::seccomp::{Arg, Filter, Profile, Syscall};

/// Always allowed (upstream's first entry).
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2",
    "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
    "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
    "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1",
    "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
    "io_uring_enter", "io_uring_register", "io_uring_setup", "ipc", "kill",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
    "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "listxattrat",
    "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
    "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
    "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall",
    "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat",
    "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64",
    "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
    "removexattr", "removexattrat", "rename", "renameat", "renameat2", "restart_syscall",
    "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo",
    "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp",
    "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32",
    "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer",
    "setpgid", "setpriority", "setregid", "setregid32", "setresgid", "setresgid32",
    "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list",
    "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32",
    "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack",
    "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// Allowed only with `CAP_SYS_ADMIN`: mounts, namespaces (`clone`
/// unrestricted, `unshare`, `setns`), BPF, perf, hostname, quota, syslog.
#[rustfmt::skip]
const SYS_ADMIN: &[&str] = &[
    "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
    "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
    "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
    "umount2", "unshare",
];

/// Other calls each unlocked by one capability.
#[rustfmt::skip]
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
        "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Architecture-specific calls.
#[rustfmt::skip]
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (&["arm", "arm64"], &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
        "breakpoint", "cacheflush", "set_tls"]),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (&["s390", "s390x"], &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// `personality(2)` values a container may set (Linux, `UNAME26`,
/// `PER_LINUX32`, both, and the query `0xffffffff`).
const PERSONALITIES: &[u64] = &[0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`: the namespace flags.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

fn names(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|n| (*n).to_owned()).collect())
}

fn strings(list: &[&str]) -> Option<Vec<String>> {
    names(list)
}

fn allow(list: &[&str]) -> Syscall {
    Syscall {
        names: names(list),
        action: "SCMP_ACT_ALLOW".into(),
        ..Syscall::default()
    }
}

fn including_caps(mut entry: Syscall, caps: &[&str]) -> Syscall {
    entry.includes = Some(Filter {
        caps: strings(caps),
        ..Filter::default()
    });
    entry
}

fn arg(index: u8, value: u64, value_two: u64, op: &str) -> Arg {
    Arg {
        index,
        value,
        value_two,
        op: op.into(),
    }
}

/// Docker's default profile.
pub fn profile() -> Profile {
    let mut syscalls = vec![allow(ALLOWED)];
    syscalls.push(Syscall {
        includes: Some(Filter {
            min_kernel: Some("4.8".into()),
            ..Filter::default()
        }),
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    });
    // Every socket family but AF_VSOCK (40).
    syscalls.push(Syscall {
        args: Some(vec![arg(0, 40, 0, "SCMP_CMP_NE")]),
        ..allow(&["socket"])
    });
    for value in PERSONALITIES {
        syscalls.push(Syscall {
            args: Some(vec![arg(0, *value, 0, "SCMP_CMP_EQ")]),
            ..allow(&["personality"])
        });
    }
    for (arches, list) in BY_ARCH {
        syscalls.push(Syscall {
            includes: Some(Filter {
                arches: strings(arches),
                ..Filter::default()
            }),
            ..allow(list)
        });
    }
    syscalls.push(including_caps(allow(SYS_ADMIN), &["CAP_SYS_ADMIN"]));
    // Without CAP_SYS_ADMIN: clone only without namespace flags (s390 has
    // the flags in the second argument), clone3 fails with ENOSYS so that
    // libcs fall back to clone.
    let no_sys_admin = |arches: Option<&[&str]>| Filter {
        caps: strings(&["CAP_SYS_ADMIN"]),
        arches: arches.and_then(strings),
        ..Filter::default()
    };
    syscalls.push(Syscall {
        args: Some(vec![arg(0, CLONE_NAMESPACE_FLAGS, 0, "SCMP_CMP_MASKED_EQ")]),
        excludes: Some(no_sys_admin(Some(&["s390", "s390x"]))),
        ..allow(&["clone"])
    });
    syscalls.push(Syscall {
        args: Some(vec![arg(1, CLONE_NAMESPACE_FLAGS, 0, "SCMP_CMP_MASKED_EQ")]),
        includes: Some(Filter {
            arches: strings(&["s390", "s390x"]),
            ..Filter::default()
        }),
        excludes: Some(no_sys_admin(None)),
        ..allow(&["clone"])
    });
    syscalls.push(Syscall {
        names: names(&["clone3"]),
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret: Some(libc::ENOSYS as u32),
        excludes: Some(no_sys_admin(None)),
        ..Syscall::default()
    });
    for (cap, list) in BY_CAPABILITY {
        syscalls.push(including_caps(allow(list), &[cap]));
    }
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        syscalls: Some(syscalls),
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::seccomp::{Context, compile};
    use super::super::spec::DEFAULT_CAPABILITIES;
    use super::*;

    fn caps(extra: &[&str]) -> Vec<String> {
        DEFAULT_CAPABILITIES
            .iter()
            .chain(extra)
            .map(|c| (*c).to_owned())
            .collect()
    }

    #[test]
    fn default_profile_compiles_into_a_stack_of_two_filters() {
        let caps = caps(&[]);
        let program = compile(&profile(), &Context::native(&caps)).unwrap();
        // Allow list with EPERM default, then clone3 -> ENOSYS.
        assert_eq!(program.filters.len(), 2);
        assert!(program.filters.iter().all(|f| f.len() < 4096));
    }

    #[test]
    fn sys_admin_lifts_the_clone3_filter() {
        let caps = caps(&["CAP_SYS_ADMIN"]);
        let program = compile(&profile(), &Context::native(&caps)).unwrap();
        assert_eq!(program.filters.len(), 1);
    }
}
