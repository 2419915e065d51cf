//! Safe bindings to the system's libsrt 1.5 (the SRT reference implementation, as ffmpeg,
//! OBS and hardware encoders use it): just what an SRT *listener* for live publishers needs.
//!
//! - [`Listener`]: binds, decides about every caller before the handshake completes (stream
//!   id, passphrase, reject code) through a callback, and accepts without blocking;
//! - [`Socket`]: an accepted caller: its stream id, non-blocking receive, [`Stats`];
//! - [`Poller`]: libsrt's epoll, so one thread serves a listener and all its callers.
//!
//! This crate is the FFI boundary and the only one in the workspace allowed `unsafe`; every
//! unsafe block says why it is sound. Nothing here spawns threads: libsrt runs its own, and
//! the caller drives [`Poller::wait`].

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::OnceLock;
use std::time::Duration;

type RawSocket = c_int;

const SRT_INVALID_SOCK: RawSocket = -1;
const SRT_ERROR: c_int = -1;

// SRT_SOCKOPT (srt.h); src/shim.c checks these against the header at build time.
const SRTO_SNDSYN: c_int = 1;
const SRTO_RCVSYN: c_int = 2;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_STREAMID: c_int = 46;
const SRTO_RCVLATENCY: c_int = 43;
const SRTO_PEERIDLETIMEO: c_int = 55;

// SRT_EPOLL_OPT.
const SRT_EPOLL_IN: c_int = 0x1;
const SRT_EPOLL_ERR: c_int = 0x8;
const SRT_EPOLL_ENABLE_EMPTY: i32 = 1;

// SRT_ERRNO values that are not failures of a non-blocking call.
const SRT_EASYNCRCV: c_int = 6002;
const SRT_ETIMEOUT: c_int = 6003;
// SRT_ERRNO values that mean the caller is gone: the connection class (failed, lost, not
// connected) and a socket id libsrt no longer knows (closed and removed).
const SRT_ECONNFAIL: c_int = 2000;
const SRT_ECONNLOST: c_int = 2001;
const SRT_ENOCONN: c_int = 2002;
const SRT_EINVSOCK: c_int = 5004;

/// syslog's LOG_CRIT: libsrt logs only what is critical; we log the rest ourselves.
const LOG_CRIT: c_int = 2;

#[repr(C)]
struct SrtEpollEvent {
    fd: RawSocket,
    events: c_int,
}

#[repr(C)]
#[derive(Default)]
struct ShimStats {
    packets_received: i64,
    packets_lost: i64,
    packets_retransmitted: i64,
    packets_dropped: i64,
    packets_undecrypted: i64,
    packets_belated: i64,
    bytes_received: u64,
    rtt_ms: f64,
    receive_rate_mbps: f64,
    tsbpd_delay_ms: i64,
}

type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: RawSocket,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

#[link(name = "srt")]
unsafe extern "C" {
    fn srt_startup() -> c_int;
    fn srt_cleanup() -> c_int;
    fn srt_setloglevel(level: c_int);
    fn srt_create_socket() -> RawSocket;
    fn srt_setsockflag(u: RawSocket, opt: c_int, val: *const c_void, len: c_int) -> c_int;
    fn srt_getsockflag(u: RawSocket, opt: c_int, val: *mut c_void, len: *mut c_int) -> c_int;
    fn srt_bind(u: RawSocket, name: *const libc::sockaddr, len: c_int) -> c_int;
    fn srt_listen(u: RawSocket, backlog: c_int) -> c_int;
    fn srt_listen_callback(u: RawSocket, hook: ListenCallback, opaque: *mut c_void) -> c_int;
    fn srt_accept(u: RawSocket, addr: *mut libc::sockaddr, len: *mut c_int) -> RawSocket;
    fn srt_recvmsg(u: RawSocket, buf: *mut c_char, len: c_int) -> c_int;
    fn srt_getsockname(u: RawSocket, name: *mut libc::sockaddr, len: *mut c_int) -> c_int;
    fn srt_setrejectreason(u: RawSocket, value: c_int) -> c_int;
    fn srt_getrejectreason(u: RawSocket) -> c_int;
    fn srt_close(u: RawSocket) -> c_int;
    fn srt_getlasterror(errno: *mut c_int) -> c_int;
    fn srt_getlasterror_str() -> *const c_char;
    fn srt_epoll_create() -> c_int;
    fn srt_epoll_set(eid: c_int, flags: i32) -> i32;
    fn srt_epoll_add_usock(eid: c_int, u: RawSocket, events: *const c_int) -> c_int;
    fn srt_epoll_remove_usock(eid: c_int, u: RawSocket) -> c_int;
    fn srt_epoll_uwait(eid: c_int, fds: *mut SrtEpollEvent, n: c_int, timeout_ms: i64) -> c_int;
    fn srt_epoll_release(eid: c_int) -> c_int;
}

