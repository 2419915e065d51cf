// Drives the web player's replays in headless Chromium and reports JSON.
//   node replay.mjs SCENARIO SERVER STREAM SCREENSHOT_DIR [RECORDING_ID]
// Scenarios:
//   from-start  /play/STREAM while the lecture is live: "watch from the beginning" plays
//               the recording so far (its EVENT playlist) well behind live, with the seek
//               bar and speed; "back to live" returns to the live engine
//   replay      /play/STREAM after the lecture: the list of its replays (posters), pick
//               RECORDING_ID, play it with hls.js, switch dialect (the tone heard changes),
//               seek, play at 2×; the download links; the MP4 download itself plays and
//               seeks in a <video>; /play/STREAM?replay=RECORDING_ID plays it directly
import { launch } from "./browser.mjs";
import { ANALYSE } from "./audio.mjs";

const [scenario, server, stream, shots, recordingId] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [] };

const el = () => document.querySelector("jiangtang-player");
const player = (page) =>
  page.evaluate(() => {
    const e = document.querySelector("jiangtang-player");
    return {
      state: e.state,
      mode: e.mode,
      replaying: e.replaying,
      dialect: e.dialect,
      dialects: e.dialects.map((d) => d.name),
      t: e.media.currentTime,
      duration: e.media.duration,
      rate: e.media.playbackRate,
      paused: e.media.paused,
      poster: e.media.getAttribute("poster"),
      badge: e.shadowRoot.querySelector(".badge").textContent,
    };
  });
const shadow = (page, sel) => `jiangtang-player >> ${sel}`;
const visible = (page, sel) =>
  page.evaluate((sel) => {
    const n = document.querySelector("jiangtang-player").shadowRoot.querySelector(sel);
    return !!n && n.offsetParent !== null;
  }, sel);

/** Waits until currentTime moves on, returning how far it went in `ms`. */
async function advance(page, ms) {
  const t0 = await page.evaluate(() => document.querySelector("jiangtang-player").media.currentTime);
  await page.waitForTimeout(ms);
  const t1 = await page.evaluate(() => document.querySelector("jiangtang-player").media.currentTime);
  return t1 - t0;
}

/** Seeks with the seek bar (as a viewer dragging it) to `to` seconds. */
async function seekBar(page, to) {
  await page.evaluate((to) => {
    const s = document.querySelector("jiangtang-player").shadowRoot.querySelector("input.seek");
    s.value = String(to);
    s.dispatchEvent(new Event("input"));
    s.dispatchEvent(new Event("change"));
  }, to);
  await page.waitForFunction(
    (to) => {
      const m = document.querySelector("jiangtang-player").media;
      return Math.abs(m.currentTime - to) < 2 && !m.seeking && m.readyState >= 3;
    },
    to,
    { timeout: 15000 },
  );
}

