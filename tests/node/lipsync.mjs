// Measures lip sync in headless Chromium, first of LL-HLS playback in the web player (the
// reference: HLS timestamps are exact, so it shows the measuring method's own offset), then
// of a WHEP session, in the same browser so both share its audio output path. The publisher
// sends a white video frame and a 40 ms 1 kHz beep at the start of every second; we time when
// each flash is displayed (requestVideoFrameCallback) and when each beep reaches the audio
// graph (an AudioWorklet), both on the performance.now() clock, and report beep minus flash
// in ms for each:
//   node lipsync.mjs SERVER STREAM HLS_SECONDS WEBRTC_SECONDS
import { launch } from "./browser.mjs";

const [server, stream, hlsSeconds, seconds] = process.argv.slice(2);
const browser = await launch();
const result = { errors: [], hls: {}, webrtc: {} };

async function measureHls() {
  const page = await browser.newPage({ bypassCSP: true });
  await page.goto(`${server}/play/${stream}?mode=hls&muted=1`);
  await page.waitForFunction(() => document.querySelector("jiangtang-player")?.media.currentTime > 1, null, { timeout: 30000 });
  const r = await page.evaluate(async (seconds) => {
    const v = document.querySelector("jiangtang-player").media;
    v.muted = false;
    const ctx = new AudioContext();
    const worklet = `class Onset extends AudioWorkletProcessor { constructor(){super();this.loud=false} process(inputs){const ch=inputs[0][0]; if(ch){let e=0; for(const x of ch) e+=x*x; const loud=e/ch.length>0.01; if(loud&&!this.loud) this.port.postMessage(currentTime); this.loud=loud;} return true;} } registerProcessor("onset", Onset);`;
    await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: "text/javascript" })));
    const beeps = [];
    const onset = new AudioWorkletNode(ctx, "onset");
    onset.port.onmessage = (e) => { const ts = ctx.getOutputTimestamp(); beeps.push(ts.performanceTime + (e.data - ts.contextTime) * 1000); };
    const src = ctx.createMediaElementSource(v); src.connect(onset); src.connect(ctx.destination);
    const flashes = []; const canvas = document.createElement("canvas"); canvas.width=16; canvas.height=9; const c2d = canvas.getContext("2d",{willReadFrequently:true}); let bright=false;
    const onFrame = (now, meta) => { c2d.drawImage(v,0,0,16,9); const d=c2d.getImageData(0,0,16,9).data; let s=0; for(let i=0;i<d.length;i+=4) s+=d[i]; const b=s/(d.length/4)>128; if(b&&!bright) flashes.push(meta.expectedDisplayTime ?? now); bright=b; v.requestVideoFrameCallback(onFrame); };
    v.requestVideoFrameCallback(onFrame);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const offsets = []; for (const f of flashes.slice(2)) { let best=null; for (const b of beeps) if (best===null||Math.abs(b-f)<Math.abs(best-f)) best=b; if (best!==null && Math.abs(best-f)<500) offsets.push(Math.round(best-f)); }
    return { offsets, baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency };
  }, Number(hlsSeconds));
  await page.close();
  return r;
}

async function measureWhep() {
  const out = {};
  const page = await browser.newPage();
  page.on("pageerror", (e) => result.errors.push(String(e)));
  // AudioWorklet needs a secure context: a page of the relay's own (loopback) origin is one.
  await page.goto(`${server}/healthz`);
  await page.evaluate(() => {
    document.body.innerHTML = `<video id="v" autoplay playsinline muted></video>`;
  });
  Object.assign(
    out,
    await page.evaluate(
      async ({ server, stream, seconds }) => {
        const pc = new RTCPeerConnection();
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.addTransceiver("audio", { direction: "recvonly" });
        const v = document.getElementById("v");
        const ms = new MediaStream();
        const ctx = new AudioContext();
        const worklet = `
          class Onset extends AudioWorkletProcessor {
            constructor() { super(); this.loud = false; }
            process(inputs) {
              const ch = inputs[0][0];
              if (ch) {
                let e = 0;
                for (const x of ch) e += x * x;
                const loud = e / ch.length > 0.01;
                if (loud && !this.loud) this.port.postMessage(currentTime);
                this.loud = loud;
              }
              return true;
            }
          }
          registerProcessor("onset", Onset);`;
        await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: "text/javascript" })));
        const beeps = [];
        const onset = new AudioWorkletNode(ctx, "onset");
        onset.port.onmessage = (e) => {
          // Context time of the block -> performance time, via the latest output timestamp.
          const ts = ctx.getOutputTimestamp();
          beeps.push(ts.performanceTime + (e.data - ts.contextTime) * 1000);
        };
        pc.ontrack = (e) => {
          ms.addTrack(e.track);
          v.srcObject = ms;
          if (e.track.kind === "audio") {
            const src = ctx.createMediaStreamSource(new MediaStream([e.track]));
            src.connect(onset);
            // Chromium only pulls remote WebRTC audio that is played somewhere.
            const a = new Audio();
            a.muted = true;
            a.srcObject = new MediaStream([e.track]);
            a.play();
          }
        };
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        const resp = await fetch(`${server}/whep/${stream}`, {
          method: "POST",
          headers: { "Content-Type": "application/sdp" },
          body: pc.localDescription.sdp,
        });
        await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
        const flashes = [];
        const canvas = document.createElement("canvas");
        canvas.width = 16;
        canvas.height = 9;
        const c2d = canvas.getContext("2d", { willReadFrequently: true });
        let bright = false;
        const onFrame = (now, meta) => {
          c2d.drawImage(v, 0, 0, 16, 9);
          const d = c2d.getImageData(0, 0, 16, 9).data;
          let sum = 0;
          for (let i = 0; i < d.length; i += 4) sum += d[i];
          const b = sum / (d.length / 4) > 128;
          if (b && !bright) flashes.push(meta.expectedDisplayTime ?? now);
          bright = b;
          v.requestVideoFrameCallback(onFrame);
        };
        v.requestVideoFrameCallback(onFrame);
        await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
        // Pair each flash with the nearest beep.
        const offsets = [];
        for (const f of flashes.slice(2)) {
          let best = null;
          for (const b of beeps) if (best === null || Math.abs(b - f) < Math.abs(best - f)) best = b;
          if (best !== null && Math.abs(best - f) < 500) offsets.push(best - f);
        }
        pc.close();
        return { flashes: flashes.length, beeps: beeps.length, offsets };
      },
      { server, stream, seconds },
    ),
  );
  await page.close();
  return out;
}

try {
  result.hls = await measureHls();
  result.webrtc = await measureWhep();
} catch (e) {
  result.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
