#!/usr/bin/env bash
# A long soak of the relay (issue 12 item 7; not part of the test suite): one lecture with
# three dialects, HLS and WebRTC viewers joining and leaving, an interpreter coming and
# going, a chaos event every few minutes. It reports RSS and heap slope, open descriptors,
# threads, tasks and every error (benches/src/bin/soak.rs).
#
#   scripts/soak.sh                          # 60 minutes, release build
#   scripts/soak.sh --minutes 5 --chaos-s 30 --interpreter-s 90   # a short form
#   SOAK_PROFILE=debug scripts/soak.sh ...   # the debug build (no release build needed)
#
# Needs ffmpeg, node with tests/node's modules and Chromium (scripts/setup.sh). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
profile="${SOAK_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --locked --release --bin jiangtang
else
    cargo build --locked --bin jiangtang
fi
cargo build --locked -p benches --bin soak
# In a PID namespace of its own when root: the chaos kills the interpreter's browser, whose
# orphaned helper processes must be reaped inside the soak, not by whatever started it (a
# CI runner or a shell tool that does not expect them); everything ends with the soak. Its own
# /proc too, or the relay's pid (as the namespace numbers it) would be read from the host's.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    exec unshare --pid --fork --kill-child --mount-proc target/debug/soak --relay "target/$profile/jiangtang" "$@"
fi
exec target/debug/soak --relay "target/$profile/jiangtang" "$@"