try {
  const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
  page.on("pageerror", (e) => result.errors.push(String(e)));
  page.on("response", (r) => {
    // The live playlists' blocking reloads may 503 in a publisher gap, and a WebRTC session
    // the relay already closed (the peer connection closed first) is a 404 to its DELETE;
    // nothing else may fail.
    const whepGone = r.request().method() === "DELETE" && r.url().includes("/whep/");
    if (r.status() >= 400 && !r.url().includes("/hls/") && !whepGone) result.errors.push(`${r.status()} ${r.url()}`);
  });
  if (process.env.DEBUG) page.on("console", (m) => process.stderr.write(`console: ${m.text()}\n`));

  if (scenario === "from-start") {
    await page.goto(`${server}/play/${stream}?ui=en`);
    await page.waitForFunction(() => {
      const e = document.querySelector("jiangtang-player");
      return e?.state === "playing" && e.media.currentTime > 0.5 && !e.replaying;
    }, null, { timeout: 40000 });
    result.live = await player(page);
    await page.waitForFunction(
      () => {
        const b = document.querySelector("jiangtang-player").shadowRoot.querySelector("button.from-start");
        return b && !b.hidden;
      },
      null,
      { timeout: 30000 },
    );
    await page.screenshot({ path: `${shots}/replay-live-offers-from-start.png` });
    await page.click(shadow(page, "button.from-start"));
    await page.waitForFunction(() => {
      const e = document.querySelector("jiangtang-player");
      return e.replaying?.live && e.state === "playing" && e.media.currentTime > 0.5;
    }, null, { timeout: 30000 });
    result.fromStart = await player(page);
    result.hlsTracks = await page.evaluate(() =>
      document.querySelector("jiangtang-player").engine.hls.audioTracks.map((t) => ({ name: t.name, lang: t.lang })),
    );
    result.fromStartAdvanced = await advance(page, 2000);
    result.seekBarVisible = await visible(page, "input.seek");
    result.backLiveVisible = await visible(page, "button.back-live");
    result.liveOnlyHidden = !(await visible(page, "button.hand"));
    // Catching up at 1.5×.
    await page.selectOption(shadow(page, "select.speed"), "1.5");
    result.catchUp = await advance(page, 3000);
    result.catchUpRate = (await player(page)).rate;
    await page.screenshot({ path: `${shots}/replay-from-start.png` });
    await page.click(shadow(page, "button.back-live"));
    await page.waitForFunction(() => {
      const e = document.querySelector("jiangtang-player");
      return !e.replaying && e.state === "playing" && e.media.currentTime > 0.5;
    }, null, { timeout: 40000 });
    result.backToLive = await player(page);
    result.backToLiveAdvanced = await advance(page, 2000);
    await page.screenshot({ path: `${shots}/replay-back-to-live.png` });
  } else if (scenario === "replay") {
    await page.goto(`${server}/play/${stream}?ui=en`);
    await page.waitForFunction(
      () => document.querySelector("jiangtang-player")?.shadowRoot.querySelectorAll(".replays .replay-item").length >= 2,
      null,
      { timeout: 40000 },
    );
    result.offered = await page.evaluate(() => {
      const root = document.querySelector("jiangtang-player").shadowRoot;
      return {
        message: root.querySelector(".overlay .msg").textContent,
        items: [...root.querySelectorAll(".replays .replay-item")].map((b) => ({
          id: b.dataset.id,
          text: b.textContent,
          poster: b.querySelector("img")?.getAttribute("src") ?? null,
          posterLoaded: (b.querySelector("img")?.naturalWidth ?? 0) > 0,
        })),
      };
    });
    // Posters are lazy images: give them a moment to arrive, then look again.
    await page.waitForTimeout(1000);
    result.postersLoaded = await page.evaluate(() =>
      [...document.querySelector("jiangtang-player").shadowRoot.querySelectorAll(".replays .replay-item img")].map((i) => i.naturalWidth),
    );
    await page.screenshot({ path: `${shots}/replay-list.png` });
    await page.click(shadow(page, `.replays .replay-item[data-id="${recordingId}"]`));
    await page.waitForFunction(() => {
      const e = document.querySelector("jiangtang-player");
      return e.replaying && e.state === "playing" && e.media.currentTime > 1;
    }, null, { timeout: 30000 });
    result.playing = await player(page);
    result.hlsTracks = await page.evaluate(() =>
      document.querySelector("jiangtang-player").engine.hls.audioTracks.map((t) => ({ name: t.name, lang: t.lang, default: t.default })),
    );
    result.advanced = await advance(page, 2000);
    // Dialect: the tone heard follows the picker.
    await page.evaluate(ANALYSE);
    await page.evaluate(() => window.__analyse());
    await page.waitForTimeout(1500);
    result.hzBefore = await page.evaluate(() => window.__peak());
    await page.selectOption(shadow(page, "select.dialect"), "yue");
    await page.waitForFunction(
      () => {
        const h = document.querySelector("jiangtang-player").engine.hls;
        return h.audioTracks[h.audioTrack]?.lang === "yue";
      },
      null,
      { timeout: 10000 },
    );
    await page.waitForTimeout(3000);
    result.hzAfter = await page.evaluate(() => window.__peak());
    result.afterSwitch = await player(page);
    // Seek with the bar, back and forth.
    const d = (await player(page)).duration;
    for (const frac of [0.7, 0.15]) {
      const to = Math.round(d * frac * 10) / 10;
      await seekBar(page, to);
      const at = (await player(page)).t;
      const moved = await advance(page, 1500);
      result[`seek${Math.round(frac * 100)}`] = { to, at, moved };
    }
    result.hzAfterSeek = await page.evaluate(() => window.__peak());
    // 2×.
    await page.selectOption(shadow(page, "select.speed"), "2");
    result.rate = (await player(page)).rate;
    result.at2x = await advance(page, 3000);
    await page.screenshot({ path: `${shots}/replay-playing.png` });
    result.downloads = await page.evaluate(() =>
      [...document.querySelector("jiangtang-player").shadowRoot.querySelectorAll(".downloads a")].map((a) => ({
        text: a.textContent,
        href: a.getAttribute("href"),
        download: a.hasAttribute("download"),
      })),
    );
    result.backListVisible = await visible(page, "button.back-list");
    // The MP4 download in an ordinary <video>: it plays at once, and seeks.
    const mp4 = result.downloads[0]?.href;
    result.mp4 = await page.evaluate(async (src) => {
      const v = document.createElement("video");
      v.muted = true;
      v.src = src;
      document.body.appendChild(v);
      await v.play();
      const wait = (f, ms) =>
        new Promise((ok, fail) => {
          const t0 = Date.now();
          const tick = () => (f() ? ok() : Date.now() - t0 > ms ? fail(new Error("timeout")) : setTimeout(tick, 50));
          tick();
        });
      await wait(() => v.currentTime > 1, 15000);
      const duration = v.duration;
      const size = [v.videoWidth, v.videoHeight];
      v.currentTime = duration * 0.6;
      await wait(() => !v.seeking && v.readyState >= 3, 15000);
      const at = v.currentTime;
      await new Promise((r) => setTimeout(r, 1500));
      return { duration, size, seekedTo: at, moved: v.currentTime - at };
    }, mp4);
    // A link to one replay: /play/NAME?replay=ID plays it at once.
    await page.goto(`${server}/play/${stream}?ui=en&replay=${recordingId}`);
    await page.waitForFunction(
      (id) => {
        const e = document.querySelector("jiangtang-player");
        return e?.replaying?.id === id && e.state === "playing" && e.media.currentTime > 1;
      },
      recordingId,
      { timeout: 30000 },
    );
    result.linked = await player(page);
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