unsafe extern "C" {
    fn jt_srt_stats_read(u: RawSocket, out: *mut ShimStats) -> c_int;
}

/// An error from libsrt: its code (`SRT_ERRNO`) and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (SRT error {code})")]
pub struct SrtError {
    /// libsrt's error code.
    pub code: i32,
    /// libsrt's description.
    pub message: String,
}

impl SrtError {
    fn last() -> SrtError {
        // SAFETY: both read libsrt's thread-local last-error state; the string it returns
        // stays valid until the next libsrt call on this thread, and is copied at once.
        unsafe {
            let code = srt_getlasterror(std::ptr::null_mut());
            let text = srt_getlasterror_str();
            let message = if text.is_null() {
                "unknown SRT error".to_string()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            SrtError { code, message }
        }
    }

    fn other(message: &str) -> SrtError {
        SrtError {
            code: -1,
            message: message.to_string(),
        }
    }
}

/// Result of a libsrt call.
pub type Result<T> = std::result::Result<T, SrtError>;

fn check(ret: c_int) -> Result<c_int> {
    if ret == SRT_ERROR {
        Err(SrtError::last())
    } else {
        Ok(ret)
    }
}

/// Takes a reference on libsrt's global state (its threads): libsrt counts
/// `srt_startup`/`srt_cleanup` pairs and stops its threads (closing every socket) at the last
/// cleanup. Every listener, poller and accepted socket holds one, so that when the last is dropped libsrt shuts down cleanly;
/// left running, its threads block the process's exit (a global condition variable destroyed
/// at exit while they still wait on it).
fn startup() -> Result<()> {
    static QUIET: OnceLock<()> = OnceLock::new();
    // SAFETY: libsrt's reference-counted initialisation; the log level is a plain int.
    unsafe {
        check(srt_startup())?;
        QUIET.get_or_init(|| srt_setloglevel(LOG_CRIT));
    }
    Ok(())
}

/// Gives back the reference [`startup`] took.
fn cleanup() {
    // SAFETY: paired with a successful `startup`.
    unsafe { srt_cleanup() };
}

fn set_flag_int(u: RawSocket, opt: c_int, value: c_int) -> Result<()> {
    // SAFETY: `value` lives across the call and its size is passed.
    check(unsafe {
        srt_setsockflag(
            u,
            opt,
            (&value as *const c_int).cast(),
            size_of::<c_int>() as c_int,
        )
    })
    .map(|_| ())
}

fn set_flag_bool(u: RawSocket, opt: c_int, value: bool) -> Result<()> {
    // libsrt reads boolean options as C++ `bool` (one byte) but accepts an int too; use the
    // int form, which every option of this kind takes.
    set_flag_int(u, opt, value as c_int)
}

fn set_flag_str(u: RawSocket, opt: c_int, value: &str) -> Result<()> {
    // SAFETY: the bytes live across the call and their length is passed; libsrt copies them.
    check(unsafe { srt_setsockflag(u, opt, value.as_ptr().cast(), value.len() as c_int) })
        .map(|_| ())
}

/// A socket address in C form, and its length.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}

/// The Rust form of a C socket address, if it is IPv4 or IPv6.
///
/// # Safety
/// `addr` is null or points to a socket address of the length its family implies.
unsafe fn from_sockaddr(addr: *const libc::sockaddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: per the contract, the family field is readable and tells the real type.
    unsafe {
        match (*addr).sa_family as c_int {
            libc::AF_INET => {
                let a = &*(addr as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(addr as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// An application reject code sent to a refused caller (libsrt's `SRT_REJX_*`, 1000–1999;
/// a caller sees it as 2000 + the code's last three digits… e.g. 1404 arrives as 2404).
/// `src/shim.c` checks the named ones against libsrt's `access_control.h` at build time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectCode(pub i32);

impl RejectCode {
    /// The stream id is not of a form the server understands.
    pub const BAD_REQUEST: RejectCode = RejectCode(1400);
    /// Authentication failed (wrong key).
    pub const UNAUTHORIZED: RejectCode = RejectCode(1401);
    /// The server is at its limit.
    pub const OVERLOAD: RejectCode = RejectCode(1402);
    /// Access denied.
    pub const FORBIDDEN: RejectCode = RejectCode(1403);
    /// No such resource (lecture).
    pub const NOT_FOUND: RejectCode = RejectCode(1404);
    /// The mode (`m=`) is not supported (e.g. `request`: this is an ingest server).
    pub const BAD_MODE: RejectCode = RejectCode(1405);
    /// Already being published.
    pub const CONFLICT: RejectCode = RejectCode(1409);
    /// The server failed.
    pub const INTERNAL: RejectCode = RejectCode(1500);
}

/// What the listener knows of a caller before accepting it.
#[derive(Debug, Clone, Copy)]
pub struct CallerRequest<'a> {
    /// The caller's `SRTO_STREAMID` (empty when it sent none).
    pub stream_id: &'a str,
    /// Its address.
    pub peer: Option<SocketAddr>,
}

/// The decision about a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the handshake; with a passphrase the caller must use the same one
    /// (libsrt rejects a wrong one with `SRT_REJ_BADSECRET`, a missing or unexpected one
    /// with `SRT_REJ_UNSECURE`).
    Accept {
        /// Encryption passphrase (10–79 characters), or none for an unencrypted stream.
        passphrase: Option<String>,
    },
    /// Refuse with this code.
    Reject(RejectCode),
}

/// Decides about callers; runs on libsrt's receiver thread, so it must be quick.
pub type Admit = dyn Fn(CallerRequest<'_>) -> Admission + Send + Sync;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Receiver latency (TSBPD delay) in ms: how long lost packets may take to be resent.
    /// The larger of this and the caller's wins.
    pub latency_ms: u32,
    /// A caller silent this long is disconnected.
    pub peer_idle_timeout_ms: u32,
    /// Pending connections.
    pub backlog: u32,
}

unsafe extern "C" fn on_listen(
    opaque: *mut c_void,
    ns: RawSocket,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the `Box<Admit>` that the `Listener` owns and frees only after
    // `srt_close` has detached this callback (see `Listener`'s drop); `peer` and `stream_id`
    // are valid for this call per libsrt's contract (stream id NUL-terminated).
    let (admit, peer, sid) = unsafe {
        let admit = &*(opaque as *const Box<Admit>);
        let sid = if stream_id.is_null() {
            String::new()
        } else {
            CStr::from_ptr(stream_id).to_string_lossy().into_owned()
        };
        (admit, from_sockaddr(peer), sid)
    };
    // A panic must not unwind into C.
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        admit(CallerRequest {
            stream_id: &sid,
            peer,
        })
    }))
    .unwrap_or(Admission::Reject(RejectCode::INTERNAL));
    let reject = |code: RejectCode| {
        // SAFETY: `ns` is the socket libsrt handed to this callback.
        unsafe { srt_setrejectreason(ns, code.0) };
        -1
    };
    match verdict {
        Admission::Accept { passphrase: None } => 0,
        Admission::Accept {
            passphrase: Some(p),
        } => match set_flag_str(ns, SRTO_PASSPHRASE, &p) {
            Ok(()) => 0,
            Err(_) => reject(RejectCode::INTERNAL),
        },
        Admission::Reject(code) => reject(code),
    }
}

/// An SRT listener (non-blocking).
pub struct Listener {
    sock: RawSocket,
    /// The admission callback libsrt calls on its receive thread, owned here (boxed twice:
    /// C gets a thin pointer to the fat `Box<Admit>`); freed in `drop` after `srt_close`.
    admit: Option<std::ptr::NonNull<Box<Admit>>>,
}

// SAFETY: the socket id is a plain integer libsrt lets any thread use; the callback is
// `Send + Sync` and only ever read through a shared reference (here and on libsrt's thread).
unsafe impl Send for Listener {}
// SAFETY: as above: no method mutates anything through `&self`.
unsafe impl Sync for Listener {}

impl Listener {
    /// Binds `addr` and listens; `admit` decides about each caller, on libsrt's receive
    /// thread (shared by every connection on the port), so it must answer at once.
    ///
    /// `admit` is dropped with the listener, or at once when binding fails.
    pub fn bind(addr: SocketAddr, opts: &ListenerOptions, admit: Box<Admit>) -> Result<Listener> {
        startup()?;
        // SAFETY: plain constructor.
        let sock = unsafe { srt_create_socket() };
        if sock == SRT_INVALID_SOCK {
            let e = SrtError::last();
            cleanup();
            return Err(e);
        }
        // From here its drop closes the socket, frees the callback and gives back the
        // reference, whichever step below fails.
        let mut listener = Listener { sock, admit: None };
        // Accepted sockets inherit these.
        set_flag_bool(sock, SRTO_RCVSYN, false)?;
        set_flag_bool(sock, SRTO_SNDSYN, false)?;
        set_flag_int(sock, SRTO_RCVLATENCY, opts.latency_ms as c_int)?;
        set_flag_int(sock, SRTO_PEERIDLETIMEO, opts.peer_idle_timeout_ms as c_int)?;
        let (sa, len) = to_sockaddr(addr);
        // SAFETY: `sa` is a valid socket address of length `len`.
        check(unsafe { srt_bind(sock, (&sa as *const libc::sockaddr_storage).cast(), len) })?;
        let admit = std::ptr::NonNull::from(Box::leak(Box::new(admit)));
        listener.admit = Some(admit);
        // SAFETY: the pointer stays valid until `drop` has closed the socket, after which
        // libsrt no longer calls the callback; `on_listen` reads it as what it is.
        check(unsafe { srt_listen_callback(sock, on_listen, admit.as_ptr().cast()) })?;
        // SAFETY: a bound socket.
        check(unsafe { srt_listen(sock, opts.backlog.max(1) as c_int) })?;
        Ok(listener)
    }

    /// Its id, for a [`Poller`].
    pub fn id(&self) -> SocketId {
        SocketId(self.sock)
    }

    /// The address it is bound to (the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        local_addr(self.sock)
    }

    /// The next caller whose handshake completed, or `None` if there is none now.
    ///
    /// The connection holds its own reference on libsrt, so it may outlive the listener.
    pub fn accept(&self) -> Result<Option<(Socket, Option<SocketAddr>)>> {
        // SAFETY: sockaddr_storage is plain data; libsrt writes at most `len` bytes.
        let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: as above.
        let s = unsafe {
            srt_accept(
                self.sock,
                (&mut sa as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if s == SRT_INVALID_SOCK {
            let e = SrtError::last();
            return if e.code == SRT_EASYNCRCV {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: libsrt filled `sa` for the accepted socket.
        let peer = unsafe { from_sockaddr((&sa as *const libc::sockaddr_storage).cast()) };
        // libsrt is started (the listener holds a reference), so this only counts one more.
        if let Err(e) = startup() {
            // SAFETY: the socket just accepted, closed once.
            unsafe { srt_close(s) };
            return Err(e);
        }
        Ok(Some((Socket { sock: s }, peer)))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: our socket, closed once. For a listener `srt_close` detaches it from the
        // receive queue under the lock libsrt's receive thread holds while it runs the
        // callback (libsrt 1.5 `CUDT::notListening`), so when it returns the callback is
        // neither running nor called again.
        unsafe { srt_close(self.sock) };
        if let Some(admit) = self.admit.take() {
            // SAFETY: made by `Box::leak` in `bind`, freed once, no longer reachable from C.
            drop(unsafe { Box::from_raw(admit.as_ptr()) });
        }
        cleanup();
    }
}

fn local_addr(sock: RawSocket) -> Result<SocketAddr> {
    // SAFETY: as in `accept`.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as c_int;
    // SAFETY: libsrt writes at most `len` bytes into `sa`.
    check(unsafe {
        srt_getsockname(
            sock,
            (&mut sa as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    // SAFETY: filled by libsrt.
    unsafe { from_sockaddr((&sa as *const libc::sockaddr_storage).cast()) }
        .ok_or_else(|| SrtError::other("not an IP socket"))
}

/// A socket's id within libsrt, as a [`Poller`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub i32);

/// An accepted caller (non-blocking), closed on drop. It holds a reference on libsrt's
/// global state of its own, like a listener and a poller.
pub struct Socket {
    sock: RawSocket,
}

/// What a receive gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// One message of this many bytes (live mode: one UDP payload, up to 1456 bytes).
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// The caller closed or the connection broke.
    Closed,
}

/// Receiver statistics of a connection since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Data packets received, retransmissions included.
    pub packets_received: i64,
    /// Packets detected missing (each then asked for again).
    pub packets_lost: i64,
    /// Retransmitted packets received.
    pub packets_retransmitted: i64,
    /// Packets that never arrived in time and were given up (a gap in the stream).
    pub packets_dropped: i64,
    /// Packets that could not be decrypted.
    pub packets_undecrypted: i64,
    /// Packets that arrived too late and were ignored.
    pub packets_belated: i64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Smoothed round-trip time.
    pub rtt_ms: f64,
    /// Current receive rate.
    pub receive_rate_mbps: f64,
    /// The TSBPD latency agreed with the caller.
    pub latency_ms: i64,
}

impl Socket {
    /// Its id, for a [`Poller`].
    pub fn id(&self) -> SocketId {
        SocketId(self.sock)
    }

    /// The stream id the caller sent.
    pub fn stream_id(&self) -> String {
        let mut buf = [0u8; 1024];
        let mut len = buf.len() as c_int;
        // SAFETY: libsrt writes at most `len` bytes and sets `len` to what it wrote.
        let ok =
            unsafe { srt_getsockflag(self.sock, SRTO_STREAMID, buf.as_mut_ptr().cast(), &mut len) };
        if ok == SRT_ERROR || len < 0 {
            return String::new();
        }
        let len = (len as usize).min(buf.len());
        String::from_utf8_lossy(&buf[..len])
            .trim_end_matches('\0')
            .to_string()
    }

    /// Receives one message into `buf` (at least 1500 bytes).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Recv> {
        let len = buf.len().min(c_int::MAX as usize) as c_int;
        // SAFETY: libsrt writes at most `len` bytes into `buf`.
        let n = unsafe { srt_recvmsg(self.sock, buf.as_mut_ptr().cast(), len) };
        if n > 0 {
            return Ok(Recv::Data(n as usize));
        }
        if n == 0 {
            return Ok(Recv::Closed);
        }
        let e = SrtError::last();
        match e.code {
            SRT_EASYNCRCV | SRT_ETIMEOUT => Ok(Recv::WouldBlock),
            // Connection failed, lost, not connected, or the socket closed: the caller is gone.
            SRT_ECONNFAIL | SRT_ECONNLOST | SRT_ENOCONN | SRT_EINVSOCK => Ok(Recv::Closed),
            _ => Err(e),
        }
    }

    /// Statistics since the connection started.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = ShimStats::default();
        // SAFETY: the shim fills the struct it is given (its C definition matches ShimStats).
        if unsafe { jt_srt_stats_read(self.sock, &mut s) } != 0 {
            return Err(SrtError::last());
        }
        Ok(Stats {
            packets_received: s.packets_received,
            packets_lost: s.packets_lost,
            packets_retransmitted: s.packets_retransmitted,
            packets_dropped: s.packets_dropped,
            packets_undecrypted: s.packets_undecrypted,
            packets_belated: s.packets_belated,
            bytes_received: s.bytes_received,
            rtt_ms: s.rtt_ms,
            receive_rate_mbps: s.receive_rate_mbps,
            latency_ms: s.tsbpd_delay_ms,
        })
    }

    /// Why the connection was rejected or closed, as libsrt's reason code.
    pub fn reject_reason(&self) -> i32 {
        // SAFETY: plain query on our socket.
        unsafe { srt_getrejectreason(self.sock) }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: our socket, closed once.
        unsafe { srt_close(self.sock) };
        cleanup();
    }
}

/// What a [`Poller`] saw on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The socket.
    pub id: SocketId,
    /// Readable (data, or a caller to accept on a listener).
    pub readable: bool,
    /// Broken or closed.
    pub error: bool,
}

/// libsrt's epoll: waits on many SRT sockets at once.
pub struct Poller {
    eid: c_int,
}

impl Poller {
    /// An empty poller (waiting on it with no sockets just times out).
    pub fn new() -> Result<Poller> {
        startup()?;
        // SAFETY: plain constructor.
        let eid = match check(unsafe { srt_epoll_create() }) {
            Ok(eid) => eid,
            Err(e) => {
                cleanup();
                return Err(e);
            }
        };
        let poller = Poller { eid };
        // SAFETY: our eid; the flag is documented for this call.
        if unsafe { srt_epoll_set(eid, SRT_EPOLL_ENABLE_EMPTY) } < 0 {
            return Err(SrtError::last());
        }
        Ok(poller)
    }

    /// Watches `id` for input and errors.
    pub fn add(&self, id: SocketId) -> Result<()> {
        let events = SRT_EPOLL_IN | SRT_EPOLL_ERR;
        // SAFETY: `events` lives across the call.
        check(unsafe { srt_epoll_add_usock(self.eid, id.0, &events) }).map(|_| ())
    }

    /// Stops watching `id`.
    pub fn remove(&self, id: SocketId) {
        // SAFETY: plain call; an unknown socket is an error we can ignore.
        unsafe { srt_epoll_remove_usock(self.eid, id.0) };
    }

    /// Waits up to `timeout` and appends the ready sockets to `out` (at most 256 a call).
    pub fn wait(&self, timeout: Duration, out: &mut Vec<Ready>) -> Result<()> {
        const MAX: usize = 256;
        let mut events: [SrtEpollEvent; MAX] =
            std::array::from_fn(|_| SrtEpollEvent { fd: -1, events: 0 });
        // SAFETY: libsrt writes at most MAX events into the array.
        let n = unsafe {
            srt_epoll_uwait(
                self.eid,
                events.as_mut_ptr(),
                MAX as c_int,
                timeout.as_millis().min(i64::MAX as u128) as i64,
            )
        };
        if n < 0 {
            let e = SrtError::last();
            return if e.code == SRT_ETIMEOUT {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &events[..(n as usize).min(MAX)] {
            out.push(Ready {
                id: SocketId(ev.fd),
                readable: ev.events & SRT_EPOLL_IN != 0,
                error: ev.events & SRT_EPOLL_ERR != 0,
            });
        }
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: our eid, released once.
        unsafe { srt_epoll_release(self.eid) };
        cleanup();
    }
}

/// Ends the process now with `code`, without running C and C++ static destructors.
///
/// libsrt 1.5.1 destroys a global condition variable at exit while glibc still counts a
/// waiter on it (its threads have stopped, the count has not), so `exit()` blocks for ever in
/// `pthread_cond_destroy`. A server that has shut down everything of its own has nothing
/// left for those destructors to do; standard output and error are flushed first.
pub fn exit_process(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` ends the process; nothing runs after it.
    unsafe { libc::_exit(code) }
}

/// Checks a passphrase the way libsrt will: 10 to 79 bytes.
pub fn valid_passphrase(p: &str) -> bool {
    (10..=79).contains(&p.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["127.0.0.1:8890", "[::1]:9000", "0.0.0.0:0"] {
            let a: SocketAddr = a.parse().unwrap();
            let (sa, _) = to_sockaddr(a);
            // SAFETY: a valid sockaddr just made.
            let back = unsafe { from_sockaddr((&sa as *const libc::sockaddr_storage).cast()) };
            assert_eq!(back, Some(a));
        }
    }

    #[test]
    fn listener_binds_and_polls_without_callers() {
        let admit: Box<Admit> = Box::new(|_| Admission::Reject(RejectCode::NOT_FOUND));
        let opts = ListenerOptions {
            latency_ms: 120,
            peer_idle_timeout_ms: 5000,
            backlog: 8,
        };
        let l = Listener::bind("127.0.0.1:0".parse().unwrap(), &opts, admit).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(l.accept().unwrap().is_none());
        let p = Poller::new().unwrap();
        p.add(l.id()).unwrap();
        let mut ready = Vec::new();
        p.wait(Duration::from_millis(20), &mut ready).unwrap();
        assert!(ready.is_empty());
        // A second bind of the same port fails with a clear error.
        let admit: Box<Admit> = Box::new(|_| Admission::Reject(RejectCode::NOT_FOUND));
        let e = Listener::bind(addr, &opts, admit).err().unwrap();
        assert!(!e.message.is_empty());
    }

    #[test]
    fn the_admission_callback_is_freed_with_its_listener() {
        // What the callback holds (the relay's hub) goes when the listener goes, also when
        // binding fails after the callback was handed to libsrt.
        let held = std::sync::Arc::new(());
        let admit_holding = |held: &std::sync::Arc<()>| -> Box<Admit> {
            let held = held.clone();
            Box::new(move |_| {
                let _ = &held;
                Admission::Reject(RejectCode::NOT_FOUND)
            })
        };
        let opts = ListenerOptions {
            latency_ms: 120,
            peer_idle_timeout_ms: 5000,
            backlog: 8,
        };
        let l =
            Listener::bind("127.0.0.1:0".parse().unwrap(), &opts, admit_holding(&held)).unwrap();
        assert_eq!(std::sync::Arc::strong_count(&held), 2);
        let addr = l.local_addr().unwrap();
        // The same port again: libsrt shares the UDP socket and refuses a second listener on it.
        assert!(Listener::bind(addr, &opts, admit_holding(&held)).is_err());
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            2,
            "freed after a failed bind"
        );
        drop(l);
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "freed with the listener"
        );
    }

    #[test]
    fn passphrases() {
        assert!(valid_passphrase("correcthorse"));
        assert!(!valid_passphrase("short"));
        assert!(!valid_passphrase(&"x".repeat(80)));
    }
}
