#!/usr/bin/env bash
# The relay's memory for one lecture: RSS idle, then while ffmpeg publishes a 1280x720
# 2.5 Mbit/s lecture with N dialects (128 kbit/s AAC each) over SRT for 55 s.
#   cargo build --release --locked -p jiangtang && scripts/lecture-memory.sh 3
# Level meters, the catalogue, WebRTC and recording are off (as in hls-serve-bench).
# JIANGTANG_HLS_SPOOL=false keeps the whole HLS window in memory (hls.spool).
set -euo pipefail
N=${1:-3}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/jiangtang}
D=$(mktemp -d)
cd "$D"
export JIANGTANG_HTTP_LISTEN=127.0.0.1:18095 JIANGTANG_RTMP_LISTEN=127.0.0.1:0 \
  JIANGTANG_SRT_LISTEN=127.0.0.1:18896 JIANGTANG_DEMO_ENABLED=false \
  JIANGTANG_WEBRTC_ENABLED=false JIANGTANG_CATALOGUE_ENABLED=false \
  JIANGTANG_RECORDING_ENABLED=false JIANGTANG_LECTURES_AUDIO_LEVELS=false \
  JIANGTANG_LECTURES_ALLOW_UNCONFIGURED=true RUST_LOG=warn
"$BIN" serve > log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$D"' EXIT
sleep 5
kill -0 $PID 2>/dev/null || { cat log; exit 1; }
rss() { awk '/VmRSS/{print $2}' "/proc/$PID/status"; }
IDLE=$(rss)
LANGS=(cmn yue hak nan wuu)
args=(-f lavfi -i testsrc2=size=1280x720:rate=25)
maps=(-map 0:v)
meta=()
for i in $(seq 0 $((N - 1))); do
  args+=(-f lavfi -i "sine=frequency=$((440 + 220 * i)):sample_rate=48000")
  maps+=(-map "$((i + 1)):a")
  meta+=("-metadata:s:a:$i" "language=${LANGS[$i]}")
done
ffmpeg -nostdin -loglevel error -re "${args[@]}" "${maps[@]}" -c:v libx264 -preset ultrafast \
  -tune zerolatency -b:v 2500k -g 50 -keyint_min 50 -pix_fmt yuv420p -c:a aac -b:a 128k \
  "${meta[@]}" -t 60 -f mpegts "srt://127.0.0.1:18896?streamid=publish:mem&latency=200000" &
FF=$!
sleep 55
WITH=$(rss)
echo "dialects in the multivariant playlist: $(curl -s 127.0.0.1:18095/hls/mem/index.m3u8 | grep -c TYPE=AUDIO)"
awk -v i="$IDLE" -v w="$WITH" 'BEGIN { printf "RSS idle %.1f MiB, with the lecture %.1f MiB: %.1f MiB for the lecture\n", i / 1024, w / 1024, (w - i) / 1024 }'
echo "spooled segments: $(curl -s 127.0.0.1:18095/metrics | awk '/^jiangtang_hls_spooled_segments_total/{print $2}')"
wait "$FF" 2>/dev/null || true
