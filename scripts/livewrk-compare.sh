#!/usr/bin/env bash
# WebRTC fan-out per core, jiangtang against live777 (a Rust SFU), measured with the same
# load generator in the same run: live777's `livewrk whep` (webrtc-rs subscribers that count
# RTP without decoding). Both servers get the same publisher: ffmpeg loops a 1280x720 25 fps
# H.264 (2 Mbit/s, GOP 2 s) + Opus file as RTP, live777's `whipinto` publishes it over WHIP.
# Each server in turn runs pinned to CPU 0; ffmpeg, whipinto and livewrk run on CPU 1.
# Prints one line per server and viewer count: sessions connected and failed, the server's
# CPU (% of its core) during the run, core-ms per viewer-second, RSS growth per viewer, and
# packets per viewer-second as livewrk counted them.
#
#   scripts/livewrk-compare.sh                           # 200 and 300 viewers joining at 100/s
#   VIEWERS="60 120" SECONDS_PER_RUN=20 scripts/livewrk-compare.sh
#   KBPS=300 VIEWERS=300 SECONDS_PER_RUN=20 scripts/livewrk-compare.sh   # a join storm
#   LOADGEN=whep-bench VIEWERS="300 600" SECONDS_PER_RUN=10 scripts/livewrk-compare.sh
#   LOADGEN=whep-bench SERVERS=jiangtang VIEWERS=900 SECONDS_PER_RUN=10 scripts/livewrk-compare.sh
#
# LOADGEN=whep-bench measures with our own load generator instead (issue 11, item 6):
# str0m viewers that, once DTLS is up, read the relay's batches with GRO and count RTP
# headers, one in 10 decrypting everything; cheap enough to saturate a server's core from
# the other. It prints its own table per server (core-ms per viewer-second, RSS growth per
# viewer, packets, loss, sessions dropped).
#
# Read the packets-per-viewer column first: livewrk's webrtc-rs subscribers are costly, and on
# a 2-vCPU machine one core of them keeps up with about 50 viewers of this lecture (≈ 287
# packets/s each); beyond that the client, not the server, fails sessions and counts fewer
# packets, and the server figures describe a lighter load than asked.
#
# live777 is not on crates.io: this script builds live777, livewrk and whipinto from its
# repository at a pinned commit outside this tree (EXT_DIR, default ~/.cache/jiangtang-ext;
# nothing of it is committed). The first build takes 20+ minutes on two cores. Needs git,
# cargo, ffmpeg and taskset (scripts/setup.sh), and a release build of jiangtang.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

. scripts/live777.sh
VIEWERS="${VIEWERS:-200 300}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-30}"
RAMP_MS="${RAMP_MS:-10}"
RELAY="${RELAY:-target/release/jiangtang}"
LOADGEN="${LOADGEN:-livewrk}"

live777_build live777 livewrk whipinto
bin="$LIVE777_BIN"
[ -x "$RELAY" ] || cargo build --release --locked --bin jiangtang
if [ "$LOADGEN" = whep-bench ]; then
    [ -x target/release/whep-bench ] || cargo build --release --locked -p benches --bin whep-bench
fi

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# KBPS: the lecture's video bitrate (2000 unless set; a lower one shows joins apart from
# livewrk's own throughput limit).
KBPS="${KBPS:-2000}"
if [ "$KBPS" = 2000 ]; then
    lecture="${TMPDIR:-/tmp}/jiangtang-whip-soak-lecture-720p.mkv"
else
    lecture="${TMPDIR:-/tmp}/jiangtang-lecture-720p-${KBPS}k.mkv"
fi
if [ ! -f "$lecture" ]; then
    ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
        -c:v libx264 -preset veryfast -g 50 -keyint_min 50 -sc_threshold 0 -bf 0 \
        -b:v "${KBPS}k" -maxrate "${KBPS}k" -bufsize "$((KBPS * 2))k" -pix_fmt yuv420p \
        -c:a libopus -b:a 64k -ac 2 "$lecture"
fi

# CPU seconds (user + system) of a process, from /proc/PID/stat.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

wait_http() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}

# start_server NAME -> sets server_pid, whip, whep
start_server() {
    case "$1" in
    jiangtang)
        # One engine (the core it is pinned to); no recording or catalogue, which live777
        # does not have either; caps above the load (it all comes from one address).
        JIANGTANG_HTTP_LISTEN=127.0.0.1:18080 JIANGTANG_RTMP_LISTEN=127.0.0.1:0 \
            JIANGTANG_SRT_LISTEN=127.0.0.1:0 JIANGTANG_WEBRTC_UDP_LISTEN=127.0.0.1:18189 \
            JIANGTANG_WEBRTC_SHARDS=1 JIANGTANG_WEBRTC_MAX_VIEWERS=5000 \
            JIANGTANG_WEBRTC_MAX_VIEWERS_PER_LECTURE=5000 JIANGTANG_DEMO_ENABLED=false \
            JIANGTANG_LECTURES_ALLOW_UNCONFIGURED=true JIANGTANG_RECORDING_ENABLED=false \
            JIANGTANG_CATALOGUE_ENABLED=false RUST_LOG=warn \
            taskset -c 0 "$RELAY" serve >"$work/jiangtang.log" 2>&1 &
        server_pid=$!
        whip="http://127.0.0.1:18080/whip/bench"
        whep="http://127.0.0.1:18080/whep/bench"
        wait_http "http://127.0.0.1:18080/healthz"
        ;;
    live777)
        cat >"$work/live777.toml" <<EOF
