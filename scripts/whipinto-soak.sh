#!/usr/bin/env bash
# A WHIP publisher that is not a browser, end to end: ffmpeg loops a 60 s H.264 + Opus file as
# RTP, live777's `whipinto` (webrtc-rs) publishes it to the relay's /whip/soak, and WHEP
# viewers (str0m, on loopback) count what they get. Each run passes when every viewer got
# video and sound all along and the relay realigned nothing (benches/src/bin/whip-soak.rs).
#
#   scripts/whipinto-soak.sh                      # 4 runs, 20 viewers, 20 s each
#   scripts/whipinto-soak.sh --pin 0 --runs 4     # relay, ffmpeg and whipinto on one core
#   WHIPINTO=/path/to/whipinto scripts/whipinto-soak.sh
#
# whipinto is not on crates.io, so it is not part of the test suite: this script builds it
# from live777's repository, at a pinned commit, outside this tree (EXT_DIR, default
# ~/.cache/jiangtang-ext; nothing of it is committed). The first build takes 20+ minutes on
# two cores. Needs git, cargo, ffmpeg (scripts/setup.sh) and taskset for --pin.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

. scripts/live777.sh
if [ -z "${WHIPINTO:-}" ]; then
    live777_build whipinto
    WHIPINTO="$LIVE777_BIN/whipinto"
fi

cargo build --locked --bin jiangtang
cargo build --locked -p benches --bin whip-soak
exec target/debug/whip-soak --relay target/debug/jiangtang --whipinto "$WHIPINTO" "$@"
