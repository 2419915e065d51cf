// Drives the jiangtang web player in headless Chromium and reports JSON.
//   node player.mjs SCENARIO SERVER STREAM SCREENSHOT_DIR [SECONDS]
// Scenarios:
//   play          /play/STREAM: mode auto (WebRTC first), switch dialect, check the tone
//   no-webrtc     like play, but with RTCPeerConnection removed (as in some in-app webviews)
//   audio         /play/STREAM?mode=audio: audio only, switch dialect
//   watch         /play/STREAM for SECONDS, sampling state and currentTime (restart tests);
//                 a screenshot of each state the first time it is seen
//   embed         a page on another origin with an iframe of /play/STREAM and a
//                 <jiangtang-player> loaded from /player.js
//   state         /play/STREAM, wait for a settled state, screenshot (scheduled, ended, ...)
//   remember      choose a dialect, reload, check it is remembered
//   interact      raise a hand and ask a question from the player's controls
//   mobile        /play/STREAM in a phone-sized viewport: nothing overflows, controls fit and
//                 are big enough to tap
//   ttff          time to first frame: SECONDS fresh browser contexts per mode (auto, hls,
//                 audio), each timed from navigation start to the player's "playing" state
import http from "node:http";
import { launch } from "./browser.mjs";
import { ANALYSE, toneAfterSwitch } from "./audio.mjs";

const [scenario, server, stream, shots, seconds] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [] };
const closers = [];

async function player(page) {
  return page.evaluate(() => {
    const e = document.querySelector("jiangtang-player");
    return {
      state: e.state,
      mode: e.mode,
      dialect: e.dialect,
      dialects: e.dialects.map((d) => d.name),
      title: e.lectureTitle,
      t: e.media.currentTime,
      videoWidth: e.media.videoWidth,
    };
  });
}

async function waitPlaying(page, timeout = 30000) {
  const t0 = Date.now();
  await page.waitForFunction(() => {
    const e = document.querySelector("jiangtang-player");
    return e && e.state === "playing" && e.media.currentTime > 0.2;
  }, null, { timeout });
  return Date.now() - t0;
}

async function dialectSwitch(page, to) {
  await page.evaluate(ANALYSE);
  await page.evaluate(() => window.__analyse());
  await page.waitForTimeout(2000);
  const before = await page.evaluate(() => window.__peak());
  await page.selectOption("jiangtang-player >> select.dialect", to);
  const { hz: after, ms: switchMs } = await toneAfterSwitch(page, before);
  return { before, after, switchMs };
}

if (scenario === "ttff") {
  result.ttff = {};
  try {
    for (const mode of ["auto", "hls", "audio"]) {
      const runs = [];
      for (let i = 0; i < Number(seconds); i++) {
        // A fresh context each time: empty cache, no remembered dialect, like a first visit.
        const ctx = await browser.newContext();
        const page = await ctx.newPage();
        page.on("pageerror", (e) => result.errors.push(String(e)));
        await page.goto(`${server}/play/${stream}?mode=${mode}&muted=1`);
        // Polled every animation frame; the page's clock starts at navigation.
        const at = await page.waitForFunction(() => {
          const e = document.querySelector("jiangtang-player");
          return e?.state === "playing" && e.media.currentTime > 0 && performance.now();
        }, null, { timeout: 30000 });
        const ms = await at.jsonValue();
        const r = await page.evaluate((ms) => ({
          mode: document.querySelector("jiangtang-player").mode,
          ms: Math.round(ms),
          transferred: performance.getEntriesByType("resource").reduce((n, e) => n + e.transferSize, 0),
        }), ms);
        runs.push(r);
        await ctx.close();
      }
      result.ttff[mode] = runs;
    }
  } catch (e) {
    result.errors.push(String(e));
  }
  await browser.close();
  console.log(JSON.stringify(result));
  process.exit(0);
}

