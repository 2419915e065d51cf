// Measures the dominant frequency of what a <jiangtang-player>'s media plays: evaluate
// ANALYSE in the page, call window.__analyse() once, then window.__peak() returns Hz.
export const ANALYSE = `
  window.__analyse = async () => {
    const el = document.querySelector("jiangtang-player");
    const v = el.media;
    v.muted = false;
    const ctx = new AudioContext();
    // Firefox creates it suspended until asked (Chromium runs it at once).
    await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 2000))]);
    const src = v.srcObject ? ctx.createMediaStreamSource(v.srcObject) : ctx.createMediaElementSource(v);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    src.connect(an);
    if (!v.srcObject) an.connect(ctx.destination);
    window.__peak = () => {
      const bins = new Float32Array(an.frequencyBinCount);
      an.getFloatFrequencyData(bins);
      let best = 1;
      for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
      return (best * ctx.sampleRate) / an.fftSize;
    };
  };
`;

// After a dialect switch, waits until the tone has moved away from `from` Hz and settled (three
// readings in a row, 300 ms apart, above 100 Hz and within 10 Hz of each other, so the silence
// or noise between renditions does not count) or `timeoutMs` has passed, and returns the last
// reading with how long it took. A loaded machine can take several seconds to fill the new
// rendition's buffer; the caller still checks that the tone is the one it asked for.
export async function toneAfterSwitch(page, from, timeoutMs = 15000) {
  const t0 = Date.now();
  let settled = 0;
  let last = from;
  let hz = from;
  while (Date.now() - t0 < timeoutMs) {
    await new Promise((r) => setTimeout(r, 300));
    hz = await page.evaluate(() => window.__peak());
    const steady = hz > 100 && Math.abs(hz - from) > 50 && Math.abs(hz - last) < 10;
    settled = steady ? settled + 1 : 0;
    last = hz;
    if (settled >= 2) break;
  }
  return { hz, ms: Date.now() - t0 };
}
