// Launches Debian's Chromium (never a downloaded browser) headless, with the flags this
// machine needs: no sandbox as root, no background networking (the network is closed), and
// autoplay allowed so tests can hear audio.
import { chromium } from "playwright-core";

// `extra` adds flags, e.g. fake capture devices for a publishing test.
export function launch(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      ...extra,
    ],
  });
}
