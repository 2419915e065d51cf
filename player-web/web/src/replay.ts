// Replays in the player: the lecture's recordings from the API, the replay engine (hls.js
// on the recording's VOD playlist, or its EVENT playlist while the lecture is still live,
// from the beginning), and the controls a replay needs and live does not: a seek bar with
// the time, the playback speed, the downloads, and the list of replays of a lecture that
// has several. Everything from the relay is set as text or as checked URLs, never as HTML.
import Hls, { ErrorTypes, Events } from "hls.js";
import { Engine, EngineOptions, LinkStats, Mode, nativeHls } from "./engines";
import { Texts } from "./i18n";

export interface RecordingDialect {
  lang: string;
  name: string;
  default: boolean;
  /** The MP4 download with this dialect (null while recording). */
  mp4: string | null;
}

/** A recording as `/api/v1/recordings` describes it. */
export interface Recording {
  id: string;
  lecture: string;
  title: string | null;
  state: "recording" | "complete" | "failed" | "recovered";
  started: string;
  ended: string | null;
  duration_s: number | null;
  dialects: RecordingDialect[];
  has_video: boolean;
  /** The HLS presentation: VOD once over, EVENT while recording. */
  hls: string;
  /** The MP4 download with every dialect (null while recording). */
  mp4: string | null;
  poster: string | null;
}

/** Playback speeds offered. */
export const SPEEDS = [1, 1.25, 1.5, 2];

/** Whether the recording is still being made (the lecture is live). */
export function isLive(r: Recording): boolean {
  return r.ended === null;
}

/** A relay path (`/replay/...`), checked, joined to the server. */
function url(server: string, path: string | null): string | null {
  if (!path || !/^\/(replay|api)\/[A-Za-z0-9._\-/]+(\?lang=[A-Za-z0-9-]+)?$/.test(path)) return null;
  return `${server}${path}`;
}

/** The lecture's recordings that can be played, newest first. */
export async function fetchRecordings(server: string, stream: string): Promise<Recording[]> {
  const r = await fetch(`${server}/api/v1/recordings?lecture=${encodeURIComponent(stream)}`, { cache: "no-store" });
  if (!r.ok) return [];
  const body = await r.json();
  const list: Recording[] = Array.isArray(body?.recordings) ? body.recordings : [];
  return list.filter((x) => typeof x.id === "string" && x.lecture === stream && (x.duration_s ?? 0) > 0).reverse();
}

/** One recording, by id. */
export async function fetchRecording(server: string, id: string): Promise<Recording | null> {
  const r = await fetch(`${server}/api/v1/recordings/${encodeURIComponent(id)}`, { cache: "no-store" });
  return r.ok ? ((await r.json()) as Recording) : null;
}

/** `h:mm:ss` or `m:ss`. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.floor(isFinite(seconds) ? seconds : 0));
  const two = (n: number) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/** A recording's date and length, as a list shows it. */
export function describe(r: Recording, locale: string): string {
  const when = new Date(r.started).toLocaleString(locale === "en" ? "en" : "zh-CN", { dateStyle: "medium", timeStyle: "short" });
  return `${when} · ${clock(r.duration_s ?? 0)}`;
}

/** A replay: hls.js on the recording's playlist from its beginning (the browser's own HLS
 *  where there is no Media Source Extensions). */
export class ReplayEngine implements Engine {
  readonly mode: Mode = "hls";
  hls: Hls | null = null;
  private retries = 0;
  private retryTimer = 0;
  private readonly url: string;

  constructor(private o: EngineOptions, readonly recording: Recording) {
    this.url = url(o.server, recording.hls) ?? `${o.server}/replay/${encodeURIComponent(recording.id)}/index.m3u8`;
  }

  async start(): Promise<void> {
    const v = this.o.video;
    v.addEventListener("playing", this.o.onPlaying);
    if (Hls.isSupported()) {
      this.attach(0);
    } else if (nativeHls(v)) {
      v.src = this.url;
      v.addEventListener("loadedmetadata", this.pickNativeTrack);
    } else {
      throw new Error("this browser cannot play HLS");
    }
  }

