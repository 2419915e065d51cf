//! An accepted connection keeps working after its listener and poller are gone: it holds its
//! own reference on libsrt's global state, so dropping the last listener does not shut libsrt
//! down (which breaks every open connection) under it.
//!
//! Its own test binary: libsrt's reference count is process-wide, and a test running beside
//! it in the same process would hold a reference of its own.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libsrt::{Admission, Listener, ListenerOptions, Poller, Recv};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_accepted_connection_outlives_its_listener() {
    let opts = ListenerOptions {
        latency_ms: 120,
        peer_idle_timeout_ms: 5000,
        backlog: 8,
    };
    let listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &opts,
        Box::new(|_| Admission::Accept { passphrase: None }),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let poller = Poller::new().unwrap();
    poller.add(listener.id()).unwrap();

    // A real caller in another process (so this process holds no libsrt reference for it),
    // sending what this test writes to its stdin.
    let mut caller = Child(
        Command::new("srt-live-transmit")
            .args([
                "-q",
                "-chunk:1316",
                "-a:no",
                "file://con",
                &format!("srt://{addr}?streamid=publish:x&latency=120"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("srt-live-transmit (installed by scripts/setup.sh)"),
    );
    let mut stdin = caller.0.stdin.take().unwrap();
    // Bounded: 40 s of data at most; it stops when the caller goes.
    let writer = std::thread::spawn(move || {
        for _ in 0..400 {
            if stdin.write_all(&[0x47; 1316 * 50]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let deadline = Instant::now() + Duration::from_secs(15);
    let socket = loop {
        assert!(Instant::now() < deadline, "the caller never connected");
        let mut ready = Vec::new();
        poller.wait(Duration::from_millis(200), &mut ready).unwrap();
        if let Some((s, _)) = listener.accept().unwrap() {
            break s;
        }
    };
    let mut buf = vec![0u8; 2048];
    let received_within = |socket: &libsrt::Socket, buf: &mut [u8]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match socket.recv(buf).unwrap() {
                Recv::Data(n) => return Some(n),
                Recv::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Recv::Closed => return None,
            }
        }
        None
    };
    assert!(
        received_within(&socket, &mut buf).is_some(),
        "no data before"
    );

    drop(poller);
    drop(listener);
    assert!(
        received_within(&socket, &mut buf).is_some(),
        "the connection broke when its listener was dropped"
    );
    assert!(socket.stats().unwrap().packets_received > 0);
    drop(socket);
    drop(caller);
    let _ = writer.join();
}
