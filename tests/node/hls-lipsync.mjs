// Measures lip sync of LL-HLS playback (hls.js) with the same method as whep-lipsync.mjs,
// as the reference: HLS timestamps are exact, so this measures the method's own offset.
//   node hls-lipsync.mjs SERVER STREAM SECONDS
import { launch } from "./browser.mjs";
const [server, stream, seconds] = process.argv.slice(2);
const browser = await launch();
const page = await browser.newPage();
await page.goto(`${server}/healthz`);
await page.evaluate((stream) => {
  document.body.innerHTML = `<video autoplay muted playsinline data-jiangtang-hls="/hls/${stream}/index.m3u8"></video><span id="status"></span>`;
  const s = document.createElement("script"); s.src = "/player.js"; document.body.appendChild(s);
}, stream);
await page.waitForFunction(() => document.querySelector("video")?.currentTime > 1, null, { timeout: 30000 });
const r = await page.evaluate(async (seconds) => {
  const v = document.querySelector("video");
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
}, Number(seconds));
console.log(JSON.stringify({ errors: [], ...r }));
await browser.close();