  private attach(at: number): void {
    const hls = new Hls({
      // From the beginning, even while the lecture is still live (an EVENT playlist).
      startPosition: at,
      lowLatencyMode: false,
      backBufferLength: 60,
    });
    this.hls = hls;
    hls.on(Events.MANIFEST_PARSED, () => {
      this.retries = 0;
      this.pickTrack();
    });
    hls.on(Events.AUDIO_TRACKS_UPDATED, () => this.pickTrack());
    hls.on(Events.ERROR, (_e, data) => {
      if (!data.fatal) return;
      if (data.type === ErrorTypes.MEDIA_ERROR && this.retries < 3) {
        this.retries++;
        hls.recoverMediaError();
        return;
      }
      this.o.onFailure(`replay ${data.details}`, false);
      this.retries++;
      const resume = this.o.video.currentTime;
      window.clearTimeout(this.retryTimer);
      this.retryTimer = window.setTimeout(() => {
        if (this.hls !== hls) return;
        hls.destroy();
        this.attach(resume);
      }, Math.min(1000 * this.retries, 8000));
    });
    hls.loadSource(this.url);
    hls.attachMedia(this.o.video);
  }

  private pickTrack(): void {
    const hls = this.hls;
    if (!hls || !this.o.lang) return;
    const i = hls.audioTracks.findIndex((t) => t.lang === this.o.lang);
    if (i >= 0 && hls.audioTrack !== i) hls.audioTrack = i;
  }

  private pickNativeTrack = (): void => {
    const tracks = (this.o.video as any).audioTracks;
    if (!tracks || !this.o.lang) return;
    for (let i = 0; i < tracks.length; i++) tracks[i].enabled = tracks[i].language === this.o.lang;
  };

  stop(): void {
    window.clearTimeout(this.retryTimer);
    const v = this.o.video;
    v.removeEventListener("playing", this.o.onPlaying);
    v.removeEventListener("loadedmetadata", this.pickNativeTrack);
    this.hls?.destroy();
    this.hls = null;
    v.removeAttribute("src");
    v.load();
  }

  async setDialect(lang: string): Promise<void> {
    this.o.lang = lang;
    if (this.hls) this.pickTrack();
    else this.pickNativeTrack();
  }

  async latency(): Promise<number | null> {
    return null;
  }

  /** A replay is not a live link: nothing to report. */
  async link(): Promise<LinkStats> {
    return {};
  }
}

/** What the replay controls ask of the player. */
export interface ReplayHost {
  video: HTMLVideoElement;
  texts: Texts;
  /** Stop the replay and go back to the live lecture. */
  backToLive(): void;
  /** Stop the replay and show the list again. */
  backToList(): void;
}

/** The controls of a replay: seek bar, time, speed, downloads, and the way back. */
export class ReplayControls {
  readonly root: HTMLElement;
  private seek: HTMLInputElement;
  private time: HTMLElement;
  private speed: HTMLSelectElement;
  private downloads: HTMLElement;
  private live: HTMLButtonElement;
  private list: HTMLButtonElement;
  private dragging = false;

  constructor(private host: ReplayHost, private server: string) {
    const t = host.texts;
    this.root = document.createElement("div");
    this.root.className = "replay-bar";
    this.root.hidden = true;
    this.seek = document.createElement("input");
    this.seek.type = "range";
    this.seek.className = "seek";
    this.seek.min = "0";
    this.seek.max = "0";
    this.seek.step = "0.1";
    this.seek.value = "0";
    this.seek.setAttribute("aria-label", t.seek);
    this.seek.addEventListener("input", () => {
      this.dragging = true;
      this.showTime(Number(this.seek.value));
    });
    this.seek.addEventListener("change", () => {
      this.dragging = false;
      host.video.currentTime = Number(this.seek.value);
    });
    this.time = document.createElement("span");
    this.time.className = "time";
    const sl = document.createElement("label");
    const slt = document.createElement("span");
    slt.className = "lbl";
    slt.textContent = t.speed;
    this.speed = document.createElement("select");
    this.speed.className = "speed";
    this.speed.setAttribute("aria-label", t.speed);
    for (const s of SPEEDS) {
      const o = document.createElement("option");
      o.value = String(s);
      o.textContent = `${s}×`;
      this.speed.appendChild(o);
    }
    this.speed.addEventListener("change", () => this.setSpeed(Number(this.speed.value)));
    sl.append(slt, this.speed);
    this.downloads = document.createElement("details");
    this.downloads.className = "downloads";
    this.live = document.createElement("button");
    this.live.className = "back-live";
    this.live.textContent = t.backToLive;
    this.live.addEventListener("click", () => host.backToLive());
    this.list = document.createElement("button");
    this.list.className = "back-list";
    this.list.textContent = t.backToList;
    this.list.addEventListener("click", () => host.backToList());
    this.root.append(this.seek, this.time, sl, this.downloads, this.live, this.list);
    const v = host.video;
    for (const e of ["timeupdate", "durationchange", "loadedmetadata", "seeked"]) {
      v.addEventListener(e, () => this.update());
    }
    // A new source resets the rate: keep the chosen one.
    v.addEventListener("loadstart", () => {
      v.playbackRate = Number(this.speed.value);
    });
  }

