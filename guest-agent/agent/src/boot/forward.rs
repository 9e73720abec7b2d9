//! Guest end of published ports: vsock port [`ports::PORT_FORWARD`].
//!
//! The host agent opens one stream per host connection (TCP) or per host
//! peer (UDP). Its first frame is a [`ForwardTarget`]; the agent connects to
//! that port in the VM (where the engine's port proxy, or any VM process,
//! listens) and then joins it to the stream: TCP as [`berth_proto::stream`]
//! frames, so a host client's half-close becomes `shutdown(SHUT_WR)` on the
//! VM connection and the VM side's EOF a half-close frame back; UDP as
//! [`datagram`] frames until either side closes.
//!
//! [`ports::PORT_FORWARD`]: berth_proto::ports::PORT_FORWARD

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail};
use berth_proto::control::{ForwardTarget, Proto};
use berth_proto::datagram;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Serves one forwarded stream to completion.
pub(crate) async fn serve<S>(mut stream: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (target, leftover) = read_target(&mut stream).await?;
    let ip: IpAddr = match &target.ip {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) => ip
            .parse()
            .with_context(|| format!("forward target address {ip:?} is not an IP"))?,
    };
    let addr = SocketAddr::new(ip, target.port);
    match target.proto {
        Proto::Tcp => {
            let conn = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr} in the VM"))?;
            let _ = conn.set_nodelay(true);
            berth_proto::stream_io::splice(conn, stream, &leftover)
                .await
                .with_context(|| format!("forwarding to {addr} in the VM"))?;
            Ok(())
        }
        Proto::Udp => udp(stream, addr, leftover).await,
    }
}

/// Reads the [`ForwardTarget`] frame; returns it with any bytes that came
/// after it in the same read.
async fn read_target<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(ForwardTarget, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        if let Some((target, used)) =
            berth_proto::decode::<ForwardTarget>(&buf).context("decoding the forward target")?
        {
            buf.drain(..used);
            return Ok((target, buf));
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the host closed the stream before naming a target");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn udp<S>(stream: S, addr: SocketAddr, mut buf: Vec<u8>) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting a UDP socket to {addr} in the VM"))?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut reply = vec![0u8; datagram::MAX_DATAGRAM];
    let mut out = Vec::new();
    loop {
        while let Some((range, used)) = datagram::decode(&buf) {
            // A refused datagram (nothing listening yet) is dropped, as UDP does.
            let _ = socket.send(&buf[range]).await;
            buf.drain(..used);
        }
        tokio::select! {
            n = rd.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            got = socket.recv(&mut reply) => {
                let Ok(n) = got else { continue };
                out.clear();
                datagram::encode_into(&reply[..n], &mut out);
                wr.write_all(&out).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_proto::stream;
    use berth_proto::stream_io::{Framed, PeerEnd};
    use tokio::net::{TcpListener, UnixStream};

    use super::*;

    fn target(proto: Proto, port: u16) -> Vec<u8> {
        berth_proto::encode(&ForwardTarget {
            proto,
            port,
            ip: None,
        })
    }

    #[tokio::test]
    async fn tcp_bytes_sent_with_the_target_frame_reach_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut host, guest) = UnixStream::pair().unwrap();
        tokio::spawn(serve(guest));

        let mut first = target(Proto::Tcp, port);
        stream::encode_data(b"ping", &mut first);
        host.write_all(&first).await.unwrap();
        let mut host = Framed::new(host);
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).await.unwrap();
        conn.write_all(b"pong").await.unwrap();
        let mut back = [0u8; 4];
        host.read_exact(&mut back).await.unwrap();

        assert_eq!(&got, b"ping");
        assert_eq!(&back, b"pong");
    }

    /// `docker run -i` through a published port, `nc -N`: the host's
    /// half-close frame is a FIN on the VM connection, and the answer the
    /// VM side sends afterwards still reaches the host.
    #[tokio::test]
    async fn a_host_half_close_is_a_fin_and_the_answer_still_comes_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut host, guest) = UnixStream::pair().unwrap();
        let served = tokio::spawn(serve(guest));
        host.write_all(&target(Proto::Tcp, port)).await.unwrap();
        let mut host = Framed::new(host);
        host.write_all(b"input").await.unwrap();
        host.shutdown().await.unwrap();

        let (mut conn, _) = listener.accept().await.unwrap();
        let mut input = Vec::new();
        conn.read_to_end(&mut input).await.unwrap();
        conn.write_all(b"output").await.unwrap();
        drop(conn);
        let mut output = Vec::new();
        host.read_to_end(&mut output).await.unwrap();

        assert_eq!(input, b"input");
        assert_eq!(output, b"output");
        tokio::time::timeout(std::time::Duration::from_secs(5), served)
            .await
            .expect("both directions done: the stream ends")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_guest_sides_close_reaches_the_host_as_a_half_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut host, guest) = UnixStream::pair().unwrap();
        tokio::spawn(serve(guest));
        host.write_all(&target(Proto::Tcp, port)).await.unwrap();
        let mut host = Framed::new(host);
        let (mut conn, _) = listener.accept().await.unwrap();

        // An HTTP/1.0 server: answers and closes.
        conn.write_all(b"response").await.unwrap();
        drop(conn);

        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            host.read_to_end(&mut got),
        )
        .await
        .expect("the host sees the end of the response")
        .unwrap();
        assert_eq!(got, b"response");
        assert_eq!(host.peer(), PeerEnd::HalfClosed);
    }

    #[tokio::test]
    async fn udp_datagrams_keep_their_boundaries_both_ways() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            loop {
                let (n, peer) = echo.recv_from(&mut buf).await.unwrap();
                let mut reply = b"echo:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                echo.send_to(&reply, peer).await.unwrap();
            }
        });
        let (mut host, guest) = UnixStream::pair().unwrap();
        tokio::spawn(serve(guest));

        let mut frames = target(Proto::Udp, port);
        datagram::encode_into(b"one", &mut frames);
        host.write_all(&frames).await.unwrap();
        let mut got = vec![0u8; 10];
        host.read_exact(&mut got).await.unwrap();

        let (range, used) = datagram::decode(&got).unwrap();
        assert_eq!(&got[range], b"echo:one");
        assert_eq!(used, 10);
    }

    #[tokio::test]
    async fn a_closed_target_port_ends_the_stream_with_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (mut host, guest) = UnixStream::pair().unwrap();
        host.write_all(&target(Proto::Tcp, port)).await.unwrap();

        let err = serve(guest).await.unwrap_err();

        assert!(
            format!("{err:#}").contains(&format!("127.0.0.1:{port}")),
            "{err:#}"
        );
    }
}
