// Plays a jiangtang /play page in headless Chromium and reports what happened as JSON:
//   node hls-play.mjs URL SCREENSHOT_DIR [SWITCH_TO_INDEX]
// The dominant audio frequency is measured with a WebAudio AnalyserNode before and after
// switching the dialect, so a test can tell which tone (dialect) is heard.
import { launch } from "./browser.mjs";

const [url, shots, switchTo] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [] };
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
  await page.waitForFunction(() => document.querySelector("video")?.currentTime > 2, null, { timeout: 40000 });
  const t1 = await page.evaluate(() => document.querySelector("video").currentTime);
  await page.waitForTimeout(2000);
  const t2 = await page.evaluate(() => document.querySelector("video").currentTime);
  result.advanced = t2 - t1;
  result.tracks = await page.evaluate(() =>
    window.jiangtangHls.audioTracks.map((t) => ({ name: t.name, lang: t.lang, default: t.default })),
  );
  result.picker = await page.evaluate(() => [...document.querySelectorAll("#dialect option")].map((o) => o.textContent));
  result.latency = await page.evaluate(() => window.jiangtangHls.latency);
  result.lowLatency = await page.evaluate(() => window.jiangtangHls.lowLatencyMode);
  // Route the element's sound into an analyser.
  await page.evaluate(() => {
    const v = document.querySelector("video");
    v.muted = false;
    const ctx = new AudioContext();
    const src = ctx.createMediaElementSource(v);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    src.connect(an);
    an.connect(ctx.destination);
    window.__peak = () => {
      const bins = new Float32Array(an.frequencyBinCount);
      an.getFloatFrequencyData(bins);
      let best = 0;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      return (best * ctx.sampleRate) / an.fftSize;
    };
  });
  await page.waitForTimeout(1500);
  result.hzBefore = await page.evaluate(() => window.__peak());
  await page.screenshot({ path: `${shots}/hls-playing.png` });
  if (switchTo !== undefined) {
    await page.selectOption("#dialect", String(switchTo));
    await page.waitForFunction((i) => window.jiangtangHls.audioTrack === i, Number(switchTo), { timeout: 10000 });
    // Let the new rendition's audio reach the speakers.
    await page.waitForTimeout(5000);
    result.hzAfter = await page.evaluate(() => window.__peak());
    result.currentAfter = await page.evaluate(() => document.querySelector("video").currentTime);
    await page.screenshot({ path: `${shots}/hls-switched.png` });
  }
  result.status = await page.evaluate(() => document.querySelector("#status").textContent);
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
