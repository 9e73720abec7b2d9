//! Outbound NAT and isolation between bridges, with nftables.
//!
//! Published ports do NOT use NAT: they are served by the userspace proxy in
//! [`super::ports`], which needs no `nft` binary in the VM image, works for
//! `127.0.0.1` host addresses (kernel DNAT to a bridge needs `route_localnet`
//! tricks), and is listening before `start` returns, so the host agent's
//! forwarder never races it. The price is one copy per byte through the
//! engine, which is fine for development workloads.
//!
//! Masquerade for traffic leaving a bridge subnet does need the kernel. The
//! engine keeps everything in one table, `ip berth`, with two chains per
//! bridge (see [`bridge_script`]): masquerade matching only that bridge's
//! subnet and only traffic that leaves through another link (nothing outside
//! the subnet is rewritten), and isolation from the other bridges. Forwarding
//! is switched on only after both are in place. When `nft` is not installed,
//! containers still reach each other, the gateway and published ports;
//! forwarding stays as it was, so nothing beyond the engine's namespace is
//! reached, and a warning says so.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::Error;
use super::ipam::Subnet;

/// The nftables table that holds every berth rule.
const TABLE: &str = "berth";

/// Runs `nft -f -` with `script` on stdin.
async fn nft(script: &str) -> Result<(), Error> {
    let command = "nft -f -".to_owned();
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Command {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|source| Error::Command {
                command: command.clone(),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
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

/// The rule set for one bridge, as an nft script. The bridge's chains are
/// flushed and refilled, so repeating the script is harmless.
///
/// - `masq-<bridge>`: masquerade `subnet` leaving through any other link
///   (absent for internal networks, which never leave the bridge).
/// - `fwd-<bridge>`: isolation, as Docker's `DOCKER-ISOLATION` chains:
///   nothing is forwarded from this bridge to another berth bridge, and an
///   internal network forwards nothing in or out at all.
pub fn bridge_script(bridge: &str, subnet: Subnet, internal: bool) -> String {
    let mut script = format!(
        "table ip {TABLE} {{\n\
         \tset bridges {{ type ifname; }}\n\
         \tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept; }}\n\
         \tchain masq-{bridge} {{ }}\n\
         \tchain fwd-{bridge} {{ }}\n\
         }}\n\
         add element ip {TABLE} bridges {{ \"{bridge}\" }}\n\
         flush chain ip {TABLE} masq-{bridge}\n\
         flush chain ip {TABLE} fwd-{bridge}\n\
         add rule ip {TABLE} fwd-{bridge} iifname \"{bridge}\" oifname != \"{bridge}\" oifname @bridges drop\n"
    );
    if internal {
        script.push_str(&format!(
            "add rule ip {TABLE} fwd-{bridge} iifname \"{bridge}\" oifname != \"{bridge}\" drop\n\
             add rule ip {TABLE} fwd-{bridge} oifname \"{bridge}\" iifname != \"{bridge}\" drop\n"
        ));
    } else {
        script.push_str(&format!(
            "add rule ip {TABLE} masq-{bridge} ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
        ));
    }
    script
}

/// Lists a base chain of the berth table with rule handles.
async fn list_chain(chain: &str) -> String {
    let listed = Command::new("nft")
        .args(["-a", "list", "chain", "ip", TABLE, chain])
        .output()
        .await;
    listed
        .map(|l| String::from_utf8_lossy(&l.stdout).into_owned())
        .unwrap_or_default()
}

/// Installs the NAT and isolation rules of `bridge` and enables forwarding
/// in the engine's namespace.
pub async fn install(bridge: &str, subnet: Subnet, internal: bool) -> Result<(), Error> {
    nft(&bridge_script(bridge, subnet, internal)).await?;
    // Each jump is added once; a repeated jump would be harmless but untidy.
    for (base, chain) in [("postrouting", "masq"), ("forward", "fwd")] {
        if !list_chain(base)
            .await
            .contains(&format!("jump {chain}-{bridge} "))
        {
            nft(&format!(
                "add rule ip {TABLE} {base} jump {chain}-{bridge}\n"
            ))
            .await?;
        }
    }
    // ip_forward is per network namespace: this is the engine's. Enabled
    // only once the isolation rules are in place.
    let forward = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(forward, "1").map_err(|source| Error::Command {
        command: format!("write 1 to {forward}"),
        source,
    })
}

/// Removes the rules of `bridge` (missing ones are fine).
pub async fn remove(bridge: &str) {
    for (base, chain) in [("postrouting", "masq"), ("forward", "fwd")] {
        let listed = list_chain(base).await;
        for line in listed.lines() {
            if line.contains(&format!("jump {chain}-{bridge} "))
                && let Some(handle) = line.rsplit("# handle ").next()
            {
                let _ = nft(&format!(
                    "delete rule ip {TABLE} {base} handle {}\n",
                    handle.trim()
                ))
                .await;
            }
        }
        let _ = nft(&format!("delete chain ip {TABLE} {chain}-{bridge}\n")).await;
    }
    let _ = nft(&format!(
        "delete element ip {TABLE} bridges {{ \"{bridge}\" }}\n"
    ))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_script_masquerades_only_the_subnet() {
        let script = bridge_script("berth0", "172.17.0.0/16".parse().unwrap(), false);
        assert!(script.contains(
            "add rule ip berth masq-berth0 ip saddr 172.17.0.0/16 oifname != \"berth0\" masquerade"
        ));
        assert!(script.contains("flush chain ip berth masq-berth0"));
    }

    #[test]
    fn bridge_script_of_an_internal_network_forwards_nothing() {
        let script = bridge_script("br-x", "10.1.0.0/24".parse().unwrap(), true);
        assert!(!script.contains("masquerade"));
        assert!(
            script.contains("add rule ip berth fwd-br-x iifname \"br-x\" oifname != \"br-x\" drop")
        );
    }
}
