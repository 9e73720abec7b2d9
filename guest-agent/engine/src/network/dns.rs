//! The embedded DNS resolver of user-defined networks.
//!
//! One UDP server per user network listens on the bridge's gateway address,
//! port 53, in the engine's namespace; containers on that network get it as
//! their only `nameserver`. It answers `A` queries for the names registered
//! on the network (container name, short id, hostname, aliases) and
//! forwards every other query unchanged to the first nameserver of the
//! engine's `/etc/resolv.conf`. Running in the engine's namespace is what
//! makes a `127.0.0.53`-style upstream reachable.
//!
//! Only the parts of RFC 1035 this needs are implemented: one question, no
//! name compression on input, one `A` record per address on output.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Names to addresses, for one network. Keys are lowercase, without the
/// trailing dot.
pub type Records = Arc<RwLock<HashMap<String, Vec<Ipv4Addr>>>>;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Answer TTL: short, so that a restarted container's new address is seen.
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed question.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Offset just past the question in the message.
    end: usize,
}

/// Parses the header and the first question of a query.
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(std::str::from_utf8(msg.get(pos..pos + len)?).ok()?);
        pos += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*msg.get(pos + 2)?, *msg.get(pos + 3)?]);
    Some(Question {
        name: labels.join(".").to_ascii_lowercase(),
        qtype,
        qclass,
        end: pos + 4,
    })
}

/// Builds the reply to `query` (whose question is `question`) with one `A`
/// record per address. An empty `addresses` gives NOERROR with no answers
/// (the name exists, e.g. for an `AAAA` query).
pub fn answer(query: &[u8], question: &Question, addresses: &[Ipv4Addr]) -> Vec<u8> {
    let mut out = Vec::with_capacity(question.end + addresses.len() * 16);
    out.extend_from_slice(&query[..2]); // id
    // QR=1, opcode copied, AA=1, RD copied; RA=1, rcode 0.
    out.push(0x80 | (query[2] & 0x79) | 0x04);
    out.push(0x80);
    out.extend_from_slice(&1u16.to_be_bytes());
    let count = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // NS, AR
    out.extend_from_slice(&query[12..question.end]);
    for ip in addresses.iter().take(usize::from(count)) {
        out.extend_from_slice(&[0xc0, 12]); // pointer to the question name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// A SERVFAIL reply echoing the question.
fn servfail(query: &[u8], question: &Question) -> Vec<u8> {
    let mut out = answer(query, question, &[]);
    out[3] = 0x82; // RA, rcode 2
    out
}

/// The first IPv4 nameserver in `resolv.conf` text.
pub fn upstream_from(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "nameserver")
            .then(|| words.next()?.parse::<Ipv4Addr>().ok())
            .flatten()
            .map(|ip| SocketAddr::from((ip, 53)))
    })
}

/// Starts the resolver on `listen` (the gateway address, port 53).
pub async fn serve(listen: SocketAddr, records: Records) -> std::io::Result<JoinHandle<()>> {
    let socket = Arc::new(UdpSocket::bind(listen).await?);
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, client)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let query = buf[..len].to_vec();
            let Some(question) = parse_query(&query) else {
                continue;
            };
            let local = (question.qclass == CLASS_IN)
                .then(|| records.read().ok()?.get(&question.name).cloned())
                .flatten();
            if let Some(addresses) = local {
                let addresses = if question.qtype == TYPE_A {
                    addresses
                } else {
                    Vec::new()
                };
                let _ = socket
                    .send_to(&answer(&query, &question, &addresses), client)
                    .await;
                continue;
            }
            let socket = socket.clone();
            tokio::spawn(async move {
                let reply = match forward(&query).await {
                    Some(reply) => reply,
                    None => servfail(&query, &question),
                };
                let _ = socket.send_to(&reply, client).await;
            });
        }
    }))
}

/// Sends `query` to the engine's upstream resolver and returns its reply.
async fn forward(query: &[u8]) -> Option<Vec<u8>> {
    let resolv = tokio::fs::read_to_string("/etc/resolv.conf").await.ok()?;
    let upstream = upstream_from(&resolv)?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let len = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dig web A` as sent by a stub resolver: id 0x1234, RD set.
    const QUERY_WEB_A: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'W', b'e', b'b', 0, 0, 1, 0, 1,
    ];

    #[test]
    fn parse_query_lowercases_the_name() {
        let question = parse_query(QUERY_WEB_A).unwrap();
        assert_eq!(question.name, "web");
        assert_eq!(question.qtype, TYPE_A);
    }

    #[test]
    fn parse_query_rejects_a_truncated_message() {
        assert!(parse_query(&QUERY_WEB_A[..15]).is_none());
    }

    #[test]
    fn answer_carries_one_a_record() {
        let question = parse_query(QUERY_WEB_A).unwrap();
        let reply = answer(QUERY_WEB_A, &question, &[Ipv4Addr::new(172, 18, 0, 2)]);
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[2] & 0x80, 0x80, "QR bit set");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[172, 18, 0, 2]);
    }

    #[test]
    fn upstream_is_the_first_ipv4_nameserver() {
        let conf = "search lan\nnameserver fe80::1\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n";
        assert_eq!(upstream_from(conf), Some("10.0.2.3:53".parse().unwrap()));
    }
}
