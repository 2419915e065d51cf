// Asking back, the whole round trip in one headless Chromium with fake capture devices:
//   A  a sub-venue's player (/play/STREAM?site=SITE) raises its hand;
//   B  the console's lecture page accepts it (button.ask-accept);
//   A  starts speaking (button.ask-start): its camera and microphone go out over WHIP;
//   B  sees and hears it (video.ask-preview: picture size, time advancing, audio energy);
//   B  broadcasts it: A shows .ask-onair, C (a plain viewer, /play/STREAM?mode=webrtc) gets the site's
//      picture instead of the lecture's; B takes it off air: C gets the lecture back;
//   B  broadcasts it again and ends it while on air: A's askState becomes "ended", C has
//      the lecture again.
// Environment:
//   ASK_SERVER      the relay, e.g. http://127.0.0.1:8080 (player pages, WHIP/WHEP)
//   ASK_CONSOLE     the console's origin (default ASK_SERVER)
//   ASK_STREAM      the lecture's stream name
//   ASK_SITE        the sub-venue's code (A opens /play/STREAM?site=SITE)
//   ASK_LECTURE     the lecture's id in the catalogue (B opens /admin/lectures/ID)
//   ASK_OPERATOR, ASK_PASSWORD   a console account (or ASK_COOKIE: "name=value" of a session)
//   ASK_SHOTS       a directory for screenshots (optional)
//   ASK_TIMEOUT_S   how long each step may wait (default 30)
// Prints one JSON object on stdout: {errors, console, steps: {hand, accept, start, preview,
// broadcast, off_air, broadcast_again, end}, askStates}; each step's result is also printed
// as one JSON line on stderr when it is done ({"step": NAME, ...}).
import { launch } from "./browser.mjs";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const server = env("ASK_SERVER").replace(/\/$/, "");
const consoleUrl = env("ASK_CONSOLE", server).replace(/\/$/, "");
const stream = env("ASK_STREAM");
const site = env("ASK_SITE");
const lecture = env("ASK_LECTURE");
const shots = process.env.ASK_SHOTS || null;
const timeout = Number(env("ASK_TIMEOUT_S", "30")) * 1000;

const result = { errors: [], console: [], steps: {}, askStates: [] };

function step(name, data) {
  result.steps[name] = data;
  process.stderr.write(`${JSON.stringify({ step: name, ...data })}\n`);
}

