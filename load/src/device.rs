//! One device's MQTT 3.1.1 connection, written for load: a socket bound to a chosen source
//! address (`IP_BIND_ADDRESS_NO_PORT`, so tens of thousands of connections share few addresses),
//! frames from `rumqttc::mqttbytes`, one read buffer, nothing else per connection.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use rumqttc::mqttbytes::v4::{self, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::protocol::DeviceSpec;

const MAX_PACKET: usize = 1 << 20;

pub struct Connection {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
}

impl Connection {
    /// TCP connect from `source`, CONNECT (and the device's one SUBSCRIBE); returns the
    /// connection and the CONNECT → CONNACK time.
    pub async fn open(
        server: SocketAddr,
        source: Ipv4Addr,
        device: &DeviceSpec,
        keep_alive_secs: u16,
    ) -> anyhow::Result<(Self, Duration)> {
        let stream = tcp_connect(server, source).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self { stream, read: BytesMut::with_capacity(512), write: BytesMut::with_capacity(256) };
        let mut connect = v4::Connect::new(device.client_id.as_str());
        connect.keep_alive = keep_alive_secs;
        connect.login = Some(v4::Login::new(device.username.as_str(), device.password.as_str()));
        connect.write(&mut conn.write).map_err(frame_error)?;
        let started = Instant::now();
        conn.flush().await?;
        match conn.next().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
            Packet::ConnAck(ack) => bail!("CONNACK {:?}", ack.code),
            other => bail!("expected CONNACK, got {other:?}"),
        }
        let connack = started.elapsed();
        if let Some(filter) = &device.subscribe {
            let mut subscribe = v4::Subscribe::new(filter.as_str(), QoS::AtMostOnce);
            subscribe.pkid = 1;
            subscribe.write(&mut conn.write).map_err(frame_error)?;
            conn.flush().await?;
            match conn.next().await? {
                Packet::SubAck(ack)
                    if ack.return_codes.iter().all(|c| matches!(c, v4::SubscribeReasonCode::Success(_))) => {}
                Packet::SubAck(ack) => bail!("SUBSCRIBE {filter} refused: {:?}", ack.return_codes),
                other => bail!("expected SUBACK, got {other:?}"),
            }
        }
        Ok((conn, connack))
    }

    /// The next packet from the server.
    pub async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            match v4::read(&mut self.read, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {
                    if self.stream.read_buf(&mut self.read).await? == 0 {
                        bail!("connection closed by the server");
                    }
                }
                Err(error) => bail!("bad frame from the server: {error:?}"),
            }
        }
    }

    pub fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> anyhow::Result<()> {
        let mut publish = v4::Publish::new(topic, qos, payload);
        publish.pkid = pkid;
        publish.write(&mut self.write).map_err(frame_error)?;
        Ok(())
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        v4::PingReq.write(&mut self.write).map_err(frame_error)?;
        Ok(())
    }

    pub fn disconnect(&mut self) -> anyhow::Result<()> {
        v4::Disconnect.write(&mut self.write).map_err(frame_error)?;
        Ok(())
    }

    /// Writes what the calls above queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
        }
        Ok(())
    }

    /// Reads more bytes into the buffer; `false` once the server closed the connection.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        Ok(self.stream.read_buf(&mut self.read).await? > 0)
    }

    /// A whole packet already in the buffer, if any.
    pub fn buffered(&mut self) -> anyhow::Result<Option<Packet>> {
        match v4::read(&mut self.read, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(error) => bail!("bad frame from the server: {error:?}"),
        }
    }
}

fn frame_error(error: mqttbytes::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot encode frame: {error:?}")
}

/// Connects from `source` without reserving a port at bind time, retrying while the kernel has
/// no free 4-tuple (`EADDRNOTAVAIL`).
async fn tcp_connect(server: SocketAddr, source: Ipv4Addr) -> anyhow::Result<TcpStream> {
    let mut attempts = 0;
    loop {
        let socket = TcpSocket::new_v4()?;
        setsockopt(&socket, IpBindAddressNoPort, &true).context("IP_BIND_ADDRESS_NO_PORT")?;
        socket.bind(SocketAddr::from((source, 0)))?;
        match socket.connect(server).await {
            Ok(stream) => return Ok(stream),
            Err(error) if error.kind() == ErrorKind::AddrNotAvailable && attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error).with_context(|| format!("TCP connect {source} → {server}")),
        }
    }
}
