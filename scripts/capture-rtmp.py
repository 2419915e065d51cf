#!/usr/bin/env python3
"""Records what an RTMP client sends, for parser fixtures.

Listens on LISTEN_PORT, forwards each connection to the relay at TARGET_PORT (both on
127.0.0.1), and writes the client->server bytes of the first connection to OUT.

    scripts/capture-rtmp.py 19350 1935 ingest/src/rtmp/testdata/NAME.bin
"""
import socket
import sys
import threading

listen_port, target_port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(1)
client, _ = srv.accept()
upstream = socket.create_connection(("127.0.0.1", target_port))
recorded = bytearray()


def pump(src, dst, record):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record:
                recorded.extend(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


t = threading.Thread(target=pump, args=(upstream, client, False))
t.start()
pump(client, upstream, True)
t.join()
with open(out, "wb") as f:
    f.write(recorded)
print(f"recorded {len(recorded)} bytes to {out}")