function watch(page, label) {
  page.on("pageerror", (e) => result.errors.push(`${label}: ${e}`));
  page.on("console", (m) => {
    if (m.type() === "error") result.console.push(`${label}: ${m.text()}`);
  });
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png` }).catch(() => undefined);
}

/** The player's state, its picture's size and its time, and its ask's state. */
function player(page) {
  return page.evaluate(() => {
    const e = document.querySelector("jiangtang-player");
    const root = e.shadowRoot;
    const shown = (sel) => {
      const x = root.querySelector(sel);
      if (!x) return false;
      const r = x.getBoundingClientRect();
      return getComputedStyle(x).display !== "none" && r.width > 0 && r.height > 0;
    };
    const self = root.querySelector("video.ask-self");
    return {
      state: e.state,
      mode: e.mode,
      width: e.media.videoWidth,
      height: e.media.videoHeight,
      t: e.media.currentTime,
      askState: e.askState,
      askId: e.askId,
      onAirBadge: shown(".ask-onair"),
      startButton: shown("button.ask-start"),
      declineButton: shown("button.ask-decline"),
      stopButton: shown("button.ask-stop"),
      message: root.querySelector(".ask-msg")?.textContent ?? "",
      self: self
        ? { shown: shown("video.ask-self"), width: self.videoWidth, height: self.videoHeight, live: !!self.srcObject && self.srcObject.getTracks().some((t) => t.readyState === "live") }
        : null,
    };
  });
}

async function waitPlayer(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`${what}: ${e.message.split("\n")[0]} (player: ${JSON.stringify(await player(page).catch(() => null))})`);
  }
}

const askIs = (want) => document.querySelector("jiangtang-player")?.askState === want;

/** Waits until C's picture has the size `pred` wants; its size then, and how long it took. */
async function viewerSize(page, pred, what) {
  const t0 = Date.now();
  let last = null;
  while (Date.now() - t0 < timeout) {
    last = await player(page);
    if (last.width > 0 && pred(last)) break;
    await page.waitForTimeout(200);
  }
  const t1 = (await player(page)).t;
  await page.waitForTimeout(1000);
  const after = await player(page);
  return {
    width: last.width,
    height: last.height,
    matched: last.width > 0 && pred(last),
    ms: Date.now() - t0 - 1000,
    advancing: after.t > t1,
    state: after.state,
    mode: after.mode,
    what,
  };
}

/** The console's item of ask `id`. */
function consoleAsk(page, id) {
  return page.evaluate((id) => {
    const li = document.querySelector(`ul.ask-list li[data-ask-id="${id}"]`);
    if (!li) return null;
    const v = li.querySelector("video.ask-preview");
    const shown = (x) => !!x && getComputedStyle(x).display !== "none";
    return {
      className: li.className,
      state: li.querySelector(".badge")?.textContent ?? "",
      preview: v ? { width: v.videoWidth, height: v.videoHeight, t: v.currentTime, muted: v.muted, shown: shown(v), paused: v.paused } : null,
      broadcast: shown(li.querySelector("button.ask-broadcast")),
      offAir: shown(li.querySelector("button.ask-offair")),
      end: shown(li.querySelector("button.ask-end")),
      error: li.querySelector(".ask-error")?.textContent ?? "",
    };
  }, id);
}

async function waitConsole(page, id, pred, what) {
  const t0 = Date.now();
  let last = null;
  while (Date.now() - t0 < timeout) {
    last = await consoleAsk(page, id);
    if (pred(last)) return last;
    await page.waitForTimeout(200);
  }
  throw new Error(`${what}: not within ${timeout / 1000} s (console: ${JSON.stringify(last)})`);
}

/** The sound a media element plays, over `ms`: the loudest RMS of 50 ms windows, the
 *  average, and the strongest frequency when it was loudest. `which` finds the element in
 *  the page: "preview:ID" (the console's preview of ask ID) or "player" (the viewer's). */
function sound(page, which, ms) {
  return page.evaluate(
    async ({ which, ms }) => {
      const v = which === "player" ? document.querySelector("jiangtang-player").media : document.querySelector(`video.ask-preview[data-ask-id="${which.split(":")[1]}"]`);
      if (!v) return { error: `no element for ${which}` };
      let ctx;
      let an;
      if (v.srcObject) {
        if (!v.srcObject.getAudioTracks().length) return { error: "no audio track" };
        ctx = new AudioContext();
        await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 2000))]);
        an = ctx.createAnalyser();
        ctx.createMediaStreamSource(v.srcObject).connect(an);
      } else {
        // HLS: an element has one source node for its life; it keeps playing through it.
        if (!window.__elementMeter) {
          const c = new AudioContext();
          const a = c.createAnalyser();
          const src = c.createMediaElementSource(v);
          src.connect(a);
          src.connect(c.destination);
          window.__elementMeter = { c, a };
        }
        ctx = window.__elementMeter.c;
        an = window.__elementMeter.a;
        await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 2000))]);
      }
      an.fftSize = 2048;
      const buf = new Float32Array(an.fftSize);
      const bins = new Float32Array(an.frequencyBinCount);
      let max = 0;
      let min = Infinity;
      let sum = 0;
      let n = 0;
      let peakHz = 0;
      const end = performance.now() + ms;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 50));
        an.getFloatTimeDomainData(buf);
        let s = 0;
        for (const x of buf) s += x * x;
        const rms = Math.sqrt(s / buf.length);
        sum += rms;
        n++;
        if (rms < min) min = rms;
        if (rms > max) {
          max = rms;
          an.getFloatFrequencyData(bins);
          let best = 1;
          for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
          peakHz = (best * ctx.sampleRate) / an.fftSize;
        }
      }
      const context = ctx.state;
      const track = v.srcObject?.getAudioTracks()[0];
      const trackState = track ? { muted: track.muted, readyState: track.readyState, enabled: track.enabled } : null;
      if (v.srcObject) await ctx.close();
      return { rmsMax: max, rmsMin: n ? min : 0, rmsMean: n ? sum / n : 0, peakHz, samples: n, context, track: trackState };
    },
    { which, ms },
  );
}

const browser = await launch(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]);
try {
  // ---- C: a plain viewer, watching all along ---------------------------------------------
  const viewerCtx = await browser.newContext({ viewport: { width: 960, height: 640 } });
  const viewer = await viewerCtx.newPage();
  watch(viewer, "viewer");
  // WebRTC only: the player's own fallback (LL-HLS on the smallest picture after repeated
  // freezes, which a loaded test machine can cause) would hide what the relay sent.
  await viewer.goto(`${server}/play/${stream}?mode=webrtc`);
  await waitPlayer(viewer, () => {
    const e = document.querySelector("jiangtang-player");
    return e && e.state === "playing" && e.media.videoWidth > 0 && e.media.currentTime > 0.5;
  }, null, "the viewer plays the lecture");
  await viewer.evaluate(() => {
    document.querySelector("jiangtang-player").media.muted = false;
  });
  const before = await player(viewer);
  const lectureSize = { width: before.width, height: before.height };

  // ---- A: the sub-venue raises its hand -----------------------------------------------------
  const siteCtx = await browser.newContext({ viewport: { width: 1024, height: 700 } });
  const sitePage = await siteCtx.newPage();
  watch(sitePage, "site");
  await sitePage.exposeFunction("__askState", (d) => result.askStates.push({ at: Date.now(), ...d }));
  await sitePage.addInitScript(() => {
    document.addEventListener("askstate", (e) => window.__askState(e.detail));
  });
  // The relay's answer to the hand names its id: the console's button for it is that one.
  let handId = null;
  sitePage.on("websocket", (ws) =>
    ws.on("framereceived", (f) => {
      try {
        const m = JSON.parse(String(f.payload));
        if (m.type === "ack" && handId === null) handId = m.id;
      } catch {
        /* not JSON */
      }
    }),
  );
  await sitePage.goto(`${server}/play/${stream}?site=${encodeURIComponent(site)}`);
  await waitPlayer(sitePage, () => document.querySelector("jiangtang-player")?.state === "playing", null, "the site's player plays");
  await sitePage.click("jiangtang-player >> button.hand");
  const handAt = Date.now();
  while (handId === null && Date.now() - handAt < timeout) await sitePage.waitForTimeout(100);
  step("hand", { handId, player: await player(sitePage), lectureSize });

  // ---- B: the console accepts it ----------------------------------------------------------
  const adminCtx = await browser.newContext({ viewport: { width: 1100, height: 1200 } });
  if (process.env.ASK_COOKIE) {
    const [name, ...value] = process.env.ASK_COOKIE.split("=");
    await adminCtx.addCookies([{ name, value: value.join("="), url: consoleUrl }]);
  }
  const admin = await adminCtx.newPage();
  watch(admin, "console");
  if (!process.env.ASK_COOKIE) {
    await admin.goto(`${consoleUrl}/admin/login`);
    await admin.fill('input[name="name"]', env("ASK_OPERATOR"));
    await admin.fill('input[name="password"]', env("ASK_PASSWORD"));
    await Promise.all([admin.waitForURL(/\/admin$/, { timeout }), admin.click('button[type="submit"]')]);
  }
  await admin.goto(`${consoleUrl}/admin/lectures/${lecture}`);
  const acceptSel = handId !== null ? `button.ask-accept[data-question="${handId}"]` : "button.ask-accept";
  await admin.waitForSelector(acceptSel, { timeout });
  const acceptAt = Date.now();
  await admin.locator(acceptSel).last().click();
  await waitPlayer(sitePage, askIs, "invited", "the site is invited");
  const invited = await player(sitePage);
  const askId = invited.askId;
  await shot(sitePage, "ask-invited");
  const inConsole = await waitConsole(admin, askId, (x) => !!x, "the ask in the console");
  step("accept", { askId, ms: Date.now() - acceptAt, player: invited, console: inConsole });

  // ---- A: starts speaking ----------------------------------------------------------------
  const startAt = Date.now();
  await sitePage.click("jiangtang-player >> button.ask-start");
  await waitPlayer(sitePage, askIs, "publishing", "the site publishes");
  await sitePage.waitForFunction(() => document.querySelector("jiangtang-player").shadowRoot.querySelector("video.ask-self")?.videoWidth > 0, null, { timeout });
  const publishing = await player(sitePage);
  step("start", { ms: Date.now() - startAt, player: publishing });

  // ---- B: sees and hears it --------------------------------------------------------------
  const previewAt = Date.now();
  const playing = await waitConsole(admin, askId, (x) => x?.preview && x.preview.width > 0 && x.preview.t > 0.5, "the preview plays");
  await admin.waitForTimeout(1000);
  const later = await consoleAsk(admin, askId);
  // The operator unmutes the site (the preview starts muted: a page may not start sound by
  // itself), then its sound is measured.
  await admin.click(`ul.ask-list li[data-ask-id="${askId}"] button.ask-unmute`);
  const unmuted = await consoleAsk(admin, askId);
  const audio = await sound(admin, `preview:${askId}`, 3000);
  await shot(admin, "ask-console-connected");
  step("preview", {
    ms: Date.now() - previewAt,
    width: playing.preview.width,
    height: playing.preview.height,
    advancing: later.preview.t > playing.preview.t,
    mutedAfterClick: unmuted.preview.muted,
    audio,
    console: later,
  });

  // ---- B: broadcasts it ------------------------------------------------------------------
  const soundBefore = await sound(viewer, "player", 2000);
  let at = Date.now();
  await admin.click(`ul.ask-list li[data-ask-id="${askId}"] button.ask-broadcast`);
  await waitPlayer(sitePage, askIs, "on_air", "the site is on air");
  await sitePage.waitForFunction(() => {
    const b = document.querySelector("jiangtang-player").shadowRoot.querySelector(".ask-onair");
    return b && getComputedStyle(b).display !== "none";
  }, null, { timeout });
  const onAirPlayer = await player(sitePage);
  const onAirConsole = await waitConsole(admin, askId, (x) => x?.className.includes("ask-on_air"), "the console shows it on air");
  // The class's camera is 4:3, the hall's 16:9.
  const during = await viewerSize(viewer, (p) => p.width * 3 === p.height * 4, "the site's picture");
  const soundDuring = await sound(viewer, "player", 2000);
  await shot(sitePage, "ask-onair-site");
  await shot(viewer, "ask-onair-viewer");
  step("broadcast", { ms: Date.now() - at, player: onAirPlayer, console: onAirConsole, viewer: during, viewerSound: { before: soundBefore, during: soundDuring } });

  // ---- B: takes it off air ---------------------------------------------------------------
  at = Date.now();
  await admin.click(`ul.ask-list li[data-ask-id="${askId}"] button.ask-offair`);
  await waitPlayer(sitePage, askIs, "publishing", "the site is off air");
  const offPlayer = await player(sitePage);
  const offConsole = await waitConsole(admin, askId, (x) => x?.className.includes("ask-connected"), "the console shows it connected");
  const afterOff = await viewerSize(viewer, (p) => p.width === lectureSize.width && p.height === lectureSize.height, "the lecture's picture");
  const soundAfterOff = await sound(viewer, "player", 2000);
  step("off_air", { ms: Date.now() - at, player: offPlayer, console: offConsole, viewer: afterOff, viewerSound: soundAfterOff });

  // ---- B: on air again, then ends it while on air ------------------------------------------
  at = Date.now();
  await admin.click(`ul.ask-list li[data-ask-id="${askId}"] button.ask-broadcast`);
  await waitPlayer(sitePage, askIs, "on_air", "the site is on air again");
  const again = await viewerSize(viewer, (p) => p.width * 3 === p.height * 4, "the site's picture again");
  step("broadcast_again", { ms: Date.now() - at, player: await player(sitePage), viewer: again });

  at = Date.now();
  await admin.click(`ul.ask-list li[data-ask-id="${askId}"] button.ask-end`);
  await waitPlayer(sitePage, askIs, "ended", "the ask ends on the site");
  const endedPlayer = await player(sitePage);
  const endedConsole = await waitConsole(admin, askId, (x) => x === null || x.className.includes("ask-ended"), "the console shows it ended");
  const afterEnd = await viewerSize(viewer, (p) => p.width === lectureSize.width && p.height === lectureSize.height, "the lecture's picture after the end");
  const soundAfterEnd = await sound(viewer, "player", 2000);
  await shot(sitePage, "ask-ended-site");
  step("end", { ms: Date.now() - at, player: endedPlayer, console: endedConsole, viewer: afterEnd, viewerSound: soundAfterEnd });
} catch (e) {
  result.errors.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
