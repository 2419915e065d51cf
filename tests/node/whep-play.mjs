// Watches a lecture over WHEP in headless Chromium (BROWSER=firefox: Firefox ESR), from a
// page of another origin (about:blank, so CORS is exercised), and reports JSON:
//   node whep-play.mjs SERVER STREAM LANG SWITCH_TO SECONDS SCREENSHOT_DIR
// - offerH264 / answerVideo: whether the browser offered H.264, whether the answer has video
// - connect: ICE connected -> first video frame decoded (ms)
// - the dominant audio frequency before and after POSTing a dialect switch, and how long
//   after the request the new tone was heard
// - framesDecoded / currentTime over time
import { launch } from "./browser.mjs";
import { launchFirefox } from "./firefox.mjs";

const [server, stream, lang, switchTo, seconds, shots] = process.argv.slice(2);
const firefox = process.env.BROWSER === "firefox";
const browser = firefox ? await launchFirefox() : await launch();
const result = { errors: [] };
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.setContent(`<video id="v" autoplay playsinline muted style="width:640px"></video><audio id="a" autoplay></audio>`);
  const r = await page.evaluate(
    async ({ server, stream, lang, switchTo, seconds }) => {
      const out = { samples: [] };
      const t0 = performance.now();
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      const ms = new MediaStream();
      const v = document.getElementById("v");
      const a = document.getElementById("a");
      pc.ontrack = (e) => {
        ms.addTrack(e.track);
        v.srcObject = ms;
        if (e.track.kind === "audio") a.srcObject = new MediaStream([e.track]);
      };
      let connectedAt = null;
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected" && connectedAt === null) connectedAt = performance.now();
      };
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      out.offerH264 = /^a=rtpmap:\d+ H264\/90000/m.test(pc.localDescription.sdp);
      const resp = await fetch(`${server}/whep/${stream}?lang=${lang}`, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
      });
      out.status = resp.status;
      out.location = resp.headers.get("Location");
      out.etag = resp.headers.get("ETag");
      const answer = await resp.text();
      if (resp.status !== 201) {
        out.body = answer;
        return out;
      }
      out.answerVideo = /^m=video [1-9]/m.test(answer);
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      const stats = async () => {
        const s = { video: {}, audio: {} };
        (await pc.getStats()).forEach((x) => {
          if (x.type === "inbound-rtp") Object.assign(x.kind === "video" ? s.video : s.audio, x);
        });
        return s;
      };
      // First decoded frame (of a picture the answer accepted).
      let firstDecodedAt = null;
      for (let i = 0; i < 400 && firstDecodedAt === null && out.answerVideo; i++) {
        const s = await stats();
        if ((s.video.framesDecoded ?? 0) > 0) firstDecodedAt = performance.now();
        else await new Promise((r) => setTimeout(r, 10));
      }
      // Sound only: wait for ICE instead (up to 10 s, past the player's 6 s timeout).
      for (let i = 0; i < 1000 && connectedAt === null && !out.answerVideo; i++) await new Promise((r) => setTimeout(r, 10));
      out.connectMs = connectedAt === null ? null : connectedAt - t0;
      out.firstFrameAfterConnectMs = firstDecodedAt && connectedAt ? firstDecodedAt - connectedAt : null;
      // Audio analysis.
      const ctx = new AudioContext();
      // Firefox creates it suspended until asked (Chromium runs it at once).
      await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 2000))]);
      const src = ctx.createMediaStreamSource(new MediaStream(ms.getAudioTracks()));
      // A fine analyser for the pitch, and a short one (43 ms window at 48 kHz, 23 Hz bins:
      // enough to tell 440 from 660 Hz) to notice a switch without adding much delay.
      const fine = ctx.createAnalyser();
      fine.fftSize = 8192;
      const quick = ctx.createAnalyser();
      quick.fftSize = 2048;
      src.connect(fine);
      src.connect(quick);
      const peakOf = (an) => {
        const bins = new Float32Array(an.frequencyBinCount);
        an.getFloatFrequencyData(bins);
        let best = 1;
        for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
        return (best * ctx.sampleRate) / an.fftSize;
      };
      const peak = () => peakOf(fine);
      await new Promise((r) => setTimeout(r, 1500));
      out.hzBefore = peak();
      if (switchTo) {
        const before = out.hzBefore;
        const asked = performance.now();
        const sw = await fetch(`${server}${out.location}/dialect`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ lang: switchTo }),
        });
        out.switchStatus = sw.status;
        // Poll the analyser until the tone moves away from the old one and settles.
        let heardAt = null;
        for (let i = 0; i < 300; i++) {
          const hz = peakOf(quick);
          if (Math.abs(hz - before) > 100) {
            heardAt = performance.now();
            break;
          }
          await new Promise((r) => setTimeout(r, 5));
        }
        out.switchHeardMs = heardAt === null ? null : heardAt - asked;
        await new Promise((r) => setTimeout(r, 1000));
        out.hzAfter = peak();
        const api = await (await fetch(`${server}/api/v1/streams/${stream}`)).json();
        out.viewers = api.webrtc_viewers;
      }
      const end = performance.now() + Number(seconds) * 1000;
      while (performance.now() < end) {
        const s = await stats();
        out.samples.push({
          t: (performance.now() - t0) / 1000,
          framesDecoded: s.video.framesDecoded ?? 0,
          audioPackets: s.audio.packetsReceived ?? 0,
          currentTime: v.currentTime,
          state: pc.connectionState,
          // Audio minus video playout position on the sender's clock (RTCP SR mapping):
          // how far apart the two are played.
          avSyncMs:
            s.audio.estimatedPlayoutTimestamp && s.video.estimatedPlayoutTimestamp
              ? s.audio.estimatedPlayoutTimestamp - s.video.estimatedPlayoutTimestamp
              : null,
        });
        await new Promise((r) => setTimeout(r, 500));
      }
      out.hzEnd = peak();
      const s = await stats();
      out.video = {
        framesDecoded: s.video.framesDecoded,
        packetsLost: s.video.packetsLost,
        nackCount: s.video.nackCount,
        pliCount: s.video.pliCount,
        retransmittedPacketsReceived: s.video.retransmittedPacketsReceived,
        keyFramesDecoded: s.video.keyFramesDecoded,
        freezeCount: s.video.freezeCount,
        totalFreezesDuration: s.video.totalFreezesDuration,
        frameWidth: s.video.frameWidth,
        jitterBufferDelay: s.video.jitterBufferEmittedCount ? s.video.jitterBufferDelay / s.video.jitterBufferEmittedCount : null,
      };
      out.audio = { packetsReceived: s.audio.packetsReceived, packetsLost: s.audio.packetsLost };
      // End the session the WHEP way.
      const del = await fetch(`${server}${out.location}`, { method: "DELETE" });
      out.deleteStatus = del.status;
      pc.close();
      return out;
    },
    { server, stream, lang, switchTo, seconds },
  );
  Object.assign(result, r);
  await page.screenshot({ path: `${shots}/whep-playing${firefox ? "-firefox" : ""}.png` });
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
