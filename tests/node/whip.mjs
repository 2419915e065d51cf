// Publishes over WHIP from Debian's headless Chromium (fake capture devices) and reports JSON.
//   node whip.mjs publish SERVER STREAM KEY SECONDS
//       camera and microphone (Chromium's fake devices) as the lecture's source
//   node whip.mjs publish-until-closed SERVER STREAM KEY SECONDS
//       the same, until the relay ends the session (the connection leaves "connected") or
//       SECONDS pass; reports the state it ended in
//   node whip.mjs interpret SERVER STREAM LANG KEY SECONDS WAV SHOTS
//       the /interpret/STREAM page with WAV as the microphone: start, mute, unmute, stop
import { launch } from "./browser.mjs";

const [scenario, server, stream, ...rest] = process.argv.slice(2);
const result = { errors: [] };

if (scenario === "publish" || scenario === "publish-until-closed") {
  const [key, seconds] = rest;
  const untilClosed = scenario === "publish-until-closed";
  const browser = await launch(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]);
  try {
    const page = await browser.newPage();
    page.on("pageerror", (e) => result.errors.push(String(e)));
    // A page of the relay's origin: getUserMedia needs a secure context (localhost is one).
    await page.goto(`${server}/healthz`);
    Object.assign(
      result,
      await page.evaluate(
        async ({ server, stream, key, seconds, untilClosed }) => {
          const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: true });
          const pc = new RTCPeerConnection();
          for (const t of media.getTracks()) pc.addTransceiver(t, { direction: "sendonly" });
          await pc.setLocalDescription(await pc.createOffer());
          const headers = { "Content-Type": "application/sdp" };
          if (key) headers.Authorization = `Bearer ${key}`;
          const resp = await fetch(`${server}/whip/${stream}`, { method: "POST", headers, body: pc.localDescription.sdp });
          const out = { status: resp.status, location: resp.headers.get("Location"), etag: resp.headers.get("ETag") };
          const answer = await resp.text();
          if (resp.status !== 201) return { ...out, body: answer };
          await pc.setRemoteDescription({ type: "answer", sdp: answer });
          if (untilClosed) {
            const end = Date.now() + Number(seconds) * 1000;
            while (Date.now() < end && pc.connectionState !== "connected") await new Promise((r) => setTimeout(r, 100));
            out.connected = pc.connectionState === "connected";
            while (Date.now() < end && pc.connectionState === "connected") await new Promise((r) => setTimeout(r, 100));
            out.state = pc.connectionState;
            pc.close();
            return out;
          }
          await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
          out.state = pc.connectionState;
          out.outbound = [];
          (await pc.getStats()).forEach((x) => {
            if (x.type === "outbound-rtp") out.outbound.push({ kind: x.kind, packets: x.packetsSent, keyFrames: x.keyFramesEncoded, encoder: x.encoderImplementation, pli: x.pliCount });
          });
          out.deleteStatus = (await fetch(`${server}${out.location}`, { method: "DELETE" })).status;
          pc.close();
          return out;
        },
        { server, stream, key, seconds, untilClosed },
      ),
    );
  } catch (e) {
    result.errors.push(String(e));
  } finally {
    await browser.close();
  }
} else if (scenario === "interpret") {
  const [lang, key, seconds, wav, shots] = rest;
  const browser = await launch([
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}`,
  ]);
  try {
    const page = await browser.newPage({ viewport: { width: 960, height: 800 } });
    page.on("pageerror", (e) => result.errors.push(String(e)));
    const states = [];
    await page.exposeFunction("__state", (s) => states.push(s));
    await page.addInitScript(() => {
      document.addEventListener("statechange", (e) => {
        if (e.target.tagName === "JIANGTANG-INTERPRETER") window.__state(e.detail);
      });
    });
    await page.goto(`${server}/interpret/${stream}?lang=${lang}&ui=en`);
    const el = "jiangtang-interpreter";
    await page.waitForFunction((lang) => document.querySelector("jiangtang-interpreter")?.shadowRoot.querySelector("select.dialect")?.value === lang, lang, { timeout: 10000 });
    result.dialects = await page.evaluate(() => [...document.querySelector("jiangtang-interpreter").shadowRoot.querySelectorAll("select.dialect option")].map((o) => o.textContent));
    if (key) await page.fill(`${el} >> input.key`, key);
    await page.click(`${el} >> button.start`);
    await page.waitForFunction(() => document.querySelector("jiangtang-interpreter").state === "live", null, { timeout: 20000 });
    await page.waitForTimeout(1500);
    result.levelLive = await page.evaluate(() => document.querySelector("jiangtang-interpreter").level);
    await page.screenshot({ path: `${shots}/interpreter-live.png` });
    const half = (Number(seconds) * 1000) / 2;
    await page.waitForTimeout(half);
    await page.click(`${el} >> button.mute`);
    await page.waitForTimeout(1000);
    result.stateMuted = await page.evaluate(() => document.querySelector("jiangtang-interpreter").state);
    result.levelMuted = await page.evaluate(() => document.querySelector("jiangtang-interpreter").level);
    await page.screenshot({ path: `${shots}/interpreter-muted.png` });
    await page.click(`${el} >> button.mute`);
    await page.waitForTimeout(half);
    result.stateEnd = await page.evaluate(() => document.querySelector("jiangtang-interpreter").state);
    await page.click(`${el} >> button.start`);
    await page.waitForTimeout(500);
    result.stateStopped = await page.evaluate(() => document.querySelector("jiangtang-interpreter").state);
    result.states = states;
  } catch (e) {
    result.errors.push(String(e));
  } finally {
    await browser.close();
  }
}
console.log(JSON.stringify(result));