[http]
listen = "127.0.0.1:17777"
[webrtc]
ice_udp_addrs = ["127.0.0.1:0"]
EOF
        taskset -c 0 "$bin/live777" --config "$work/live777.toml" >"$work/live777.log" 2>&1 &
        server_pid=$!
        whip="http://127.0.0.1:17777/whip/bench"
        whep="http://127.0.0.1:17777/whep/bench"
        wait_http "http://127.0.0.1:17777/"
        ;;
    esac
    pids+=("$server_pid")
}

publish() {
    local port=$((20000 + RANDOM % 20000 * 2))
    taskset -c 1 ffmpeg -nostdin -v error -re -stream_loop -1 -i "$lecture" \
        -map 0:v:0 -c copy -f rtp "rtp://127.0.0.1:$port" \
        -map 0:a:0 -c copy -f rtp "rtp://127.0.0.1:$((port + 2))" \
        -sdp_file "$work/lecture.sdp" >"$work/ffmpeg.log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 1 100); do
        grep -q "m=audio" "$work/lecture.sdp" 2>/dev/null && break
        sleep 0.1
    done
    taskset -c 1 "$bin/whipinto" -i "$work/lecture.sdp" -w "$1" --ice-server "" \
        >"$work/whipinto.log" 2>&1 &
    pids+=("$!")
}

if [ "$LOADGEN" = whep-bench ]; then
    for server in ${SERVERS:-jiangtang live777}; do
        pids=()
        rm -f "$work/lecture.sdp"
        start_server "$server"
        publish "$whip"
        sleep 8
        echo "### $server"
        # shellcheck disable=SC2086
        taskset -c 1 target/release/whep-bench --attach "$whep" --attach-pid "$server_pid" \
            --viewers "$(echo $VIEWERS | tr ' ' ,)" --seconds "$SECONDS_PER_RUN" --sample 10 \
            --join-rate 100 | grep '^|'
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        sleep 5
    done
    exit 0
fi

echo "| server | viewers (ramp ${RAMP_MS} ms) | connected | failed | server CPU % | core-ms per viewer-second | RSS growth per viewer KiB | RTP pkts/s per viewer (livewrk) |"
echo "|---|---|---|---|---|---|---|---|"
for n in $VIEWERS; do
    for server in jiangtang live777; do
        pids=()
        rm -f "$work/lecture.sdp"
        start_server "$server"
        publish "$whip"
        sleep 8
        rss0=$(rss_kib "$server_pid")
        cpu0=$(cpu_s "$server_pid")
        t0=$(date +%s.%N)
        taskset -c 1 "$bin/livewrk" whep --whep "$whep" --sessions "$n" --ramp-ms "$RAMP_MS" \
            --duration "$SECONDS_PER_RUN" --ice-server "" >"$work/livewrk.out" 2>"$work/livewrk.err" &
        wrk=$!
        # Resident memory at the fullest: sampled while every viewer should be connected.
        sleep $(((n * RAMP_MS) / 1000 + SECONDS_PER_RUN / 2))
        rss1=$(rss_kib "$server_pid")
        wait "$wrk" || true
        cpu1=$(cpu_s "$server_pid")
        t1=$(date +%s.%N)
        line=$(grep "Sessions:" "$work/livewrk.out" || echo "Sessions: ? total, ? connected, ? failed")
        connected=$(echo "$line" | sed -E 's/.* ([0-9?]+) connected.*/\1/')
        failed=$(echo "$line" | sed -E 's/.* ([0-9?]+) failed.*/\1/')
        packets=$(grep "Packets:" "$work/livewrk.out" | sed -E 's/.*Packets: ([0-9]+),.*/\1/' || echo 0)
        awk -v s="$server" -v n="$n" -v c="$connected" -v f="$failed" -v c0="$cpu0" -v c1="$cpu1" \
            -v t0="$t0" -v t1="$t1" -v r0="$rss0" -v r1="$rss1" -v p="${packets:-0}" \
            -v secs="$SECONDS_PER_RUN" 'BEGIN {
                wall = t1 - t0; cpu = (c1 - c0) / wall * 100
                # Viewer-seconds: every viewer for the run, less half the ramp.
                vs = (c > 0 ? c : n) * secs
                printf "| %s | %d | %s | %s | %.0f | %.2f | %.0f | %.0f |\n", s, n, c, f, cpu,
                    (c1 - c0) * 1000 / vs, (r1 - r0) / n, p / vs
            }'
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        sleep 5
    done
done
