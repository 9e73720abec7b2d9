//! The guest's half of the control channel after the handshake: events to
//! the host, and the acknowledgements published ports wait for.
//!
//! One control session is current at a time (a restarted host agent opens
//! a new one, which replaces the old). Port events go to it; with no host
//! attached, a published port needs no acknowledgement.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_engine::network::{PortMapping, Protocol};
use berth_proto::GuestToHost;
use berth_proto::control::Proto;
use tokio::sync::{mpsc, oneshot};

use super::listeners::Listener;

/// How long a container's start waits for the host to listen on a port.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct HostLink {
    session: Mutex<Option<mpsc::UnboundedSender<GuestToHost>>>,
    /// Listeners of VM processes ([`super::listeners`]), re-announced to
    /// every new session.
    listeners: Mutex<BTreeSet<Listener>>,
    /// The share paths the host should watch, re-sent to every new session.
    watched: Mutex<BTreeSet<String>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    next_id: AtomicU64,
}

impl HostLink {
    /// Makes a new control session current; returns what it must send.
    pub(crate) fn attach(&self) -> mpsc::UnboundedReceiver<GuestToHost> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut session = lock(&self.session);
        for l in lock(&self.listeners).iter() {
            let _ = tx.send(listener_opened(*l));
        }
        let watched = lock(&self.watched);
        if !watched.is_empty() {
            let _ = tx.send(GuestToHost::WatchPaths {
                paths: watched.iter().cloned().collect(),
            });
        }
        *session = Some(tx);
        rx
    }

    /// Sets the share paths the host should watch; tells it when they change.
    pub(crate) fn set_watched(&self, paths: BTreeSet<String>) {
        let session = lock(&self.session);
        let mut watched = lock(&self.watched);
        if *watched == paths {
            return;
        }
        if let Some(tx) = session.as_ref() {
            let _ = tx.send(GuestToHost::WatchPaths {
                paths: paths.iter().cloned().collect(),
            });
        }
        *watched = paths;
    }

    /// Records VM listeners that appeared and went away, and tells the host.
    pub(crate) fn listeners_changed(&self, opened: &[Listener], closed: &[Listener]) {
        let session = lock(&self.session);
        let mut known = lock(&self.listeners);
        for l in closed {
            known.remove(l);
            if let Some(tx) = session.as_ref() {
                let _ = tx.send(GuestToHost::PortClosed {
                    proto: Proto::Tcp,
                    host_ip: l.ip.to_string(),
                    port: l.port,
                });
            }
        }
        for l in opened {
            known.insert(*l);
            if let Some(tx) = session.as_ref() {
                let _ = tx.send(listener_opened(*l));
            }
        }
    }

    /// Sends `msg` to the current session; false when there is none.
    pub(crate) fn send(&self, msg: GuestToHost) -> bool {
        lock(&self.session)
            .as_ref()
            .is_some_and(|tx| tx.send(msg).is_ok())
    }

    /// Asks the host to forward `mapping` and waits until it does. `Ok` when
    /// no host is attached (nothing to forward to) or the host did not
    /// answer in time (logged: the port still works inside the VM).
    pub(crate) async fn publish(&self, mapping: PortMapping) -> Result<(), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let sent = self.send(GuestToHost::PortOpened {
            proto: proto(mapping.protocol),
            host_ip: mapping.host_ip.to_string(),
            port: mapping.host_port,
            id,
        });
        if !sent {
            lock(&self.pending).remove(&id);
            return Ok(());
        }
        match tokio::time::timeout(ACK_TIMEOUT, rx).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(error))) => Err(error),
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                tracing::warn!(
                    port = mapping.host_port,
                    "the host agent did not confirm the port forward in time"
                );
                Ok(())
            }
        }
    }

    /// Tells the host a published port is gone.
    pub(crate) fn unpublish(&self, mapping: PortMapping) {
        self.send(GuestToHost::PortClosed {
            proto: proto(mapping.protocol),
            host_ip: mapping.host_ip.to_string(),
            port: mapping.host_port,
        });
    }

    /// Delivers the host's answer to a waiting [`HostLink::publish`].
    pub(crate) fn acknowledge(&self, id: u64, error: Option<String>) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(error);
        }
    }
}

fn listener_opened(l: Listener) -> GuestToHost {
    GuestToHost::PortOpened {
        proto: Proto::Tcp,
        host_ip: l.ip.to_string(),
        port: l.port,
        id: 0,
    }
}

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::*;

    fn mapping(port: u16) -> PortMapping {
        PortMapping {
            host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            host_port: port,
            container_port: 80,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn listeners_found_before_the_host_attached_are_announced_to_it() {
        let link = HostLink::default();
        let l = Listener {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9000,
        };
        link.listeners_changed(&[l], &[]);

        let mut rx = link.attach();

        assert!(matches!(
            rx.try_recv(),
            Ok(GuestToHost::PortOpened {
                port: 9000,
                id: 0,
                ..
            })
        ));
        link.listeners_changed(&[], &[l]);
        assert!(matches!(
            rx.try_recv(),
            Ok(GuestToHost::PortClosed { port: 9000, .. })
        ));
    }

    #[tokio::test]
    async fn publish_without_a_host_needs_no_ack() {
        let link = HostLink::default();
        assert_eq!(link.publish(mapping(8080)).await, Ok(()));
    }

    #[tokio::test]
    async fn publish_waits_for_the_host_and_returns_its_error() {
        let link = Arc::new(HostLink::default());
        let mut rx = link.attach();
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.publish(mapping(8080)).await }
        });

        let Some(GuestToHost::PortOpened { id, port, .. }) = rx.recv().await else {
            panic!("expected PortOpened");
        };
        assert_eq!(port, 8080);
        assert!(!waiting.is_finished());
        link.acknowledge(id, Some("address already in use".into()));

        assert_eq!(
            waiting.await.unwrap(),
            Err("address already in use".to_owned())
        );
    }
}
