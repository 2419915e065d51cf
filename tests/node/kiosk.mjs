// Opens a hall screen's kiosk page and never touches it: reports, as JSON, a timeline of the
// player's state, the overlay's text (the next lecture and its countdown), whether any
// control is visible, whether the video plays with sound, and its currentTime.
//   node kiosk.mjs KIOSK_URL SECONDS SCREENSHOT_DIR
import { launch } from "./browser.mjs";

const [url, seconds, shots] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], samples: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.goto(url);
  const start = Date.now();
  const shot = {};
  while (Date.now() - start < Number(seconds) * 1000) {
    const s = await page.evaluate(() => {
      const e = document.querySelector("jiangtang-player");
      const root = e.shadowRoot;
      const visible = (sel) =>
        [...root.querySelectorAll(sel)].some((x) => {
          const r = x.getBoundingClientRect();
          return !x.hidden && getComputedStyle(x).display !== "none" && r.width > 0 && r.height > 0;
        });
      const box = e.getBoundingClientRect();
      return {
        state: e.state,
        t: e.media.currentTime,
        muted: e.media.muted,
        paused: e.media.paused,
        msg: root.querySelector(".msg")?.textContent ?? "",
        sub: root.querySelector(".sub")?.textContent ?? "",
        controls: visible(".bar") || visible("button"),
        fills: box.width >= window.innerWidth - 1 && box.height >= window.innerHeight - 1,
      };
    });
    result.samples.push({ wall: (Date.now() - start) / 1000, ...s });
    if (!shot[s.state]) {
      shot[s.state] = true;
      await page.screenshot({ path: `${shots}/kiosk-${s.state}.png` });
    }
    await page.waitForTimeout(500);
  }
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
