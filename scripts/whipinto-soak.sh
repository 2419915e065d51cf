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

LIVE777_REPO="${LIVE777_REPO:-https://github.com/binbat/live777}"
# live777 v0.9.0-108 (2026-12): its whipinto uses webrtc-rs 0.20.
LIVE777_COMMIT="${LIVE777_COMMIT:-42205144}"
EXT_DIR="${EXT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jiangtang-ext}"

if [ -z "${WHIPINTO:-}" ]; then
    WHIPINTO="$EXT_DIR/bin/whipinto"
    if [ ! -x "$WHIPINTO" ]; then
        mkdir -p "$EXT_DIR/bin"
        if [ ! -d "$EXT_DIR/live777/.git" ]; then
            git clone --quiet "$LIVE777_REPO" "$EXT_DIR/live777"
        fi
        git -C "$EXT_DIR/live777" checkout --quiet "$LIVE777_COMMIT"
        (cd "$EXT_DIR/live777" &&
            CARGO_TARGET_DIR="$EXT_DIR/target" cargo build --release --locked --bin whipinto)
        cp "$EXT_DIR/target/release/whipinto" "$WHIPINTO"
    fi
fi

cargo build --locked --bin jiangtang
cargo build --locked -p benches --bin whip-soak
exec target/debug/whip-soak --relay target/debug/jiangtang --whipinto "$WHIPINTO" "$@"
