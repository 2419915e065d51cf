// The player over HTTPS in headless Chromium, trusting the test's certificate by its public
// key hash (no certificate errors ignored otherwise), and reports JSON:
//   node https.mjs BASE STREAM SPKI_HASH
// - /play/STREAM over https: secure context, HSTS on the page, playing over LL-HLS;
// - the live channel: a WebSocket to wss://.../ws/STREAM that receives frames;
// - WHEP signalling from the secure page: an offer POSTed to /whep/STREAM gets an answer;
// - WHIP from the secure page: the camera and microphone (Chromium's fake devices) offered
//   to /whip/STREAM-whip get an answer, and the session is deleted.
import { launch } from "./browser.mjs";

const [base, stream, spki] = process.argv.slice(2);
const browser = await launch([
  `--ignore-certificate-errors-spki-list=${spki}`,
  "--use-fake-device-for-media-stream",
  "--use-fake-ui-for-media-stream",
]);
const result = { errors: [], sockets: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  page.on("websocket", (ws) => {
    const s = { url: ws.url(), frames: 0, closed: false };
    result.sockets.push(s);
    ws.on("framereceived", () => s.frames++);
    ws.on("close", () => (s.closed = true));
  });
  const resp = await page.goto(`${base}/play/${stream}?mode=hls&muted=1`);
  result.status = resp.status();
  result.hsts = (await resp.allHeaders())["strict-transport-security"] ?? null;
  await page.waitForFunction(() => {
    const e = document.querySelector("jiangtang-player");
    return e && e.state === "playing" && e.media.currentTime > 0.5;
  }, null, { timeout: 40000 });
  // Let the channel exchange a few messages.
  await page.waitForTimeout(3000);
  result.page = await page.evaluate(() => ({
    secure: window.isSecureContext,
    protocol: location.protocol,
    state: document.querySelector("jiangtang-player").state,
    mode: document.querySelector("jiangtang-player").mode,
    t: document.querySelector("jiangtang-player").media.currentTime,
  }));
  result.whep = await page.evaluate(async (stream) => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(`/whep/${stream}`, {
      method: "POST",
      headers: { "content-type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    const text = await r.text();
    let applied = false;
    if (r.status === 201) {
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      applied = true;
    }
    pc.close();
    return { status: r.status, answer: text.startsWith("v=0"), applied };
  }, stream);
  result.whip = await page.evaluate(async (stream) => {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 180 }, audio: true });
    const pc = new RTCPeerConnection();
    for (const t of media.getTracks()) pc.addTransceiver(t, { direction: "sendonly" });
    await pc.setLocalDescription(await pc.createOffer());
    const r = await fetch(`/whip/${stream}-whip`, {
      method: "POST",
      headers: { "content-type": "application/sdp" },
      body: pc.localDescription.sdp,
    });
    const text = await r.text();
    const out = { status: r.status, location: r.headers.get("Location") };
    if (r.status === 201) {
      await pc.setRemoteDescription({ type: "answer", sdp: text });
      out.applied = true;
      out.deleteStatus = (await fetch(out.location, { method: "DELETE" })).status;
    }
    pc.close();
    media.getTracks().forEach((t) => t.stop());
    return out;
  }, stream);
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
