//! TCP listeners of ordinary VM processes (not containers), for the host
//! to forward: `berth shell -- nc -l -p 9000` is reachable on the host's
//! `127.0.0.1:9000`, as in Lima.
//!
//! Listeners are found with netlink `sock_diag` (TCP sockets in the LISTEN
//! state, in the VM's own network namespace; containers have their own and
//! publish ports explicitly). The agent's own sockets (published-port
//! proxies, DNS) are left out by inode.
//!
//! Nothing polls while the VM is idle: scans are triggered by the kernel's
//! process events (proc connector: every `exec` and `exit`), then repeated
//! a few times shortly after ([`RESCAN`]) because a process binds some time
//! after it starts. Without the proc connector, a slow poll is the fallback.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::protocols::{NETLINK_CONNECTOR, NETLINK_SOCK_DIAG};
use netlink_sys::{Socket, SocketAddr};
use tokio::sync::mpsc;

/// Delays after a process event at which the listeners are scanned.
const RESCAN: [Duration; 4] = [
    Duration::from_millis(30),
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// The fallback poll interval when process events are unavailable.
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// A listening TCP socket: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Listener {
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
}

/// Watches listeners and reports each change as (opened, closed).
pub(crate) async fn watch(mut changed: impl FnMut(Vec<Listener>, Vec<Listener>)) {
    // sock_diag for TCP is a module; the image ships it, loaded only now.
    let loaded = tokio::task::spawn_blocking(|| {
        super::modules::ModuleIndex::open()?.load(&["inet_diag", "tcp_diag"], 1)
    })
    .await;
    if let Ok(Err(err)) = loaded {
        tracing::warn!("VM listeners may not be found: {err:#}");
    }
    let (tx, mut events) = mpsc::unbounded_channel();
    let has_events = match subscribe_process_events() {
        Ok(socket) => std::thread::Builder::new()
            .name("proc-events".into())
            .spawn(move || forward_process_events(&socket, &tx))
            .is_ok(),
        Err(err) => {
            tracing::warn!(%err, "no process events: polling listeners every {FALLBACK_POLL:?}");
            false
        }
    };
    let mut known = BTreeSet::new();
    let mut rescan = |known: &mut BTreeSet<Listener>| match scan() {
        Ok(now) => {
            let opened: Vec<_> = now.difference(known).copied().collect();
            let closed: Vec<_> = known.difference(&now).copied().collect();
            if !opened.is_empty() || !closed.is_empty() {
                changed(opened, closed);
            }
            *known = now;
        }
        Err(err) => tracing::warn!(%err, "scanning listening sockets"),
    };
    rescan(&mut known);
    // (start of the current burst, next RESCAN index)
    let mut schedule: Option<(Instant, usize)> = None;
    loop {
        let next = match schedule {
            Some((start, i)) => tokio::time::Instant::from_std(start + RESCAN[i]),
            None if has_events => tokio::time::Instant::now() + Duration::from_secs(86_400),
            None => tokio::time::Instant::now() + FALLBACK_POLL,
        };
        tokio::select! {
            event = events.recv(), if has_events => {
                if event.is_none() {
                    return;
                }
                // Keep a pending first scan; otherwise start a new burst.
                if !matches!(schedule, Some((_, 0))) {
                    schedule = Some((Instant::now(), 0));
                }
            }
            () = tokio::time::sleep_until(next) => {
                rescan(&mut known);
                schedule = match schedule {
                    Some((start, i)) if i + 1 < RESCAN.len() => Some((start, i + 1)),
                    _ => None,
                };
            }
        }
    }
}

/// The TCP listeners on loopback or wildcard addresses in this namespace,
/// without this process's own sockets.
pub(crate) fn scan() -> io::Result<BTreeSet<Listener>> {
    let own = own_socket_inodes();
    let mut out = BTreeSet::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        for (socket_id, inode) in dump_tcp_listeners(family, id)? {
            let ip = socket_id.source_address;
            if (ip.is_loopback() || ip.is_unspecified()) && !own.contains(&inode) {
                out.insert(Listener {
                    ip,
                    port: socket_id.source_port,
                });
            }
        }
    }
    Ok(out)
}

fn dump_tcp_listeners(family: u8, socket_id: SocketId) -> io::Result<Vec<(SocketId, u32)>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut receive = vec![0u8; 16 * 1024];
    loop {
        let size = socket.recv(&mut &mut receive[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&receive[offset..size])
                .map_err(|e| io::Error::other(format!("sock_diag reply: {e}")))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    out.push((response.header.socket_id, response.header.inode));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// Inodes of this process's sockets (`/proc/self/fd/* -> socket:[N]`).
fn own_socket_inodes() -> BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

// The proc connector (linux/connector.h, linux/cn_proc.h).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_DONE: u16 = 3;
/// `struct nlmsghdr` (16 bytes) + `struct cn_msg` header (20 bytes).
const EVENT_OFFSET: usize = 16 + 20;

fn subscribe_process_events() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_CONNECTOR)?;
    socket.bind(&SocketAddr::new(std::process::id(), CN_IDX_PROC))?;
    let mut msg = Vec::with_capacity(40);
    let len = 16 + 20 + 4u32;
    msg.extend_from_slice(&len.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
    msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
    msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
    msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
    msg.extend_from_slice(&4u16.to_ne_bytes()); // len
    msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
    msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    socket.send_to(&msg, &SocketAddr::new(0, CN_IDX_PROC), 0)?;
    Ok(socket)
}

/// Blocks on the proc connector; sends a tick for every exec and exit.
fn forward_process_events(socket: &Socket, tx: &mpsc::UnboundedSender<()>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(n) = socket.recv(&mut &mut buf[..], 0) else {
            return;
        };
        let Some(what) = buf
            .get(EVENT_OFFSET..EVENT_OFFSET + 4)
            .filter(|_| n >= EVENT_OFFSET + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        else {
            continue;
        };
        if (what == PROC_EVENT_EXEC || what == PROC_EVENT_EXIT) && tx.send(()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_a_listener_of_another_process_but_not_our_own() {
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let our_port = ours.local_addr().unwrap().port();
        let theirs = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let their_port = theirs.local_addr().unwrap().port();
        // Hand one listener to a child process and close our copy.
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                theirs,
            )))
            .spawn()
            .unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _child = Kill(child);

        let found = scan().unwrap();

        let ports: Vec<u16> = found.iter().map(|l| l.port).collect();
        assert!(ports.contains(&their_port), "{found:?}");
        assert!(
            !ports.contains(&our_port),
            "own sockets are left out: {found:?}"
        );
    }
}
