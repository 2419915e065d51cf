#!/usr/bin/env bash
# The whole test suite: installs what is missing (Debian packages, npm packages for the
# player bundle and the browser tests), then format, lint, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
bash scripts/build-web.sh
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# Licences, duplicate versions and sources always; advisories when their databases answer.
bash scripts/audit.sh --offline-ok
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --locked --workspace --no-fail-fast
