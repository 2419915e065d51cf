# Sourced by scripts that run live777's tools (whipinto-soak.sh, livewrk-compare.sh): builds
# the named binaries of live777 at a pinned commit outside this tree, once. live777 is not on
# crates.io; nothing of it is committed. The first build takes 20+ minutes on two cores.
#
#   live777_build whipinto livewrk      # then "$LIVE777_BIN/whipinto" ...

LIVE777_REPO="${LIVE777_REPO:-https://github.com/binbat/live777}"
# live777 v0.9.0-108 (2026-12): its whipinto and livewrk use webrtc-rs 0.20.
LIVE777_COMMIT="${LIVE777_COMMIT:-42205144}"
EXT_DIR="${EXT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jiangtang-ext}"
LIVE777_BIN="$EXT_DIR/target/release"

live777_build() {
    local missing=() b
    for b in "$@"; do
        [ -x "$LIVE777_BIN/$b" ] || missing+=(--bin "$b")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ ! -d "$EXT_DIR/live777/.git" ]; then
        mkdir -p "$EXT_DIR"
        git clone --quiet "$LIVE777_REPO" "$EXT_DIR/live777"
    fi
    git -C "$EXT_DIR/live777" checkout --quiet "$LIVE777_COMMIT"
    (cd "$EXT_DIR/live777" &&
        CARGO_TARGET_DIR="$EXT_DIR/target" cargo build --release --locked "${missing[@]}")
}
