#!/usr/bin/env bash
# Builds the web player bundle (player-web/dist/player.js) from player-web/web with the
# npm lockfile. Runs only when the sources are newer than the bundle.
set -euo pipefail
cd "$(dirname "$0")/../player-web/web"
if [ -f ../dist/player.js ] && [ -z "$(find src package.json package-lock.json -newer ../dist/player.js 2>/dev/null)" ]; then
  exit 0
fi
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm run build --silent
echo "built player-web/dist/player.js ($(wc -c < ../dist/player.js) bytes)"
