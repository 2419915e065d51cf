//! The WebRTC UDP sockets' buffers and the datagrams lost around them (issue 11, item 4).
//!
//! A join storm or a GOP burst to hundreds of viewers overflows the kernel's default socket
//! buffers (about 200 KiB on Debian), and the kernel drops datagrams silently: ICE consent
//! checks among them, so sessions go `disconnected` with nothing in the log. The sockets get
//! buffers sized by `webrtc.socket_buffer_kib` (forced past `net.core.rmem_max` when the
//! relay may), and every datagram lost — by the kernel on receive, by the engine falling
//! behind, or by a full send buffer — is counted in `/metrics` and reported in the log.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{info, warn};

/// A WebRTC UDP socket that sends a viewer's packets of one frame in one system call (UDP
/// GSO: the kernel cuts them apart, routing and building them once) and reads up to
/// [`quinn_udp::BATCH_SIZE`] datagrams per call (`recvmmsg`, GRO). The system calls are
/// quinn-udp's, the UDP layer of the QUIC stack quinn; per datagram they cost more than
/// str0m's SRTP on a busy engine (perf: `sendto` was over half of the engine's time).
pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// Most bytes in one GSO send (the kernel's limit on a UDP datagram's payload, rounded
/// down).
const GSO_MAX_BYTES: usize = 65_000;

impl Udp {
    /// Takes over a bound socket (it turns on GRO and the options quinn-udp reads).
    pub fn new(socket: UdpSocket) -> std::io::Result<Udp> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Udp { socket, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Most datagrams one [`Udp::send`] may carry (1 where the kernel has no UDP GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Most bytes one [`Udp::send`] may carry.
    pub fn max_bytes(&self) -> usize {
        GSO_MAX_BYTES
    }

    /// Sends `contents` to `to` now, or fails (a full send buffer: `WouldBlock`): as one
    /// datagram, or with `segment` as datagrams of that size (the last may be shorter).
    pub fn send(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> std::io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &transmit)
        })
    }

    /// Waits for datagrams and reads what is there into `bufs`, one [`RecvMeta`] each;
    /// returns how many buffers were filled. A buffer may hold several datagrams of one
    /// sender (GRO): `stride` bytes each, the last maybe shorter.
    pub async fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> std::io::Result<usize> {
        loop {
            self.socket.readable().await?;
            match self.socket.try_io(Interest::READABLE, || {
                self.state.recv((&self.socket).into(), bufs, meta)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl AsFd for Udp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Sets the receive and send buffers of `socket` to `bytes` each: the forced variant first
/// (needs CAP_NET_ADMIN; ignores `net.core.rmem_max`), else what the kernel allows. Returns
/// the sizes the kernel reports (it doubles what is asked, for its own bookkeeping).
pub fn size_buffers(socket: impl AsFd, bytes: usize) -> (usize, usize) {
    let fd = socket.as_fd();
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(fd, bytes).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, bytes);
    }
    if rustix::net::sockopt::set_socket_send_buffer_size_force(fd, bytes).is_err() {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes);
    }
    (
        rustix::net::sockopt::socket_recv_buffer_size(fd).unwrap_or(0),
        rustix::net::sockopt::socket_send_buffer_size(fd).unwrap_or(0),
    )
}

/// Logs the buffers a socket got, and warns when the kernel gave less than asked.
pub fn report_buffers(addr: std::net::SocketAddr, asked: usize, got: (usize, usize)) {
    // The kernel reports twice what it grants.
    let (rx, tx) = (got.0 / 2, got.1 / 2);
    if rx < asked || tx < asked {
        warn!(
            %addr,
            asked_kib = asked / 1024,
            receive_kib = rx / 1024,
            send_kib = tx / 1024,
            "webrtc: UDP socket buffers smaller than webrtc.socket_buffer_kib (raise net.core.rmem_max and net.core.wmem_max, or run with CAP_NET_ADMIN): bursts will be dropped"
        );
    } else {
        info!(%addr, receive_kib = rx / 1024, send_kib = tx / 1024, "webrtc: UDP socket buffers");
    }
}

/// Datagrams the kernel dropped on receive for `socket` since it was made, from
/// `/proc/net/udp` and `/proc/net/udp6` (the `drops` column of its inode's line); `None`
/// where the kernel does not say (not Linux, no /proc).
pub fn kernel_receive_drops(socket: impl AsFd) -> Option<u64> {
    let inode = rustix::fs::fstat(socket.as_fd()).ok()?.st_ino;
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            drops_of_inode(&text, inode as u64)
        })
}

/// The `drops` of the line for `inode` in a `/proc/net/udp` table.
fn drops_of_inode(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        (f.get(9)?.parse::<u64>().ok()? == inode).then(|| f.get(12)?.parse().ok())?
    })
}

/// How often losses are looked for and, when there were any, logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Losses since the last report, for one log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Losses {
    /// Dropped by the kernel: the receive buffer was full.
    pub kernel: u64,
    /// Dropped on the way in: the engine's queue was full (it fell behind).
    pub inbound: u64,
    /// Dropped on the way out: the send buffer was full.
    pub outbound: u64,
}

impl Losses {
    /// The log line for these losses, if there were any.
    pub fn describe(&self, over: Duration) -> Option<String> {
        (self.kernel + self.inbound + self.outbound > 0).then(|| {
            format!(
                "webrtc: UDP datagrams lost in the last {} s: {} by the kernel (receive buffer full), {} on the way in (engine behind), {} on the way out (send buffer full)",
                over.as_secs(),
                self.kernel,
                self.inbound,
                self.outbound
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_from_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     1234: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
                     1235: 0100007F:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 0\n";
        assert_eq!(drops_of_inode(table, 4242), Some(17));
        assert_eq!(drops_of_inode(table, 999), Some(0));
        assert_eq!(drops_of_inode(table, 1), None);
    }

    /// A real socket with a small buffer that nobody reads: the kernel drops what does not
    /// fit, and we see it.
    #[test]
    fn the_kernels_receive_drops_of_a_real_socket_are_seen() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&rx, 4096);
        assert_eq!(kernel_receive_drops(&rx), Some(0));
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [0u8; 1000];
        for _ in 0..500 {
            let _ = tx.send_to(&payload, rx.local_addr().unwrap());
        }
        let drops = kernel_receive_drops(&rx).unwrap();
        assert!(
            drops > 0,
            "500 datagrams into a 4 KiB buffer: {drops} dropped"
        );
    }

    #[test]
    fn buffers_are_sized_as_asked_or_reported() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (rx, tx) = size_buffers(&s, 1 << 20);
        // Root gets what it asks (forced); others at least the default, and know it.
        if rustix::process::geteuid().is_root() {
            assert!(rx >= 2 << 20 && tx >= 2 << 20, "{rx} {tx}");
        } else {
            assert!(rx > 0 && tx > 0);
        }
    }

    #[test]
    fn losses_are_described_only_when_there_are_some() {
        assert_eq!(Losses::default().describe(REPORT_EVERY), None);
        let l = Losses {
            kernel: 3,
            inbound: 0,
            outbound: 5,
        };
        let line = l.describe(REPORT_EVERY).unwrap();
        assert!(
            line.contains("3 by the kernel") && line.contains("5 on the way out"),
            "{line}"
        );
    }
}
