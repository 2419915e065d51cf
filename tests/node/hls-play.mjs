// Plays a lecture's /play page with the player forced to LL-HLS (hls.js) in headless
// Chromium and reports, as JSON, what hls.js itself saw: the audio renditions with their
// names and languages, low-latency mode, its latency estimate, and the dominant audio
// frequency before and after switching dialect from the player's picker.
//   node hls-play.mjs PLAY_URL SCREENSHOT_DIR SWITCH_TO_LANG
import { launch } from "./browser.mjs";
import { ANALYSE, toneAfterSwitch } from "./audio.mjs";

const [url, shots, switchTo] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [] };
const hlsOf = () => document.querySelector("jiangtang-player").engine?.hls;
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) result.errors.push(m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 400) result.errors.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => {
    const e = document.querySelector("jiangtang-player");
    return e?.state === "playing" && e.media.currentTime > 2;
  }, null, { timeout: 40000 });
  const t = () => page.evaluate(() => document.querySelector("jiangtang-player").media.currentTime);
  const t1 = await t();
  await page.waitForTimeout(2000);
  result.advanced = (await t()) - t1;
  result.mode = await page.evaluate(() => document.querySelector("jiangtang-player").mode);
  result.tracks = await page.evaluate(`(${hlsOf})().audioTracks.map((t) => ({ name: t.name, lang: t.lang, default: t.default }))`);
  result.picker = await page.evaluate(() =>
    [...document.querySelector("jiangtang-player").shadowRoot.querySelectorAll("select.dialect option")].map((o) => o.textContent),
  );
  result.latency = await page.evaluate(`(${hlsOf})().latency`);
  result.lowLatency = await page.evaluate(`(${hlsOf})().lowLatencyMode`);
  await page.evaluate(ANALYSE);
  await page.evaluate(() => window.__analyse());
  await page.waitForTimeout(1500);
  result.hzBefore = await page.evaluate(() => window.__peak());
  await page.screenshot({ path: `${shots}/hls-playing.png` });
  await page.selectOption("jiangtang-player >> select.dialect", switchTo);
  await page.waitForFunction(
    `(() => { const h = (${hlsOf})(); return h.audioTracks[h.audioTrack]?.lang === ${JSON.stringify(switchTo)}; })()`,
    null,
    { timeout: 10000 },
  );
  // Let the new rendition's audio reach the speakers.
  const switched = await toneAfterSwitch(page, result.hzBefore);
  result.hzAfter = switched.hz;
  result.switchMs = switched.ms;
  result.state = await page.evaluate(() => document.querySelector("jiangtang-player").state);
  await page.screenshot({ path: `${shots}/hls-switched.png` });
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