  /** Shows the controls for `rec`: `live` while its lecture is still live (no downloads
   *  yet, a way back to live), `several` when there is a list to go back to. */
  show(rec: Recording, live: boolean, several: boolean): void {
    const t = this.host.texts;
    this.root.hidden = false;
    this.live.hidden = !live;
    this.list.hidden = live || !several;
    this.downloads.replaceChildren();
    this.downloads.hidden = !rec.mp4;
    if (rec.mp4) {
      const summary = document.createElement("summary");
      summary.textContent = t.download;
      this.downloads.appendChild(summary);
      const links: [string, string | null][] = [[t.allDialects, rec.mp4], ...rec.dialects.map((d): [string, string | null] => [d.name || d.lang, d.mp4])];
      for (const [label, path] of links) {
        const href = url(this.server, path);
        if (!href) continue;
        const a = document.createElement("a");
        a.href = href;
        a.setAttribute("download", "");
        a.textContent = label;
        this.downloads.appendChild(a);
      }
    }
    this.update();
  }

  /** The lecture ended while its recording was watched from the beginning. */
  liveEnded(): void {
    this.live.hidden = true;
  }

  hide(): void {
    this.root.hidden = true;
    this.setSpeed(1);
  }

  setSpeed(rate: number): void {
    if (!SPEEDS.includes(rate)) return;
    this.speed.value = String(rate);
    this.host.video.defaultPlaybackRate = rate;
    this.host.video.playbackRate = rate;
  }

  private update(): void {
    const v = this.host.video;
    const d = isFinite(v.duration) ? v.duration : 0;
    this.seek.max = String(d);
    if (!this.dragging) {
      this.seek.value = String(v.currentTime);
      this.showTime(v.currentTime);
    }
  }

  private showTime(at: number): void {
    const v = this.host.video;
    this.time.textContent = `${clock(at)} / ${clock(isFinite(v.duration) ? v.duration : 0)}`;
  }
}

/** The replays offered where a lecture is not live: one button for one, a list (with
 *  posters) for several. */
export function replayPicker(recordings: Recording[], server: string, t: Texts, locale: string, pick: (r: Recording) => void): HTMLElement {
  const box = document.createElement("div");
  box.className = "replays";
  if (recordings.length === 1) {
    const r = recordings[0];
    const b = document.createElement("button");
    b.className = "replay-pick";
    b.textContent = `${t.watchReplay} · ${clock(r.duration_s ?? 0)}`;
    b.addEventListener("click", () => pick(r));
    box.appendChild(b);
    return box;
  }
  const h = document.createElement("div");
  h.className = "replays-title";
  h.textContent = t.replays;
  box.appendChild(h);
  for (const r of recordings) {
    const b = document.createElement("button");
    b.className = "replay-item";
    b.dataset.id = r.id;
    const poster = url(server, r.poster);
    if (poster) {
      const img = document.createElement("img");
      img.src = poster;
      img.alt = "";
      img.loading = "lazy";
      b.appendChild(img);
    }
    const text = document.createElement("span");
    const title = document.createElement("strong");
    title.textContent = r.title ?? r.lecture;
    const when = document.createElement("span");
    when.textContent = describe(r, locale);
    text.append(title, when);
    b.appendChild(text);
    b.addEventListener("click", () => pick(r));
    box.appendChild(b);
  }
  return box;
}

/** The poster URL of a recording, checked. */
export function posterOf(server: string, r: Recording): string | null {
  return url(server, r.poster);
}