try {
  const page = await browser.newPage({ viewport: { width: 960, height: 640 } });
  page.on("pageerror", (e) => result.errors.push(String(e)));
  if (process.env.DEBUG) page.on("console", (m) => process.stderr.write(`console: ${m.text()}\n`));
  if (scenario === "no-webrtc") {
    await page.addInitScript(() => {
      delete window.RTCPeerConnection;
      delete window.webkitRTCPeerConnection;
    });
  }
  const events = [];
  await page.exposeFunction("__event", (e) => events.push(e));
  await page.addInitScript(() => {
    for (const name of ["statechange", "modechange", "fallback", "dialectchange", "playbackerror"]) {
      document.addEventListener(name, (e) => window.__event({ name, detail: e.detail, at: performance.now() }));
    }
  });

  if (scenario === "play" || scenario === "no-webrtc") {
    const t0 = Date.now();
    await page.goto(`${server}/play/${stream}?ui=en`);
    result.firstFrameMs = (await waitPlaying(page)) + 0;
    result.loadToPlayingMs = Date.now() - t0;
    const a = await player(page);
    await page.waitForTimeout(2000);
    const b = await player(page);
    result.advanced = b.t - a.t;
    result.player = b;
    // The info panel says how it plays and how far behind live.
    await page.click("jiangtang-player >> button.info-btn");
    await page.waitForTimeout(1200);
    result.info = await page.evaluate(() => {
      const r = document.querySelector("jiangtang-player").shadowRoot;
      return { mode: r.querySelector(".info-mode")?.textContent, latency: r.querySelector(".info-latency")?.textContent };
    });
    await page.screenshot({ path: `${shots}/player-${scenario}-playing.png` });
    Object.assign(result, await dialectSwitch(page, "yue"));
    result.afterSwitch = await player(page);
    await page.screenshot({ path: `${shots}/player-${scenario}-switched.png` });
  } else if (scenario === "audio") {
    await page.goto(`${server}/play/${stream}?mode=audio`);
    await waitPlaying(page);
    result.player = await player(page);
    Object.assign(result, await dialectSwitch(page, "hak"));
    result.afterSwitch = await player(page);
    result.audioCard = await page.evaluate(() => document.querySelector("jiangtang-player").shadowRoot.querySelector(".audio-text").textContent);
    await page.screenshot({ path: `${shots}/player-audio-only.png` });
  } else if (scenario === "watch" || scenario === "watch-webrtc") {
    await page.goto(`${server}/play/${stream}${scenario === "watch-webrtc" ? "?mode=webrtc" : ""}`);
    const samples = [];
    const end = Date.now() + Number(seconds) * 1000;
    const shotStates = new Set();
    while (Date.now() < end) {
      const p = await player(page);
      samples.push({ at: Date.now(), state: p.state, t: p.t, mode: p.mode, videoWidth: p.videoWidth });
      if (!shotStates.has(p.state)) {
        shotStates.add(p.state);
        await page.screenshot({ path: `${shots}/player-watch-${stream}-${p.state}.png` });
      }
      await page.waitForTimeout(400);
    }
    result.samples = samples;
    await page.screenshot({ path: `${shots}/player-watch-${stream}-last.png` });
  } else if (scenario === "embed") {
    // A page of another origin (another port on loopback, so a real cross-origin HTTP
    // server) embedding the lecture both ways.
    const html = `<!doctype html><meta charset="utf-8"><h1>区融媒体中心</h1>
      <iframe id="frame" src="${server}/play/${stream}?mode=hls&muted=1" width="640" height="420" allow="autoplay"></iframe>
      <jiangtang-player id="el" server="${server}" stream="${stream}" mode="hls" autoplay muted ui="en"></jiangtang-player>
      <script src="${server}/player.js"></script>`;
    const portal = http.createServer((_, res) => {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(html);
    });
    await new Promise((ok) => portal.listen(0, "127.0.0.1", ok));
    closers.push(() => portal.close());
    const embedder = `http://127.0.0.1:${portal.address().port}`;
    await page.goto(`${embedder}/lecture.html`);
    await waitPlaying(page);
    result.element = await player(page);
    const frame = page.frame({ url: (u) => u.toString().startsWith(`${server}/play/`) });
    await frame.waitForFunction(() => {
      const e = document.querySelector("jiangtang-player");
      return e && e.state === "playing" && e.media.currentTime > 0.2;
    }, null, { timeout: 30000 });
    result.iframe = await frame.evaluate(() => {
      const e = document.querySelector("jiangtang-player");
      return { state: e.state, mode: e.mode, t: e.media.currentTime };
    });
    await page.screenshot({ path: `${shots}/player-embedded.png`, fullPage: true });
  } else if (scenario === "state") {
    await page.goto(`${server}/play/${stream}`);
    await page.waitForTimeout(3000);
    result.player = await player(page);
    result.overlay = await page.evaluate(() => {
      const r = document.querySelector("jiangtang-player").shadowRoot;
      return { msg: r.querySelector(".msg").textContent, sub: r.querySelector(".sub").textContent, title: r.querySelector(".title").textContent, titleHtml: r.querySelector(".title").innerHTML };
    });
    result.pwned = await page.evaluate(() => window.pwned ?? null);
    await page.screenshot({ path: `${shots}/player-state-${result.player.state}.png` });
  } else if (scenario === "mobile") {
    await page.setViewportSize({ width: 360, height: 640 });
    await page.goto(`${server}/play/${stream}?mode=hls`);
    await waitPlaying(page);
    result.layout = await page.evaluate(() => {
      const r = document.querySelector("jiangtang-player").shadowRoot;
      // Controls shown now (a hidden one, e.g. "watch from the beginning" before there is a
      // recording, takes no room and cannot be tapped).
      const controls = [...r.querySelectorAll(".bar button, .bar select, .bar input")]
        .filter((e) => e.getClientRects().length > 0)
        .map((e) => e.getBoundingClientRect());
      return {
        scrollWidth: document.documentElement.scrollWidth,
        scrollHeight: document.documentElement.scrollHeight,
        controlsInside: controls.every((b) => b.left >= 0 && b.right <= innerWidth && b.bottom <= innerHeight),
        smallestControl: Math.min(...controls.map((b) => b.height)),
        videoHeight: r.querySelector("video").getBoundingClientRect().height,
      };
    });
    result.player = await player(page);
    await page.screenshot({ path: `${shots}/player-mobile.png` });
  } else if (scenario === "remember") {
    await page.goto(`${server}/play/${stream}?mode=hls`);
    await waitPlaying(page);
    await page.selectOption("jiangtang-player >> select.dialect", "hak");
    await page.waitForTimeout(500);
    await page.reload();
    await waitPlaying(page);
    result.player = await player(page);
  } else if (scenario === "interact") {
    await page.goto(`${server}/play/${stream}?mode=hls`);
    await waitPlaying(page);
    await page.evaluate(() => document.querySelector("jiangtang-player").setAttribute("from", "西和小学"));
    await page.click("jiangtang-player >> button.hand");
    await page.waitForTimeout(2200);
    await page.fill("jiangtang-player >> input.question", "第三题<b>怎么</b>做？");
    await page.press("jiangtang-player >> input.question", "Enter");
    await page.waitForTimeout(500);
    // Keyboard: tab to the play button and toggle with Space.
    await page.focus("jiangtang-player >> button.play");
    await page.keyboard.press("Space");
    await page.waitForTimeout(300);
    result.pausedByKeyboard = await page.evaluate(() => document.querySelector("jiangtang-player").media.paused);
    result.player = await player(page);
  }
  result.events = events.map((e) => ({ name: e.name, detail: e.detail, at: e.at }));
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
  for (const close of closers) close();
}
console.log(JSON.stringify(result));
