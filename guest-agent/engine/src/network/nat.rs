//! Outbound NAT for bridge subnets, with nftables.
//!
//! Published ports do NOT use NAT: they are served by the userspace proxy in
//! [`super::ports`], which needs no `nft` binary in the VM image, works for
//! `127.0.0.1` host addresses (kernel DNAT to a bridge needs `route_localnet`
//! tricks), and is listening before `start` returns, so the host agent's
//! forwarder never races it. The price is one copy per byte through the
//! engine, which is fine for development workloads.
//!
//! Masquerade for traffic leaving a bridge subnet does need the kernel. The
//! engine keeps everything in one table, `ip berth`, and adds one rule per
//! bridge that matches only that bridge's subnet and only traffic that leaves
//! through another interface; nothing outside the subnet is rewritten. When
//! `nft` is not installed, containers still reach each other, the gateway
//! and published ports; only outbound traffic beyond the engine's namespace
//! is missing, and a warning says so once.

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

/// The rule set for one bridge, as an nft script. The chain for a bridge is
/// recreated from scratch each time, so repeating it is harmless.
pub fn masquerade_script(bridge: &str, subnet: Subnet) -> String {
    format!(
        "table ip {TABLE} {{\n\
         \tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         \tchain masq-{bridge} {{ }}\n\
         }}\n\
         flush chain ip {TABLE} masq-{bridge}\n\
         add rule ip {TABLE} masq-{bridge} ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
    )
}

/// Installs masquerade for `subnet` leaving through anything but `bridge`,
/// and enables forwarding in the engine's namespace.
pub async fn masquerade(bridge: &str, subnet: Subnet) -> Result<(), Error> {
    // ip_forward is per network namespace: this is the engine's.
    let forward = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(forward, "1").map_err(|source| Error::Command {
        command: format!("write 1 to {forward}"),
        source,
    })?;
    nft(&masquerade_script(bridge, subnet)).await?;
    // The jump is added once; a repeated jump would be harmless but untidy.
    let listed = Command::new("nft")
        .args(["list", "chain", "ip", TABLE, "postrouting"])
        .output()
        .await
        .map_err(|source| Error::Command {
            command: "nft list chain".into(),
            source,
        })?;
    if !String::from_utf8_lossy(&listed.stdout).contains(&format!("jump masq-{bridge}")) {
        nft(&format!(
            "add rule ip {TABLE} postrouting jump masq-{bridge}\n"
        ))
        .await?;
    }
    Ok(())
}

/// Removes the masquerade rules of `bridge` (a missing chain is fine).
pub async fn remove_masquerade(bridge: &str) {
    let listed = Command::new("nft")
        .args(["-a", "list", "chain", "ip", TABLE, "postrouting"])
        .output()
        .await;
    let Ok(listed) = listed else { return };
    let text = String::from_utf8_lossy(&listed.stdout);
    for line in text.lines() {
        if line.contains(&format!("jump masq-{bridge}"))
            && let Some(handle) = line.rsplit("# handle ").next()
        {
            let _ = nft(&format!(
                "delete rule ip {TABLE} postrouting handle {}\n",
                handle.trim()
            ))
            .await;
        }
    }
    let _ = nft(&format!("delete chain ip {TABLE} masq-{bridge}\n")).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_script_matches_only_the_subnet() {
        let script = masquerade_script("berth0", "172.17.0.0/16".parse().unwrap());
        assert!(script.contains(
            "add rule ip berth masq-berth0 ip saddr 172.17.0.0/16 oifname != \"berth0\" masquerade"
        ));
        assert!(script.contains("flush chain ip berth masq-berth0"));
    }
}
