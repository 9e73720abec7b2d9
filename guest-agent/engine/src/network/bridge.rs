//! Kernel plumbing: persistent network namespaces, bridges and veth pairs.
//!
//! Links and addresses are configured by running iproute2's `ip` (in the
//! engine's own namespace, or inside a container's with
//! `nsenter --net=<path> ip ...`). That keeps this module free of `unsafe`
//! and of a netlink dependency, and it is what native Linux hosts have.
//! TODO(#3): the VM's initramfs only has busybox `ip`, which cannot name a
//! veth peer or move it into a namespace by path; this file (and only this
//! file) moves to `rtnetlink` for the VM. Its functions keep their
//! signatures.
//!
//! A container's namespace is created by a short-lived thread that
//! `unshare(CLONE_NEWNET)`s and bind-mounts its `/proc/thread-self/ns/net`
//! onto `<root>/netns/<container id>`; the bind mount keeps the namespace
//! alive until [`remove_netns`] unmounts it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use nix::mount::{MntFlags, MsFlags};
use tokio::process::Command;

use super::Error;
use super::ipam::Subnet;

/// Runs `ip args...` in the engine's namespace.
async fn ip(args: &[&str]) -> Result<(), Error> {
    run("ip", args).await
}

/// Runs `ip args...` inside the namespace bind-mounted at `netns`.
async fn ip_in(netns: &Path, args: &[&str]) -> Result<(), Error> {
    let mut full = vec![format!("--net={}", netns.display()), "ip".to_owned()];
    full.extend(args.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    run("nsenter", &refs).await
}

async fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| Error::Command {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Whether a link named `name` exists in the engine's namespace. Asks
/// netlink (through `ip`): `/sys/class/net` shows the namespace of whoever
/// mounted sysfs, which is not the engine's when it was started with
/// `nsenter --net`.
pub async fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Creates bridge `name` with address `gateway/prefix` and brings it up;
/// an existing bridge is reused (its address is added if missing).
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: Subnet) -> Result<(), Error> {
    if !link_exists(name).await {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
    }
    let address = format!("{gateway}/{}", subnet.prefix);
    // `replace` is idempotent where `add` fails with "File exists".
    ip(&["addr", "replace", &address, "dev", name]).await?;
    ip(&["link", "set", name, "up"]).await
}

/// Deletes bridge `name` if it exists.
pub async fn delete_link(name: &str) -> Result<(), Error> {
    if link_exists(name).await {
        ip(&["link", "del", name]).await?;
    }
    Ok(())
}

/// Creates a persistent network namespace bind-mounted at `path`, with `lo` up.
pub async fn create_netns(path: &Path) -> Result<(), Error> {
    let target = path.to_owned();
    let created = std::thread::spawn(move || -> Result<(), Error> {
        let fail = |op: &'static str| {
            let path = target.clone();
            move |errno: nix::Error| Error::Netns {
                op,
                path,
                source: std::io::Error::from(errno),
            }
        };
        std::fs::File::create(&target).map_err(|source| Error::Netns {
            op: "create",
            path: target.clone(),
            source,
        })?;
        // Only this thread moves: the namespace change is per thread, and the
        // thread ends right after the bind mount.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(fail("unshare"))?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail("bind-mount"))
    })
    .join()
    .map_err(|_| Error::Netns {
        op: "create",
        path: path.to_owned(),
        source: std::io::Error::other("namespace thread panicked"),
    });
    let result = created.and_then(|r| r);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result?;
    ip_in(path, &["link", "set", "lo", "up"]).await
}

/// Unmounts and removes the namespace at `path` (missing is fine). The
/// kernel destroys the namespace, and the veth ends in it, once no process
/// remains inside.
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// One veth end in a container namespace.
pub struct VethSpec<'a> {
    /// Host-side name (at most 15 bytes), enslaved to `bridge`.
    pub host_name: &'a str,
    pub bridge: &'a str,
    pub netns: &'a Path,
    /// Name inside the container (`eth0`, `eth1`, ...).
    pub container_name: &'a str,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub mac: &'a str,
    /// Installed as the default route when set (the first network).
    pub default_gateway: Option<Ipv4Addr>,
}

/// Creates the veth pair, moves one end into the container namespace and
/// configures address, MAC, link state and (optionally) the default route.
pub async fn add_veth(spec: &VethSpec<'_>) -> Result<(), Error> {
    let netns = spec.netns.display().to_string();
    if link_exists(spec.host_name).await {
        // Left behind by a crashed engine: its peer's namespace is gone.
        ip(&["link", "del", spec.host_name]).await?;
    }
    ip(&[
        "link",
        "add",
        spec.host_name,
        "type",
        "veth",
        "peer",
        "name",
        spec.container_name,
        "netns",
        &netns,
    ])
    .await?;
    let configured = async {
        ip(&["link", "set", spec.host_name, "master", spec.bridge, "up"]).await?;
        let address = format!("{}/{}", spec.ip, spec.prefix);
        ip_in(
            spec.netns,
            &["link", "set", spec.container_name, "address", spec.mac],
        )
        .await?;
        ip_in(
            spec.netns,
            &["addr", "add", &address, "dev", spec.container_name],
        )
        .await?;
        ip_in(spec.netns, &["link", "set", spec.container_name, "up"]).await?;
        if let Some(gateway) = spec.default_gateway {
            let gateway = gateway.to_string();
            ip_in(spec.netns, &["route", "add", "default", "via", &gateway]).await?;
        }
        Ok(())
    }
    .await;
    if configured.is_err() {
        let _ = ip(&["link", "del", spec.host_name]).await;
    }
    configured
}
