// Drives the jiangtang web player in headless Firefox ESR (WebDriver BiDi) and reports JSON.
//   node player-firefox.mjs SCENARIO SERVER STREAM SCREENSHOT_DIR
// Scenarios:
//   auto     /play/STREAM?ui=en: WebRTC first; without H.264 the player must move to LL-HLS
//            at once and say why; then a dialect switch
//   webrtc   /play/STREAM?mode=webrtc&ui=en: WebRTC only; without H.264 the sound alone, and
//            the player says why; then a dialect switch
// Reports the player's state, its events (with page times), the notice shown and the
// dominant tone before and after the switch.
import { launchFirefox } from "./firefox.mjs";
import { ANALYSE, toneAfterSwitch } from "./audio.mjs";

const [scenario, server, stream, shots] = process.argv.slice(2);
const browser = await launchFirefox();
const result = { errors: [] };

async function player(page) {
  return page.evaluate(() => {
    const e = document.querySelector("jiangtang-player");
    const r = e.shadowRoot;
    const notice = r.querySelector(".codec-notice");
    return {
      state: e.state,
      mode: e.mode,
      dialect: e.dialect,
      t: e.media.currentTime,
      videoWidth: e.media.videoWidth,
      notice: notice && !notice.hidden ? r.querySelector(".codec-text").textContent : null,
      audioCard: r.querySelector(".audio-card").hidden ? null : r.querySelector(".audio-text").textContent,
    };
  });
}

try {
  const page = await browser.newPage();
  await page.setViewport({ width: 960, height: 640 });
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.evaluateOnNewDocument(() => {
    window.__events = [];
    for (const name of ["statechange", "modechange", "fallback", "playbackerror"]) {
      document.addEventListener(name, (e) => window.__events.push({ name, detail: e.detail, at: performance.now() }));
    }
  });
  const query = scenario === "webrtc" ? "mode=webrtc&ui=en" : "ui=en";
  await page.goto(`${server}/play/${stream}?${query}`);
  await page.waitForFunction(
    () => {
      const e = document.querySelector("jiangtang-player");
      return e && e.state === "playing" && e.media.currentTime > 0.2;
    },
    { timeout: 30000, polling: 100 },
  );
  const a = await player(page);
  await new Promise((r) => setTimeout(r, 2000));
  result.player = await player(page);
  result.advanced = result.player.t - a.t;
  await page.screenshot({ path: `${shots}/player-firefox-${scenario}.png` });
  await page.evaluate(ANALYSE);
  await page.evaluate(() => window.__analyse());
  await new Promise((r) => setTimeout(r, 2000));
  result.before = await page.evaluate(() => window.__peak());
  await page.evaluate(() => {
    const select = document.querySelector("jiangtang-player").shadowRoot.querySelector("select.dialect");
    select.value = "yue";
    select.dispatchEvent(new Event("change"));
  });
  const switched = await toneAfterSwitch(page, result.before);
  result.after = switched.hz;
  result.switchMs = switched.ms;
  result.afterSwitch = await player(page);
  result.events = await page.evaluate(() => window.__events);
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
