// Watches a jiangtang /play page for SECONDS and reports a timeline of the video's
// currentTime and the page's status line as JSON:
//   node hls-watch.mjs URL SECONDS SCREENSHOT_DIR
import { launch } from "./browser.mjs";

const [url, seconds, shots] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], fatal: [], samples: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.jiangtangHls, null, { timeout: 20000 });
  await page.evaluate(() => {
    window.__fatal = [];
    window.jiangtangHls.on("hlsError", (_e, d) => {
      if (d.fatal) window.__fatal.push(`${d.type}:${d.details}`);
    });
  });
  const start = Date.now();
  let shotTaken = false;
  while (Date.now() - start < Number(seconds) * 1000) {
    const s = await page.evaluate(() => ({
      t: document.querySelector("video").currentTime,
      status: document.querySelector("#status").textContent,
    }));
    result.samples.push({ wall: (Date.now() - start) / 1000, ...s });
    if (!shotTaken && s.status.includes("reconnecting")) {
      await page.screenshot({ path: `${shots}/hls-reconnecting.png` });
      shotTaken = true;
    }
    await page.waitForTimeout(500);
  }
  result.fatal = await page.evaluate(() => window.__fatal);
  await page.screenshot({ path: `${shots}/hls-after-restart.png` });
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
