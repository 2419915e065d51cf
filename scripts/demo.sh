#!/usr/bin/env bash
# Installs what is missing, builds jiangtang (release) and runs it with the built-in demo
# lecture: open http://localhost:8080/play/demo. Extra arguments go to `jiangtang serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
bash scripts/build-web.sh
cargo build --release --locked
echo "jiangtang: open http://localhost:8080/play/demo (publish: rtmp://localhost:1935/live/NAME)"
exec ./target/release/jiangtang serve "$@"
