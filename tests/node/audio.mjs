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
