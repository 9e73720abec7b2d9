//! The embedded DNS resolver of bridge networks.
//!
//! One server per bridge network listens, over UDP and TCP, on the bridge's
//! gateway address, port 53, in the engine's namespace; containers on that
//! network get it as their `nameserver`. On user-defined networks it
//! answers `A` queries for the names registered there (container name,
//! short id, hostname, aliases); every other query is forwarded unchanged,
//! over the transport it came in on, to the first nameserver of the
//! engine's `/etc/resolv.conf`. Running in the engine's namespace is what
//! makes a `127.0.0.53`-style upstream reachable.
//!
//! Only the parts of RFC 1035 this needs are implemented: one question, no
//! name compression on input, one `A` record per address on output.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// Names to addresses, for one network. Keys are lowercase, without the
/// trailing dot.
pub type Records = Arc<RwLock<HashMap<String, Vec<Ipv4Addr>>>>;

/// Per-container link aliases (`EndpointsConfig.Links`): the asking
/// container's address and the alias (lowercase) to the linked container's
/// name, looked up in [`Records`] when the query comes.
pub type Links = Arc<RwLock<HashMap<(Ipv4Addr, String), String>>>;

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

/// Starts the resolver on `listen` (the gateway address, port 53), over
/// UDP and TCP (clients retry over TCP when a reply is truncated).
/// Aborting the returned task stops both.
pub async fn serve(
    listen: SocketAddr,
    records: Records,
    links: Links,
) -> std::io::Result<JoinHandle<()>> {
    let udp = Arc::new(UdpSocket::bind(listen).await?);
    let tcp = TcpListener::bind(listen).await?;
    let tables = Tables { records, links };
    let udp_tables = tables.clone();
    Ok(tokio::spawn(async move {
        // Owned here, so aborting this task aborts the servers too.
        let mut servers = JoinSet::new();
        servers.spawn(serve_udp(udp, udp_tables));
        servers.spawn(serve_tcp(tcp, tables));
        while servers.join_next().await.is_some() {}
    }))
}

/// What a resolver answers from.
#[derive(Clone)]
struct Tables {
    records: Records,
    links: Links,
}

impl Tables {
    /// The addresses of `name` as `client` sees it: a registered name, or
    /// one of the client's link aliases.
    fn lookup(&self, name: &str, client: SocketAddr) -> Option<Vec<Ipv4Addr>> {
        let records = self.records.read().ok()?;
        if let Some(addresses) = records.get(name) {
            return Some(addresses.clone());
        }
        let std::net::IpAddr::V4(client) = client.ip() else {
            return None;
        };
        let links = self.links.read().ok()?;
        let target = links.get(&(client, name.to_owned()))?;
        records.get(target).cloned()
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, tables: Tables) {
    let mut queries = JoinSet::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            Some(_) = queries.join_next(), if !queries.is_empty() => continue,
        };
        let Ok((len, client)) = received else {
            continue;
        };
        let query = buf[..len].to_vec();
        let (socket, tables) = (socket.clone(), tables.clone());
        queries.spawn(async move {
            if let Some(reply) = resolve(&query, &tables, client, Upstream::Udp).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, tables: Tables) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((mut stream, client)) = accepted else {
            continue;
        };
        let tables = tables.clone();
        connections.spawn(async move {
            // RFC 7766: several length-prefixed queries per connection.
            while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await
            {
                let Some(reply) = resolve(&query, &tables, client, Upstream::Tcp).await else {
                    return;
                };
                if write_framed(&mut stream, &reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// An idle TCP client is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("dns message longer than 65535 bytes"))?;
    stream.write_u16(len).await?;
    stream.write_all(message).await
}

/// How a query is forwarded: the same way it came in.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    Udp,
    Tcp,
}

/// The reply to `query`: a local answer for a registered name, else the
/// upstream's reply (SERVFAIL when it cannot be reached). `None` for a
/// message that is not a query.
async fn resolve(
    query: &[u8],
    tables: &Tables,
    client: SocketAddr,
    upstream: Upstream,
) -> Option<Vec<u8>> {
    let question = parse_query(query)?;
    let local = (question.qclass == CLASS_IN)
        .then(|| tables.lookup(&question.name, client))
        .flatten();
    if let Some(addresses) = local {
        let addresses = if question.qtype == TYPE_A {
            addresses
        } else {
            Vec::new()
        };
        return Some(answer(query, &question, &addresses));
    }
    let forwarded = match upstream {
        Upstream::Udp => forward_udp(query).await,
        Upstream::Tcp => forward_tcp(query).await,
    };
    Some(forwarded.unwrap_or_else(|| servfail(query, &question)))
}

async fn upstream() -> Option<SocketAddr> {
    let resolv = tokio::fs::read_to_string("/etc/resolv.conf").await.ok()?;
    upstream_from(&resolv)
}

/// Sends `query` to the engine's upstream resolver over UDP.
async fn forward_udp(query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    socket.connect(upstream().await?).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Sends `query` to the engine's upstream resolver over TCP.
async fn forward_tcp(query: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream().await?).await.ok()?;
        write_framed(&mut stream, query).await.ok()?;
        read_framed(&mut stream).await.ok()
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
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
