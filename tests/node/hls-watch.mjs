// Watches a lecture's /play page (player forced to LL-HLS) for SECONDS and reports, as JSON,
// a timeline of the player's state and currentTime plus the player's own error events:
//   node hls-watch.mjs PLAY_URL SECONDS SCREENSHOT_DIR
import { launch } from "./browser.mjs";

const [url, seconds, shots] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], playbackErrors: [], samples: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.exposeFunction("__playbackError", (d) => result.playbackErrors.push(d));
  await page.addInitScript(() => {
    document.addEventListener("playbackerror", (e) => window.__playbackError(e.detail));
  });
  await page.goto(url);
  const start = Date.now();
  let shotTaken = false;
  while (Date.now() - start < Number(seconds) * 1000) {
    const s = await page.evaluate(() => {
      const e = document.querySelector("jiangtang-player");
      return { t: e.media.currentTime, state: e.state, mode: e.mode };
    });
    result.samples.push({ wall: (Date.now() - start) / 1000, ...s });
    if (!shotTaken && s.state === "reconnecting") {
      await page.screenshot({ path: `${shots}/hls-reconnecting.png` });
      shotTaken = true;
    }
    await page.waitForTimeout(500);
  }
  await page.screenshot({ path: `${shots}/hls-after-restart.png` });
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
