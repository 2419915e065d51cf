#!/usr/bin/env bash
# Supply-chain checks (issue 12 item 6):
#   - cargo deny: licences, banned/duplicate crate versions, sources (offline, always), and
#     RustSec advisories;
#   - npm audit --omit=dev for the player bundle's dependencies (what ships to browsers).
#
#   scripts/audit.sh                 # everything; advisories fetched if the network allows
#   ADVISORY_DB=DIR scripts/audit.sh # RustSec advisories from a local clone of
#                                    # github.com/rustsec/advisory-db (no fetch)
#   scripts/audit.sh --offline-ok    # (CI) advisories that cannot be fetched are reported
#                                    # as not checked instead of failing the run
#
# Installs cargo-deny (from crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
offline_ok=false
[ "${1:-}" = "--offline-ok" ] && offline_ok=true

if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny@0.20.2
fi

echo "== cargo deny: licences, bans (duplicate versions), sources"
cargo deny --locked check licenses bans sources

echo "== cargo deny: RustSec advisories"
if [ -n "${ADVISORY_DB:-}" ]; then
    # cargo deny keeps each database under db-path in a folder named after its URL; a
    # throwaway db-path holding ADVISORY_DB under that name lets it run without fetching.
    dbs=$(mktemp -d)
    trap 'rm -rf "$dbs"' EXIT
    ln -s "$(cd "$ADVISORY_DB" && pwd)" "$dbs/advisory-db-3157b0e258782691"
    sed "s|^\[advisories\]|[advisories]\ndb-path = \"$dbs\"|" deny.toml > "$dbs/deny.toml"
    echo "(database: $ADVISORY_DB at $(git -C "$ADVISORY_DB" log -1 --format='%h %cs' 2>/dev/null || echo 'unknown commit'))"
    cargo deny --locked --offline --config "$dbs/deny.toml" check advisories
elif out=$(cargo deny --locked check advisories 2>&1); then
    echo "$out" | tail -3
else
    echo "$out" | tail -15
    if $offline_ok && grep -qiE "failed to fetch|unable to access|resolve host|network|could not connect" <<<"$out"; then
        echo "NOTICE: RustSec advisories NOT CHECKED: the advisory database could not be fetched (no network to GitHub). Run scripts/audit.sh with network, or ADVISORY_DB=DIR."
    else
        exit 1
    fi
fi

echo "== npm audit --omit=dev (player bundle)"
cd player-web/web
if json=$(npm audit --omit=dev --json 2>/dev/null); then
    echo "no known vulnerabilities in the player's runtime dependencies"
elif grep -q '"auditReportVersion"' <<<"$json"; then
    npm audit --omit=dev || true
    exit 1
elif $offline_ok; then
    echo "NOTICE: npm advisories NOT CHECKED: the registry's audit endpoint did not answer ($(grep -o '"message": *"[^"]*"' <<<"$json" | head -1))."
else
    echo "npm audit could not reach the advisory endpoint:"
    grep -o '"message": *"[^"]*"' <<<"$json" | head -1
    exit 1
fi
