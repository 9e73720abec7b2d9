//! Kernel plumbing: persistent network namespaces, bridges and veth pairs.
//!
//! Links, addresses and routes are configured over rtnetlink, in the
//! engine's own namespace or, for a container's end, from a short-lived
//! thread that has entered the container's namespace ([`in_netns`]). No
//! `ip` binary is needed: the VM's initramfs has only busybox, whose `ip`
//! cannot create a veth peer inside another namespace.
//!
//! A container's namespace is created by a short-lived thread that
//! `unshare(CLONE_NEWNET)`s and bind-mounts its `/proc/thread-self/ns/net`
//! onto `<root>/netns/<container id>`; the bind mount keeps the namespace
//! alive until [`remove_netns`] unmounts it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use nix::mount::{MntFlags, MsFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::Error;
use super::ipam::Subnet;

/// A netlink connection in the calling thread's network namespace, driven
/// by a task on the current runtime.
fn connect(what: &str) -> Result<Handle, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Command {
        command: format!("open a netlink socket to {what}"),
        source,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

fn netlink_err(op: String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |e| Error::CommandFailed {
        command: op,
        stderr: e.to_string(),
    }
}

/// The index of link `name` in the handle's namespace, if it exists.
async fn link_index(handle: &Handle, name: &str) -> Option<u32> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    links
        .try_next()
        .await
        .ok()
        .flatten()
        .map(|l| l.header.index)
}

async fn require_index(handle: &Handle, name: &str) -> Result<u32, Error> {
    link_index(handle, name)
        .await
        .ok_or_else(|| Error::CommandFailed {
            command: format!("look up link {name}"),
            stderr: "no such device".into(),
        })
}

/// Runs `work` with a netlink handle inside the namespace bind-mounted at
/// `netns`. A dedicated thread enters the namespace (namespace membership
/// is per thread) and ends afterwards, so no pooled thread is left in it.
async fn in_netns<F, Fut>(netns: &Path, work: F) -> Result<(), Error>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>>,
{
    let path = netns.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            let fail = |op: &'static str| {
                let path = path.clone();
                move |source: std::io::Error| Error::Netns { op, path, source }
            };
            let file = std::fs::File::open(&path).map_err(fail("open"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| fail("enter")(e.into()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(fail("start a runtime in"))?;
            runtime.block_on(async move { work(connect("the container namespace")?).await })
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| Error::Netns {
        op: "configure",
        path: netns.to_owned(),
        source: std::io::Error::other("namespace thread panicked"),
    })?
}

/// Whether a link named `name` exists in the engine's namespace. Asks
/// netlink: `/sys/class/net` shows the namespace of whoever mounted sysfs,
/// which is not the engine's when it was started with `nsenter --net`.
pub async fn link_exists(name: &str) -> bool {
    match connect("the engine namespace") {
        Ok(handle) => link_index(&handle, name).await.is_some(),
        Err(_) => false,
    }
}

/// Creates bridge `name` with address `gateway/prefix` and brings it up;
/// an existing bridge is reused (its address is added if missing).
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, subnet: Subnet) -> Result<(), Error> {
    let handle = connect("the engine namespace")?;
    if link_index(&handle, name).await.is_none() {
        handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(netlink_err(format!("create bridge {name}")))?;
    }
    set_up(&handle, name, Some((gateway, subnet.prefix)), None).await
}

/// Brings link `name` of the engine's namespace up, with `address`
/// (replacing one it has) and a default route via `gateway` when given.
/// In the VM: `lo`, and `eth0` on the user-mode network.
pub async fn configure_link(
    name: &str,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
) -> Result<(), Error> {
    set_up(&connect("the engine namespace")?, name, address, gateway).await
}

async fn set_up(
    handle: &Handle,
    name: &str,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
) -> Result<(), Error> {
    let index = require_index(handle, name).await?;
    if let Some((ip, prefix)) = address {
        // `replace` is idempotent where a plain add fails with "File exists".
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(netlink_err(format!("add {ip}/{prefix} to {name}")))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_err(format!("bring {name} up")))?;
    if let Some(gateway) = gateway {
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(netlink_err(format!("add default route via {gateway}")))?;
    }
    Ok(())
}

/// Deletes link `name` if it exists.
pub async fn delete_link(name: &str) -> Result<(), Error> {
    let handle = connect("the engine namespace")?;
    if let Some(index) = link_index(&handle, name).await {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink_err(format!("delete link {name}")))?;
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
    in_netns(path, |handle| async move {
        set_up(&handle, "lo", None, None).await
    })
    .await
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

/// Creates the veth pair with its container end made directly inside the
/// container namespace, and configures address, MAC, link state and
/// (optionally) the default route there.
pub async fn add_veth(spec: &VethSpec<'_>) -> Result<(), Error> {
    let handle = connect("the engine namespace")?;
    if let Some(stale) = link_index(&handle, spec.host_name).await {
        // Left behind by a crashed engine: its peer's namespace is gone.
        handle
            .link()
            .del(stale)
            .execute()
            .await
            .map_err(netlink_err(format!("delete stale link {}", spec.host_name)))?;
    }
    let mac = parse_mac(spec.mac)?;
    let netns = std::fs::File::open(spec.netns).map_err(|source| Error::Netns {
        op: "open",
        path: spec.netns.to_owned(),
        source,
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(spec.container_name.to_owned())
        .address(mac.to_vec())
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let veth = LinkVeth::new(spec.host_name, spec.container_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle
        .link()
        .add(veth)
        .execute()
        .await
        .map_err(netlink_err(format!(
            "create veth {} (peer {} in {})",
            spec.host_name,
            spec.container_name,
            spec.netns.display()
        )))?;
    drop(netns);
    let configured = async {
        let bridge = require_index(&handle, spec.bridge).await?;
        let host = require_index(&handle, spec.host_name).await?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(host)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink_err(format!(
                "attach {} to {}",
                spec.host_name, spec.bridge
            )))?;
        let name = spec.container_name.to_owned();
        let (ip, prefix, gateway) = (spec.ip, spec.prefix, spec.default_gateway);
        in_netns(spec.netns, move |handle| async move {
            set_up(&handle, &name, Some((ip, prefix)), gateway).await
        })
        .await
    }
    .await;
    if configured.is_err()
        && let Some(index) = link_index(&handle, spec.host_name).await
    {
        let _ = handle.link().del(index).execute().await;
    }
    configured
}

/// `02:42:ac:11:00:02` to bytes.
fn parse_mac(mac: &str) -> Result<[u8; 6], Error> {
    let invalid = || Error::InvalidConfig(format!("invalid MAC address {mac:?}"));
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        let part = parts.next().ok_or_else(invalid)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mac_reads_six_hex_bytes() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02").unwrap(),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("02:42:ac:11:00:02:03").is_err());
        assert!(parse_mac("zz:42:ac:11:00:02").is_err());
    }
}
