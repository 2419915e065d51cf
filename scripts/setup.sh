#!/usr/bin/env bash
# Installs what jiangtang needs to build, run and test, skipping what is already there.
# Debian 12 (bookworm) as root; elsewhere, install the equivalent packages yourself.
set -euo pipefail

want_pkgs=(
  # build
  pkg-config build-essential curl ca-certificates
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  # SRT ingest links the reference libsrt (OpenSSL flavour; ffmpeg's GnuTLS one coexists)
  libsrt-openssl-dev
  # runtime: demo lecture (x264enc, voaacenc, clockoverlay), AAC decode
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x fonts-dejavu-core fonts-wqy-microhei
  # test peers
  ffmpeg chromium nodejs npm srt-tools
  # Firefox ESR as Debian ships it (no OpenH264 plugin: VP8/VP9/AV1 over WebRTC only)
  firefox-esr
  # a local RTSP camera for the RTSP pull tests (gst-rtsp-server from Python)
  gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi python3-gst-1.0
  # network namespaces with firewall rules (a viewer behind a firewall that drops UDP)
  iproute2 nftables
  # the catalogue's tests and benchmarks run a throwaway PostgreSQL cluster (initdb, pg_ctl);
  # its iCal feeds are parsed by Python's icalendar
  postgresql python3-icalendar
  # nginx: the HLS cache in front of the relay (config/nginx/hls-cache.conf, tested); with
  # its RTMP module, what a district would run instead (benchmarks: HLS, recording); and
  # wrk, the HTTP load generator both are measured with
  nginx libnginx-mod-rtmp wrk
  # HTTPS tests: a throwaway CA and certificates (openssl), slow-client floods (slowhttptest)
  openssl slowhttptest
)

missing=()
for p in "${want_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm may come from elsewhere than Debian (nodesource, nvm): accept any working copy.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
filtered=()
for p in "${missing[@]}"; do [ -n "$p" ] && filtered+=("$p"); done
if [ ${#filtered[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "setup: installing ${filtered[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${filtered[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: installing the Rust toolchain with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
