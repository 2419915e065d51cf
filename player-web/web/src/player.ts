// The /play page's player: hls.js with Low-Latency HLS where MSE exists, the browser's own
// HLS (Safari, iOS) elsewhere, a dialect picker fed from the audio renditions, and
// self-recovery from network and media errors. The full embeddable player builds on this.
import Hls, { ErrorTypes, Events } from "hls.js";

declare global {
  interface Window {
    jiangtangHls?: Hls;
  }
}

function setup(video: HTMLVideoElement): void {
  const url = video.dataset.jiangtangHls;
  if (!url) return;
  const picker = document.getElementById(video.dataset.jiangtangPicker ?? "") as HTMLSelectElement | null;
  const status = document.getElementById(video.dataset.jiangtangStatus ?? "");
  const say = (text: string) => {
    if (status) status.textContent = text;
  };

  if (Hls.isSupported()) {
    const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30 });
    window.jiangtangHls = hls;
    const fillPicker = () => {
      if (!picker) return;
      picker.replaceChildren();
      hls.audioTracks.forEach((t, i) => {
        const o = document.createElement("option");
        o.value = String(i);
        // textContent, never innerHTML: names come from configuration and publishers.
        o.textContent = t.name || t.lang || `#${i + 1}`;
        picker.appendChild(o);
      });
      picker.value = String(hls.audioTrack);
    };
    hls.on(Events.AUDIO_TRACKS_UPDATED, fillPicker);
    hls.on(Events.AUDIO_TRACK_SWITCHED, () => {
      if (picker) picker.value = String(hls.audioTrack);
    });
    picker?.addEventListener("change", () => {
      hls.audioTrack = Number(picker.value);
    });
    hls.on(Events.FRAG_BUFFERED, () => say("直播中 live"));
    let retry = 0;
    hls.on(Events.ERROR, (_e, data) => {
      if (!data.fatal) return;
      retry += 1;
      say("重新连接… reconnecting…");
      if (data.type === ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      } else {
        window.setTimeout(() => hls.loadSource(url), Math.min(1000 * retry, 5000));
      }
    });
    hls.on(Events.FRAG_LOADED, () => {
      retry = 0;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    const tracks = (video as unknown as { audioTracks?: { length: number; [i: number]: { label: string; language: string; enabled: boolean } } }).audioTracks;
    if (picker && tracks) {
      const fill = () => {
        picker.replaceChildren();
        for (let i = 0; i < tracks.length; i++) {
          const o = document.createElement("option");
          o.value = String(i);
          o.textContent = tracks[i].label || tracks[i].language;
          picker.appendChild(o);
          if (tracks[i].enabled) picker.value = String(i);
        }
      };
      video.addEventListener("loadedmetadata", fill);
      picker.addEventListener("change", () => {
        for (let i = 0; i < tracks.length; i++) tracks[i].enabled = String(i) === picker.value;
      });
    }
    video.addEventListener("playing", () => say("直播中 live"));
  } else {
    say("this browser cannot play HLS");
    return;
  }
  video.play().catch(() => say("点击播放 click to play"));
}

document.querySelectorAll<HTMLVideoElement>("video[data-jiangtang-hls]").forEach(setup);
