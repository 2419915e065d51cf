//! A str0m WHEP viewer's first steps, shared by the benches that watch over WebRTC: a UDP
//! socket on loopback, an offer for video and audio posted to the relay, the answer
//! accepted; and a received datagram as str0m's input.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Rtc};
use tokio::net::UdpSocket;

/// A viewer that has its answer: its `Rtc`, its socket, the socket's address, and the
/// session's `Location`.
pub struct Offered {
    /// The peer.
    pub rtc: Rtc,
    /// Its socket.
    pub socket: UdpSocket,
    /// The socket's address (the candidate offered).
    pub local: SocketAddr,
    /// The WHEP session resource, for a DELETE.
    pub location: Option<String>,
}

/// Offers video and audio to `http://HTTP{path}` (e.g. `/whep/demo?lang=yue`) and accepts
/// the answer.
pub async fn offer(http: SocketAddr, path: &str) -> anyhow::Result<Offered> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await?;
    if resp.status() != 201 {
        bail!("WHEP answered {}", resp.status());
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let answer = SdpAnswer::from_sdp_string(&resp.text().await?)?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    Ok(Offered {
        rtc,
        socket,
        local,
        location,
    })
}

/// A datagram from `source` received on the viewer's socket at `local`, as str0m's input.
pub fn receive<'a>(
    data: &'a [u8],
    source: SocketAddr,
    local: SocketAddr,
) -> anyhow::Result<Input<'a>> {
    Ok(Input::Receive(
        Instant::now(),
        Receive {
            proto: Protocol::Udp,
            source,
            destination: local,
            contents: data.try_into()?,
        },
    ))
}
