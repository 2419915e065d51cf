// <jiangtang-player server="https://relay.example" stream="xihe" lang="yue" mode="auto"
//                   autoplay muted ui="zh"></jiangtang-player>
//
// WebRTC (WHEP) first for low latency, LL-HLS when WebRTC is missing, refused or blocked,
// audio only on request. Lecture state comes from the live channel (WebSocket): a countdown
// before the start, "reconnecting" while the lecture hall's stream is away, "ended" at the end.
// While no channel is open (the relay refused one, or the network dropped it) the player polls
// the same state from the API and keeps trying the channel.
// After the lecture (or at any time, from its list) the player plays its recordings: a
// replay with a seek bar, speeds and downloads; while live, "watch from the beginning"
// plays the recording so far and catches up, with a way back to live (replay.ts).
// A sub-venue whose raised hand the main hall accepted is invited to ask back: its camera
// and microphone go to the main hall over WHIP once the class clicks (ask.ts).
// Everything shown from the relay (titles, dialect names) is set as text, never as HTML.
import { AskBack, AskState } from "./ask";
import { AudioEngine, DeniedError, Engine, EngineOptions, HlsEngine, Mode, NoPictureError, WhepEngine, webrtcAvailable } from "./engines";
import { Locale, Texts, texts } from "./i18n";
import { Recording, ReplayControls, ReplayEngine, fetchRecording, fetchRecordings, isLive, posterOf, replayPicker } from "./replay";

export type PlayerState = "loading" | "scheduled" | "idle" | "connecting" | "playing" | "reconnecting" | "ended" | "unsupported" | "denied";
type ModePref = Mode | "auto";

interface Dialect {
  lang: string;
  name: string;
  default: boolean;
}

interface LectureState {
  status: "starting" | "live" | "reconnecting" | "ended" | "scheduled" | "idle";
  title: string | null;
  starts_at: string | null;
  /** The programme's next lecture on this stream, when there is one. */
  next?: { title: string | null; starts_at: string | null } | null;
  dialects: Dialect[];
  has_video: boolean;
  /** The relay offers a smaller picture for weak links (its ladder). */
  small_picture?: boolean;
}

const STORAGE_KEY = "jiangtang.dialect";
/** How often the lecture state is polled while no live channel is open (plus up to 1 s, so
 *  many players refused at once do not poll in step). */
const POLL_MS = 4000;
/** How often the lecture's recordings are looked at while one is awaited (a live lecture's,
 *  for "watch from the beginning"; an ended lecture's, until its replay is ready). */
const RECORDINGS_POLL_MS = 5000;
/** ...at most this many times in a row. */
const RECORDINGS_TRIES = 24;
/** Seconds a live lecture's recording must hold before it can be watched from the start. */
const LIVE_RECORDING_MIN_S = 8;

// Icons as SVG paths (24x24): emoji fonts are missing on many classroom PCs.
const ICONS: Record<string, string> = {
  play: "M8 5v14l11-7z",
  pause: "M6 5h4v14H6zm8 0h4v14h-4z",
  muted: "M16.5 12A4.5 4.5 0 0 0 14 8v2.2l2.4 2.4c.1-.2.1-.4.1-.6zM19 12c0 .9-.2 1.8-.5 2.6l1.5 1.5A8.8 8.8 0 0 0 21 12c0-4.3-3-7.9-7-8.8v2.1c2.9.9 5 3.5 5 6.7zM4.3 3 3 4.3 7.7 9H3v6h4l5 5v-6.7l4.3 4.3c-.7.5-1.4.9-2.3 1.2v2.1a8.9 8.9 0 0 0 3.7-1.8l2 2 1.3-1.3-9-9zM12 4 9.9 6.1 12 8.2z",
  sound: "M3 9v6h4l5 5V4L7 9zm13.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1c2.9.9 5 3.5 5 6.7s-2.1 5.8-5 6.7v2.1c4-.9 7-4.5 7-8.8s-3-7.9-7-8.8z",
  hand: "M21 7a2 2 0 0 0-2 2v4h-1V4a2 2 0 0 0-4 0v7h-1V2a2 2 0 0 0-4 0v9H8V5a2 2 0 0 0-4 0v10c0 4.4 3.6 8 8 8s8-3.6 8-8V9a2 2 0 0 0 1-2z",
  info: "M11 7h2v2h-2zm0 4h2v6h-2zm1-9a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16z",
  restart: "M12 5V1L7 6l5 5V7a6 6 0 1 1-6 6H4a8 8 0 1 0 8-8z",
};

function icon(name: string): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  path.setAttribute("fill", "currentColor");
  svg.appendChild(path);
  return svg;
}

const STYLE = `
:host { display: block; position: relative; font: 15px/1.4 system-ui, -apple-system, "PingFang SC", "Microsoft YaHei", sans-serif; color: #eee; background: #000; }
.frame { position: relative; width: 100%; }
video { display: block; width: 100%; aspect-ratio: 16 / 9; background: #000; }
.title { position: absolute; top: 0; left: 0; right: 0; padding: 8px 12px; background: linear-gradient(#000a, #0000); pointer-events: none; font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.overlay { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 8px; background: #000b; text-align: center; padding: 16px; }
.overlay[hidden] { display: none; }
.overlay .msg { font-size: 1.2em; font-weight: 600; }
.overlay .sub { opacity: .85; font-variant-numeric: tabular-nums; }
.overlay button { font-size: 1.1em; padding: 10px 22px; border-radius: 24px; border: 0; background: #e33; color: #fff; cursor: pointer; }
.spinner { width: 28px; height: 28px; border: 3px solid #fff4; border-top-color: #fff; border-radius: 50%; animation: spin 1s linear infinite; }
.spinner[hidden] { display: none; }
@keyframes spin { to { transform: rotate(360deg); } }
.bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; padding: 8px; background: #111; }
.bar button { display: inline-flex; align-items: center; gap: 4px; }
.bar button, .bar select, .bar input { font: inherit; min-height: 36px; border-radius: 6px; border: 1px solid #444; background: #222; color: #eee; padding: 0 10px; }
.bar button:focus-visible, .bar select:focus-visible, .bar input:focus-visible, .overlay button:focus-visible { outline: 2px solid #4af; outline-offset: 2px; }
.bar label { display: inline-flex; align-items: center; gap: 6px; }
.bar .grow { flex: 1 1 auto; }
.bar form { display: inline-flex; gap: 6px; flex: 1 1 220px; }
.bar form input { flex: 1 1 auto; min-width: 0; }
.badge { font-size: .85em; padding: 2px 8px; border-radius: 10px; background: #e33; }
.badge.off { background: #555; }
.info { padding: 8px 12px; background: #181818; font-size: .9em; display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; }
.info[hidden] { display: none; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
.frame.audio video, :host([fill]) .frame.audio video { position: absolute; width: 1px; height: 1px; opacity: 0; }
.audio-card { display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 10px; min-height: 160px; height: 100%; background: radial-gradient(#1d2a3a, #000); font-size: 1.1em; }
.audio-card svg { width: 56px; height: 56px; opacity: .8; }
.audio-card[hidden] { display: none; }
.notice { position: absolute; left: 8px; right: 8px; bottom: 8px; display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: space-between; padding: 8px 12px; border-radius: 8px; background: #000c; }
.notice[hidden] { display: none; }
.notice.top { top: 44px; bottom: auto; }
.notice button { font: inherit; min-height: 36px; border-radius: 6px; border: 1px solid #666; background: #333; color: #fff; padding: 0 12px; cursor: pointer; }
:host([fill]) { display: flex; flex-direction: column; height: 100%; }
:host([kiosk]) { position: fixed; inset: 0; cursor: none; }
:host([kiosk]) .bar, :host([kiosk]) .replays, :host([kiosk]) .replay-bar, :host([kiosk]) .big-play { display: none !important; }
:host([kiosk]) .overlay .msg { font-size: 2.4em; }
:host([kiosk]) .overlay .sub { font-size: 1.6em; }
:host([kiosk]) .title { font-size: 1.6em; }
:host([fill]) .frame { flex: 1 1 auto; min-height: 0; }
:host([fill]) video { height: 100%; aspect-ratio: auto; object-fit: contain; }
.replay-bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; padding: 8px 8px 0; background: #111; }
.replay-bar[hidden] { display: none; }
.replay-bar .seek { flex: 1 1 100%; min-width: 0; accent-color: #e33; }
.replay-bar .time { font-variant-numeric: tabular-nums; opacity: .9; }
.replay-bar label { display: inline-flex; align-items: center; gap: 6px; }
.replay-bar button, .replay-bar select, .replay-bar summary { font: inherit; min-height: 36px; border-radius: 6px; border: 1px solid #444; background: #222; color: #eee; padding: 0 10px; cursor: pointer; }
.replay-bar summary { display: inline-flex; align-items: center; list-style: none; }
.replay-bar details[open] { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.replay-bar details[hidden], .replay-bar button[hidden] { display: none; }
.replay-bar a { color: #8cf; padding: 4px 6px; }
.bar [hidden] { display: none; }
.bar.replaying .live-only, .bar:not(.replaying) .replay-only { display: none; }
.replays { display: flex; flex-direction: column; gap: 8px; align-items: stretch; max-width: 520px; width: 100%; max-height: 70%; overflow: auto; }
.replays:empty { display: none; }
.replays-title { font-weight: 600; }
.replays .replay-item { display: flex; gap: 10px; align-items: center; text-align: left; padding: 6px; border-radius: 8px; border: 1px solid #444; background: #222c; color: #eee; font: inherit; cursor: pointer; }
.replays .replay-item img { width: 96px; aspect-ratio: 16 / 9; object-fit: cover; border-radius: 4px; background: #000; }
.replays .replay-item span { display: flex; flex-direction: column; }
.bar button:focus-visible, .replay-bar :focus-visible, .replays button:focus-visible { outline: 2px solid #4af; outline-offset: 2px; }
@media (max-width: 480px) { .bar .lbl, .replay-bar .lbl { display: none; } }
.ask-back { position: absolute; top: 44px; right: 8px; width: min(320px, 60%); display: flex; flex-direction: column; gap: 8px; padding: 10px; border-radius: 8px; background: #000d; border: 2px solid #4af; }
.ask-back.on-air { border-color: #e33; }
.ask-back[hidden], .ask-back [hidden] { display: none !important; }
.frame .ask-back video.ask-self { position: static; width: 100%; height: auto; aspect-ratio: 4 / 3; opacity: 1; object-fit: cover; background: #222; border-radius: 4px; transform: scaleX(-1); }
.ask-back .ask-onair { align-self: flex-start; font-weight: 600; padding: 2px 10px; border-radius: 10px; background: #e33; color: #fff; }
.ask-back .ask-msg { margin: 0; font-weight: 600; }
.ask-back .ask-buttons { display: flex; flex-wrap: wrap; gap: 8px; }
.ask-back button { font: inherit; min-height: 40px; padding: 0 16px; border-radius: 20px; border: 1px solid #666; background: #333; color: #fff; cursor: pointer; }
.ask-back button.ask-start, .ask-back button.ask-stop { background: #e33; border-color: #e33; }
.ask-back button:disabled { opacity: .6; cursor: default; }
.ask-back button:focus-visible { outline: 2px solid #4af; outline-offset: 2px; }
`;

/** A site's player reports its figures this often (seconds). */
const SITE_REPORT_S = 5;

export class JiangtangPlayer extends HTMLElement {
  static get observedAttributes(): string[] {
    return ["stream", "server", "lang", "mode", "muted", "ui", "token", "replay", "kiosk"];
  }

  private root: ShadowRoot;
  private t: Texts = texts("zh");
  private video!: HTMLVideoElement;
  private el: Record<string, HTMLElement> = {};
  private engine: Engine | null = null;
  private engineStarting = false;
  private lecture: LectureState | null = null;
  private ws: WebSocket | null = null;
  private wsRetry = 0;
  private wsTimer = 0;
  private pollTimer = 0;
  private polling = false;
  private tickTimer = 0;
  private failures = 0;
  private restartTimer = 0;
  private forcedHls = false;
  private codecNoticeTimer = 0;
  /** Playing sound only because the link could not carry the picture. */
  private weakNetwork = false;
  /** On a weak link with the relay's smaller picture: LL-HLS from its smallest variant. */
  private smallPicture = false;
  private stalls: number[] = [];
  private stallsIgnoredUntil = 0;
  private viewers: { webrtc: number; live_channel: number } | null = null;
  private _state: PlayerState = "loading";
  private _dialect: string | null = null;
  private siteTick = 0;
  private connected = false;
  /** Why the relay refuses to play this lecture here (a token reason code), if it does. */
  private denied: string | null = null;
  /** The recording being played, and whether its lecture is still live (watched from the
   *  beginning). */
  private replay: { rec: Recording; live: boolean } | null = null;
  /** The lecture's finished recordings, newest first, and its live one. */
  private recordings: Recording[] = [];
  private liveRecording: Recording | null = null;
  private recordingsTimer = 0;
  private recordingsFor = "";
  private recordingsTries = 0;
  private replayControls: ReplayControls | null = null;
  /** Asking back, once the main hall invites this class. */
  private askBack = new AskBack({
    server: () => this.server(),
    onState: (state, previous, detail) => this.emit("askstate", { state, previous, ...detail }),
    send: (m) => this.sendChannel(m),
  });

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
  }

  // ---- public API -------------------------------------------------------------------------

  /** Current state: loading, scheduled, idle, connecting, playing, reconnecting, ended. */
  get state(): PlayerState {
    return this._state;
  }
  /** The engine in use: webrtc, hls or audio (null before playing). */
  get mode(): Mode | null {
    return this.engine?.mode ?? null;
  }
  /** The dialect heard. */
  get dialect(): string | null {
    return this._dialect;
  }
  /** The lecture's dialects (the recording's, during a replay). */
  get dialects(): Dialect[] {
    return this.replay?.rec.dialects ?? this.lecture?.dialects ?? [];
  }
  /** The recording being played: its id, and whether its lecture is still live. */
  get replaying(): { id: string; live: boolean } | null {
    return this.replay ? { id: this.replay.rec.id, live: this.replay.live } : null;
  }
  /** The lecture's recordings that can be replayed, newest first. */
  get replays(): Recording[] {
    return this.recordings;
  }
  /** The lecture's title. */
  get lectureTitle(): string | null {
    return this.lecture?.title ?? null;
  }
  /** Where asking back stands: none, invited, publishing, on_air, ended. */
  get askState(): AskState {
    return this.askBack.state;
  }
  /** The ask-back's id, while there is one. */
  get askId(): number | null {
    return this.askBack.id;
  }
  /** The video element (for measurements). */
  get media(): HTMLVideoElement {
    return this.video;
  }

  play(): Promise<void> {
    return this.video.play();
  }

  pause(): void {
    this.video.pause();
  }

  /** Switches the dialect heard (remembered on this device). */
  async setDialect(lang: string): Promise<void> {
    if (!this.dialects.some((d) => d.lang === lang)) throw new Error(`no dialect ${lang}`);
    this._dialect = lang;
    try {
      localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      /* storage may be blocked in embedded webviews */
    }
    (this.el.dialect as HTMLSelectElement).value = lang;
    await this.engine?.setDialect(lang);
    this.emit("dialectchange", { lang });
    this.updateAudioCard();
  }

  /** Chooses the playback mode: auto, webrtc, hls or audio. */
  setMode(mode: ModePref): void {
    this.setAttribute("mode", mode);
  }

  /** Sends a text question to the lecture's operator. */
  ask(text: string): boolean {
    return this.sendChannel({ type: "question", text, from: this.getAttribute("from") ?? undefined });
  }

  /** Raises the hand of this classroom. */
  raiseHand(): boolean {
    return this.sendChannel({ type: "hand", from: this.getAttribute("from") ?? undefined });
  }

  /** Plays the recording `id` (a replay), from its beginning. */
  async watchReplay(id: string): Promise<void> {
    const rec = this.recordings.find((r) => r.id === id) ?? (await fetchRecording(this.server(), id));
    if (!rec) throw new Error(`no recording ${id}`);
    this.startReplay(rec);
  }

  /** While the lecture is live: plays its recording from the beginning, to catch up. */
  watchFromStart(): void {
    if (this.liveRecording) this.startReplay(this.liveRecording);
  }

  /** Leaves a replay for the live lecture. */
  backToLive(): void {
    this.stopReplay();
    this.applyLecture();
  }

  /** Seconds behind live, as the engine estimates it. */
  latency(): Promise<number | null> {
    return this.engine ? this.engine.latency() : Promise.resolve(null);
  }

  // ---- lifecycle --------------------------------------------------------------------------

  connectedCallback(): void {
    this.connected = true;
    this.denied = null;
    this.t = texts((this.getAttribute("ui") as Locale) ?? "zh");
    this.render();
    this.connectChannel();
    this.tickTimer = window.setInterval(() => this.tick(), 1000);
    const replay = this.getAttribute("replay");
    if (replay) this.watchReplay(replay).catch((e) => this.emit("playbackerror", { reason: String(e), mode: null }));
  }

  disconnectedCallback(): void {
    this.connected = false;
    window.clearInterval(this.tickTimer);
    window.clearTimeout(this.wsTimer);
    window.clearTimeout(this.restartTimer);
    this.stopPolling();
    this.ws?.close();
    this.ws = null;
    window.clearTimeout(this.recordingsTimer);
    this.recordingsFor = "";
    this.replay = null;
    this.stopEngine();
    this.askBack.stop();
  }

  attributeChangedCallback(name: string, old: string | null, value: string | null): void {
    if (!this.connected || old === value) return;
    if (name === "mode") {
      (this.el.mode as HTMLSelectElement).value = value ?? "auto";
      this.forcedHls = false;
      this.weakNetwork = false;
      this.smallPicture = false;
      this.el.notice.hidden = true;
      this.hideCodecNotice();
      this.failures = 0;
      this.restartEngine();
    } else if (name === "lang" && value) {
      this.setDialect(value).catch(() => undefined);
    } else if (name === "muted") {
      this.video.muted = value !== null;
      this.updateButtons();
    } else if (name === "replay" && value) {
      this.watchReplay(value).catch(() => undefined);
    } else if (name === "ui") {
      this.t = texts((value as Locale) ?? "zh");
      this.render();
      this.applyLecture();
    } else {
      // A different lecture or relay: start over.
      this.disconnectedCallback();
      this.connectedCallback();
    }
  }

  // ---- DOM --------------------------------------------------------------------------------

  private render(): void {
    const t = this.t;
    this.root.innerHTML = "";
    const style = document.createElement("style");
    style.textContent = STYLE;
    this.root.appendChild(style);
    const frame = this.make("div", "frame");
    this.video = document.createElement("video");
    this.video.playsInline = true;
    this.video.muted = this.hasAttribute("muted");
    this.video.setAttribute("aria-label", t.live);
    frame.appendChild(this.video);
    // Audio only: no picture, so say what is playing instead of a black box.
    const card = this.make("div", "audio-card", frame);
    card.hidden = true;
    card.append(icon("sound"));
    this.make("div", "audio-text", card);
    const title = this.make("div", "title", frame);
    title.setAttribute("part", "title");
    // After a weak-network fallback: say so, and offer the picture back.
    const notice = this.make("div", "notice", frame);
    notice.hidden = true;
    notice.setAttribute("role", "status");
    const noticeText = document.createElement("span");
    noticeText.textContent = t.weakNetwork;
    const restore = document.createElement("button");
    restore.className = "restore";
    restore.textContent = t.restoreVideo;
    restore.addEventListener("click", () => this.restoreVideo());
    notice.append(noticeText, restore);
    // Why this browser gets no picture over WebRTC (and what it plays instead).
    const codec = this.make("div", "codec-notice notice top", frame);
    codec.hidden = true;
    codec.setAttribute("role", "status");
    this.make("span", "codec-text", codec);
    const dismiss = this.make("button", "codec-dismiss", codec);
    dismiss.textContent = t.dismiss;
    dismiss.addEventListener("click", () => this.hideCodecNotice());
    const overlay = this.make("div", "overlay", frame);
    overlay.setAttribute("role", "status");
    overlay.setAttribute("aria-live", "polite");
    this.make("div", "spinner", overlay);
    this.make("div", "msg", overlay);
    this.make("div", "sub", overlay);
    const bigPlay = this.make("button", "big-play", overlay) as HTMLButtonElement;
    bigPlay.append(icon("play"), ` ${t.clickToPlay}`);
    bigPlay.hidden = true;
    bigPlay.addEventListener("click", () => {
      bigPlay.hidden = true;
      this.video.play().catch(() => undefined);
    });
    this.make("div", "replays", overlay);
    frame.appendChild(this.askBack.render(t));
    this.root.appendChild(frame);

    this.replayControls = new ReplayControls(
      {
        video: this.video,
        texts: t,
        backToLive: () => this.backToLive(),
        backToList: () => {
          this.stopReplay();
          this.applyLecture();
          this.offerReplays();
        },
      },
      this.server(),
    );
    this.root.appendChild(this.replayControls.root);

    const bar = this.make("div", "bar");
    const play = this.make("button", "play", bar);
    play.addEventListener("click", () => (this.video.paused ? this.video.play().catch(() => undefined) : this.video.pause()));
    const mute = this.make("button", "mute", bar);
    mute.addEventListener("click", () => {
      this.video.muted = !this.video.muted;
      this.updateButtons();
    });
    const badge = this.make("span", "badge off", bar);
    badge.textContent = t.live;
    const fromStart = this.make("button", "from-start live-only", bar) as HTMLButtonElement;
    fromStart.append(icon("restart"), ` ${t.fromStart}`);
    fromStart.hidden = true;
    fromStart.addEventListener("click", () => this.watchFromStart());
    const dl = this.make("label", "", bar);
    const dlt = this.make("span", "lbl", dl);
    dlt.textContent = t.dialect;
    const dialect = this.make("select", "dialect", dl) as HTMLSelectElement;
    dialect.setAttribute("aria-label", t.dialect);
    dialect.addEventListener("change", () => this.setDialect(dialect.value).catch(() => undefined));
    const ml = this.make("label", "mode-label live-only", bar);
    const mlt = this.make("span", "lbl", ml);
    mlt.textContent = t.mode;
    const mode = this.make("select", "mode", ml) as HTMLSelectElement;
    mode.setAttribute("aria-label", t.mode);
    for (const [v, label] of [
      ["auto", t.modeAuto],
      ["webrtc", t.modeWebrtc],
      ["hls", t.modeHls],
      ["audio", t.modeAudio],
    ]) {
      const o = document.createElement("option");
      o.value = v;
      o.textContent = label;
      mode.appendChild(o);
    }
    mode.value = this.getAttribute("mode") ?? "auto";
    mode.addEventListener("change", () => this.setMode(mode.value as ModePref));
    const hand = this.make("button", "hand live-only", bar);
    hand.append(icon("hand"), ` ${t.hand}`);
    hand.addEventListener("click", () => {
      if (this.raiseHand()) this.flash(t.sent);
    });
    const form = this.make("form", "ask live-only", bar) as HTMLFormElement;
    const input = this.make("input", "question", form) as HTMLInputElement;
    input.maxLength = 500;
    input.placeholder = t.askPlaceholder;
    input.setAttribute("aria-label", t.ask);
    const send = this.make("button", "send", form) as HTMLButtonElement;
    send.type = "submit";
    send.textContent = t.ask;
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (text && this.ask(text)) {
        input.value = "";
        this.flash(t.sent);
      }
    });
    const infoBtn = this.make("button", "info-btn", bar);
    infoBtn.append(icon("info"));
    infoBtn.setAttribute("aria-label", t.info);
    infoBtn.setAttribute("aria-expanded", "false");
    const info = this.make("div", "info");
    info.hidden = true;
    infoBtn.addEventListener("click", () => {
      info.hidden = !info.hidden;
      infoBtn.setAttribute("aria-expanded", String(!info.hidden));
      this.tick();
    });
    this.root.appendChild(bar);
    this.root.appendChild(info);
    this.video.addEventListener("play", () => this.updateButtons());
    this.video.addEventListener("pause", () => this.updateButtons());
    this.video.addEventListener("volumechange", () => this.updateButtons());
    this.updateButtons();
  }

  private make(tag: string, cls: string, parent?: HTMLElement): HTMLElement {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    const key = cls.split(" ")[0];
    if (key) this.el[key] = e;
    (parent ?? this.root).appendChild(e);
    return e;
  }

  private updateAudioCard(): void {
    const e = this.engine;
    const audio = e?.mode === "audio" || (e instanceof WhepEngine && e.soundOnly);
    this.el.frame.classList.toggle("audio", audio);
    this.el["audio-card"].hidden = !audio;
    const name = this.dialects.find((d) => d.lang === this._dialect)?.name ?? "";
    this.el["audio-text"].textContent = name ? `${this.t.modeAudio} · ${name}` : this.t.modeAudio;
  }

  private updateButtons(): void {
    const t = this.t;
    const play = this.el.play;
    if (play) {
      play.replaceChildren(icon(this.video.paused ? "play" : "pause"));
      play.setAttribute("aria-label", this.video.paused ? t.play : t.pause);
    }
    const mute = this.el.mute;
    if (mute) {
      mute.replaceChildren(icon(this.video.muted ? "muted" : "sound"));
      mute.setAttribute("aria-label", this.video.muted ? t.unmute : t.mute);
    }
  }

  /** Says why the picture does not come over WebRTC here; it stays a while, or until
   *  dismissed. */
  private showCodecNotice(text: string): void {
    this.el["codec-text"].textContent = text;
    this.el["codec-notice"].hidden = false;
    window.clearTimeout(this.codecNoticeTimer);
    this.codecNoticeTimer = window.setTimeout(() => this.hideCodecNotice(), 20_000);
  }

  private hideCodecNotice(): void {
    window.clearTimeout(this.codecNoticeTimer);
    const n = this.el["codec-notice"];
    if (n) n.hidden = true;
  }

  private flash(text: string): void {
    const b = this.el.badge;
    const old = b.textContent;
    b.textContent = text;
    window.setTimeout(() => (b.textContent = old), 1500);
  }

  private setState(state: PlayerState): void {
    if (state === this._state) return;
    const previous = this._state;
    this._state = state;
    this.applyOverlay();
    this.emit("statechange", { state, previous, mode: this.mode });
  }

  private emit(name: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  private applyOverlay(): void {
    const t = this.t;
    const overlay = this.el.overlay;
    const msg = this.el.msg;
    const sub = this.el.sub;
    const spinner = this.el.spinner;
    const s = this._state;
    overlay.hidden = s === "playing";
    spinner.hidden = !(s === "loading" || s === "connecting" || s === "reconnecting");
    sub.textContent = "";
    msg.textContent =
      {
        loading: t.loading,
        connecting: t.loading,
        scheduled: t.scheduled,
        idle: t.idle,
        reconnecting: t.reconnecting,
        ended: t.ended,
        unsupported: t.noPlayback,
        denied: t.denied,
        playing: "",
      }[s] ?? "";
    if (s === "denied") sub.textContent = this.deniedText();
    // Not live, but its replays are offered: say so rather than "not started".
    if (s === "idle" && this.recordings.length > 0) msg.textContent = t.notLive;
    this.el.badge.className = s === "playing" ? "badge" : "badge off";
    this.tick();
  }

  /** Once a second: the countdown, and the info panel. */
  private tick(): void {
    if (++this.siteTick % SITE_REPORT_S === 0) void this.reportSite();
    const t = this.t;
    // Before a lecture, and between lectures: the next one's title and a countdown.
    const s = this._state;
    const next =
      s === "scheduled" || s === "idle" || s === "ended"
        ? this.lecture?.next?.starts_at
          ? this.lecture.next
          : s === "scheduled" && this.lecture?.starts_at
            ? { title: null, starts_at: this.lecture.starts_at }
            : null
        : null;
    if (next?.starts_at) {
      const start = new Date(next.starts_at);
      const left = Math.max(0, Math.round((start.getTime() - Date.now()) / 1000));
      const dd = Math.floor(left / 86400);
      const hh = Math.floor((left % 86400) / 3600);
      const mm = Math.floor((left % 3600) / 60);
      const ss = left % 60;
      const two = (n: number) => String(n).padStart(2, "0");
      const when = start.toLocaleString(this.getAttribute("ui") === "en" ? "en" : "zh-CN", { dateStyle: "medium", timeStyle: "short" });
      const count = `${dd > 0 ? `${dd}${t.days} ` : ""}${dd > 0 || hh > 0 ? `${hh}:` : ""}${two(mm)}:${two(ss)}`;
      const what = next.title ? `${t.next}：${next.title} · ` : "";
      this.el.sub.textContent = `${what}${t.startsAt} ${when} · ${t.startsIn} ${count}`;
      this.el.sub.className = "sub next";
    }
    const info = this.el.info;
    if (info && !info.hidden) {
      this.latency().then((l) => {
        const modeName = { webrtc: t.modeWebrtc, hls: t.modeHls, audio: t.modeAudio };
        const rows: [string, string, string][] = [
          ["mode", t.using, this.mode ? modeName[this.mode] : "–"],
          ["latency", t.latency, l === null ? "–" : `${l.toFixed(1)} s`],
          ["dialect", t.dialect, this.dialects.find((d) => d.lang === this._dialect)?.name ?? "–"],
          ["viewers", t.viewers, this.viewers ? String(this.viewers.webrtc + this.viewers.live_channel) : "–"],
        ];
        info.replaceChildren();
        for (const [key, k, v] of rows) {
          const a = document.createElement("span");
          a.textContent = k;
          const b = document.createElement("span");
          b.textContent = v;
          b.className = `info-${key}`;
          info.append(a, b);
        }
      });
    }
  }

  // ---- live channel -----------------------------------------------------------------------

  private server(): string {
    return (this.getAttribute("server") ?? "").replace(/\/$/, "");
  }

  private stream(): string {
    return this.getAttribute("stream") ?? "";
  }

  /** The sub-venue this player shows the lecture at (`site`), reported to the main hall. */
  private site(): string | null {
    const s = this.getAttribute("site");
    return s && /^[a-z0-9_-]{1,32}$/.test(s) ? s : null;
  }

  /** A site's player tells the main hall what it plays and how its link does. */
  private async reportSite(): Promise<void> {
    if (!this.site() || this.ws?.readyState !== WebSocket.OPEN) return;
    const link = (await this.engine?.link().catch(() => ({}))) ?? {};
    this.sendChannel({ type: "stats", lang: this._dialect ?? undefined, mode: this.engine?.mode, ...link });
  }

  private connectChannel(): void {
    const base = this.server() || window.location.origin;
    const site = this.site();
    const url =
      `${base.replace(/^http/, "ws")}/ws/${encodeURIComponent(this.stream())}` + (site ? `?site=${encodeURIComponent(site)}` : "");
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch {
      this.scheduleChannel();
      return;
    }
    this.ws = ws;
    ws.onmessage = (e) => {
      let m: any;
      try {
        m = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (m.type === "state") {
        this.wsRetry = 0;
        this.stopPolling();
        this.lecture = m as LectureState;
        this.applyLecture();
      } else if (m.type === "viewers") {
        this.viewers = { webrtc: m.webrtc, live_channel: m.live_channel };
      } else if (m.type === "error") {
        this.emit("channelerror", { message: m.error });
      } else if (m.type === "ask" || m.type === "ask_ended" || m.type === "on_air") {
        this.askBack.onMessage(m);
      }
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.startPolling();
      this.scheduleChannel();
    };
  }

  /** No live channel: learn the state from the API until one opens again. */
  private startPolling(): void {
    if (this.polling || !this.connected) return;
    this.polling = true;
    this.emit("fallback", { from: "channel", reason: "no live channel: polling the lecture state" });
    this.poll();
  }

  private stopPolling(): void {
    this.polling = false;
    window.clearTimeout(this.pollTimer);
  }

  private async poll(): Promise<void> {
    if (!this.polling) return;
    try {
      const url = `${this.server()}/api/v1/streams/${encodeURIComponent(this.stream())}/state`;
      const r = await fetch(url, { cache: "no-store" });
      const m = r.ok ? await r.json() : null;
      // A channel may have opened meanwhile: what it pushes wins.
      if (this.polling && m?.type === "state") {
        this.lecture = m as LectureState;
        this.applyLecture();
      }
    } catch {
      /* offline for now: try again */
    }
    if (!this.polling) return;
    window.clearTimeout(this.pollTimer);
    this.pollTimer = window.setTimeout(() => this.poll(), POLL_MS + Math.random() * 1000);
  }

  private scheduleChannel(): void {
    if (!this.connected) return;
    this.wsRetry++;
    window.clearTimeout(this.wsTimer);
    this.wsTimer = window.setTimeout(() => this.connectChannel(), Math.min(1000 * this.wsRetry, 10000));
  }

  private sendChannel(m: unknown): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  /** Fills the dialect picker with `dialects` and picks one: the attribute, else what this
   *  device chose before, else the default. */
  private fillDialects(dialects: Dialect[]): void {
    const select = this.el.dialect as HTMLSelectElement;
    select.replaceChildren();
    for (const d of dialects) {
      const o = document.createElement("option");
      o.value = d.lang;
      o.textContent = d.name;
      select.appendChild(o);
    }
    select.disabled = dialects.length < 2;
    let remembered: string | null = null;
    try {
      remembered = localStorage.getItem(STORAGE_KEY);
    } catch {
      /* blocked */
    }
    const want = [this._dialect, this.getAttribute("lang"), remembered, dialects.find((d) => d.default)?.lang, dialects[0]?.lang].find(
      (x) => x && dialects.some((d) => d.lang === x),
    );
    if (want && want !== this._dialect) {
      this._dialect = want;
      this.engine?.setDialect(want).catch(() => undefined);
    }
    if (this._dialect) select.value = this._dialect;
    this.updateAudioCard();
  }

  /** Applies a lecture state pushed by the relay. */
  private applyLecture(): void {
    const l = this.lecture;
    if (!l) return;
    this.watchRecordings(l.status);
    if (this.replay) {
      // A replay goes on whatever the live lecture does; one watched from the beginning
      // becomes an ordinary replay when its lecture ends.
      if (this.replay.live && l.status !== "live" && l.status !== "reconnecting" && l.status !== "starting") {
        this.replay.live = false;
        this.replayControls?.liveEnded();
      }
      return;
    }
    this.el.title.textContent = l.title ?? "";
    this.fillDialects(l.dialects);
    switch (l.status) {
      case "scheduled":
      case "idle":
        this.stopEngine();
        this.setState(l.status);
        break;
      case "ended":
        this.stopEngine();
        this.setState("ended");
        break;
      case "reconnecting":
        // The playlists and the WebRTC session stay: show why the picture stopped. A picture
        // that stops now, or catches up just after, says nothing about this viewer's network.
        this.stallsIgnoredUntil = Number.POSITIVE_INFINITY;
        this.stalls = [];
        if (this.engine) this.setState("reconnecting");
        else this.startEngine();
        break;
      case "starting":
        // Published, but no media yet: which tracks it has is not known until there is.
        if (!this.engine) this.setState("connecting");
        break;
      case "live":
        if (this.stallsIgnoredUntil === Number.POSITIVE_INFINITY) this.stallsIgnoredUntil = Date.now() + 10_000;
        if (this.engine?.mode === "audio" && l.has_video && (this.getAttribute("mode") ?? "auto") === "auto") {
          // Chosen when only sound was known; the picture has arrived since.
          this.restartEngine();
        } else if (!this.engine && !this.engineStarting) this.startEngine();
        else if (this._state === "reconnecting" && !this.video.paused) this.setState("playing");
        break;
    }
  }

  // ---- replays ---------------------------------------------------------------------------

  /** Follows the lecture's recordings: while it is live, until its recording can be watched
   *  from the beginning; otherwise until its latest recording is ready to replay. */
  private watchRecordings(status: LectureState["status"]): void {
    const live = status === "live" || status === "reconnecting" || status === "starting";
    const key = `${this.stream()}|${live ? "live" : "over"}`;
    if (this.recordingsFor === key) return;
    this.recordingsFor = key;
    window.clearTimeout(this.recordingsTimer);
    this.recordingsTries = 0;
    this.liveRecording = null;
    this.updateFromStart();
    this.loadRecordings(live);
  }

  private async loadRecordings(live: boolean): Promise<void> {
    const key = this.recordingsFor;
    let all: Recording[] = [];
    try {
      all = await fetchRecordings(this.server(), this.stream());
    } catch {
      /* offline for now: try again */
    }
    if (this.recordingsFor !== key || !this.connected) return;
    this.recordings = all.filter((r) => !isLive(r));
    // Offered once it holds a few whole segments (its EVENT playlist lists only those).
    this.liveRecording = all.find((r) => isLive(r) && (r.duration_s ?? 0) >= LIVE_RECORDING_MIN_S) ?? null;
    this.updateFromStart();
    this.offerReplays();
    this.applyOverlay();
    // Keep looking, a while, when what is awaited is not there yet: the live lecture's
    // recording (its first segment comes within seconds, unless the lecture is not
    // recorded), or an ended lecture's replay that is being finished.
    const waiting = live ? !this.liveRecording : this.lecture?.status === "ended" && all.some(isLive);
    window.clearTimeout(this.recordingsTimer);
    if (waiting && this.recordingsTries++ < RECORDINGS_TRIES) {
      this.recordingsTimer = window.setTimeout(() => this.loadRecordings(live), RECORDINGS_POLL_MS);
    }
  }

  private updateFromStart(): void {
    const b = this.el["from-start"];
    if (b) b.hidden = !this.liveRecording || !!this.replay;
  }

  /** Where the lecture is not live: the overlay offers its replays. */
  private offerReplays(): void {
    const box = this.el.replays;
    if (!box) return;
    const status = this.lecture?.status;
    const over = status === "ended" || status === "idle" || status === "scheduled";
    if (this.replay || !over || this.recordings.length === 0) {
      box.replaceChildren();
      if (!this.replay) this.video.removeAttribute("poster");
      return;
    }
    const picker = replayPicker(this.recordings, this.server(), this.t, this.getAttribute("ui") ?? "zh", (r) => this.startReplay(r));
    box.replaceChildren(...Array.from(picker.childNodes));
    // One replay: its poster behind the offer.
    const poster = this.recordings.length === 1 ? posterOf(this.server(), this.recordings[0]) : null;
    if (poster) this.video.poster = poster;
    else this.video.removeAttribute("poster");
  }

  private startReplay(rec: Recording): void {
    this.stopEngine();
    const live = isLive(rec);
    this.replay = { rec, live };
    this.el.replays.replaceChildren();
    this.el.bar.classList.add("replaying");
    this.el.badge.textContent = live ? this.t.fromStart : this.t.replay;
    this.el.title.textContent = rec.title ?? this.lecture?.title ?? "";
    const poster = posterOf(this.server(), rec);
    if (poster) this.video.poster = poster;
    else this.video.removeAttribute("poster");
    this.fillDialects(rec.dialects);
    this.replayControls?.show(rec, live, this.recordings.length > 1);
    this.updateFromStart();
    const engine = new ReplayEngine({ ...this.options(), lang: this._dialect }, rec);
    this.engine = engine;
    this.setState("connecting");
    engine
      .start()
      .then(() => {
        this.emit("modechange", { mode: engine.mode, replay: rec.id });
        this.video.play().catch(() => {
          (this.el["big-play"] as HTMLButtonElement).hidden = false;
          this.el.overlay.hidden = false;
        });
      })
      .catch((e) => {
        this.emit("playbackerror", { reason: String(e), mode: engine.mode });
        this.setState("unsupported");
      });
  }

  private stopReplay(): void {
    if (!this.replay) return;
    this.replay = null;
    this.stopEngine();
    this.replayControls?.hide();
    this.el.bar.classList.remove("replaying");
    this.el.badge.textContent = this.t.live;
    this.video.removeAttribute("poster");
    this.updateFromStart();
  }

  // ---- engines ----------------------------------------------------------------------------

  private modes(): Mode[] {
    const pref = (this.getAttribute("mode") ?? "auto") as ModePref;
    if (pref === "auto" && this.weakNetwork) return ["audio"];
    if (pref === "auto" && this.smallPicture) return ["hls"];
    if (pref === "webrtc") return ["webrtc"];
    if (pref === "hls") return ["hls"];
    if (pref === "audio") return ["audio"];
    if (this.lecture && !this.lecture.has_video) return ["audio"];
    return webrtcAvailable() && !this.forcedHls ? ["webrtc", "hls"] : ["hls"];
  }

  private options(): EngineOptions {
    return {
      server: this.server(),
      stream: this.stream(),
      lang: this._dialect,
      video: this.video,
      onFailure: (reason, fatal) => this.onFailure(reason, fatal),
      onStall: () => this.onStall(),
      smallest: this.smallPicture,
      token: this.getAttribute("token"),
      onDenied: (reason) => this.onDenied(reason),
      onPlaying: () => {
        this.failures = 0;
        if (this.replay) this.setState("playing");
        else if (this.lecture?.status === "reconnecting") this.setState("reconnecting");
        else this.setState("playing");
      },
    };
  }

  private async startEngine(): Promise<void> {
    if (this.engineStarting || this.denied) return;
    this.engineStarting = true;
    this.setState(this._state === "reconnecting" ? "reconnecting" : "connecting");
    const modes = this.modes();
    for (const mode of modes) {
      // WebRTC without a picture is worth nothing when LL-HLS can bring the picture next.
      const options = { ...this.options(), needPicture: mode === "webrtc" && modes.includes("hls") };
      const engine = mode === "webrtc" ? new WhepEngine(options) : mode === "hls" ? new HlsEngine(options) : new AudioEngine(options);
      try {
        await engine.start();
        this.engine = engine;
        this.emit("modechange", { mode });
        this.updateAudioCard();
        if (engine instanceof WhepEngine && engine.soundOnly && this.lecture?.has_video) {
          this.showCodecNotice(this.t.webrtcSoundOnly);
        }
        break;
      } catch (e) {
        engine.stop();
        if (e instanceof DeniedError) {
          this.engineStarting = false;
          this.onDenied(e.reason);
          return;
        }
        if (e instanceof NoPictureError) {
          // The browser, not the network: WebRTC will not bring a picture on this page.
          this.forcedHls = true;
          this.showCodecNotice(this.t.noWebrtcPicture);
        }
        this.emit("fallback", { from: mode, reason: String(e) });
      }
    }
    this.engineStarting = false;
    if (!this.engine) {
      this.setState("unsupported");
      return;
    }
    if (this.hasAttribute("autoplay")) {
      this.video.play().catch(() => {
        if (this.hasAttribute("kiosk")) {
          // Nobody will click a kiosk: the picture without sound, and the reason shown.
          this.video.muted = true;
          this.video.play().catch(() => undefined);
          this.emit("playbackerror", { reason: this.t.soundBlocked, mode: this.mode });
          this.el.title.textContent = `${this.lecture?.title ?? ""} · ${this.t.soundBlocked}`;
          return;
        }
        // Autoplay with sound blocked: ask for a click.
        (this.el["big-play"] as HTMLButtonElement).hidden = false;
        this.el.overlay.hidden = false;
      });
    }
  }

  /** The relay refuses this lecture without a (valid) token: say why, and stop asking. */
  private onDenied(reason: string): void {
    this.denied = reason;
    this.stopEngine();
    this.emit("denied", { reason });
    this.setState("denied");
    this.applyOverlay();
  }

  private deniedText(): string {
    const t = this.t;
    switch (this.denied) {
      case "token_missing":
        return t.tokenMissing;
      case "token_expired":
        return t.tokenExpired;
      case "token_other_lecture":
        return t.tokenOtherLecture;
      default:
        return t.tokenInvalid;
    }
  }

  private stopEngine(): void {
    this.engine?.stop();
    this.engine = null;
    this.updateAudioCard();
  }

  private restartEngine(): void {
    if (this.replay) return;
    this.stopEngine();
    if (this.lecture && (this.lecture.status === "live" || this.lecture.status === "reconnecting")) this.startEngine();
  }

  /** A stall or freeze. Three within a minute in `auto` mode: the link cannot carry the
   *  picture, so step down to the lecture's smallest picture if it has one (the relay's
   *  ladder) and is not there yet, else play the sound alone (what a classroom on a poor line
   *  needs) and offer the picture back. */
  private onStall(): void {
    const now = Date.now();
    if (this.replay || this.lecture?.status !== "live" || now < this.stallsIgnoredUntil) return;
    this.stalls = this.stalls.filter((t) => now - t < 60_000);
    this.stalls.push(now);
    const auto = (this.getAttribute("mode") ?? "auto") === "auto";
    if (!auto || this.weakNetwork || this.engine?.mode === "audio" || this.stalls.length < 3) return;
    if (this.engine instanceof HlsEngine && this.engine.stepDown()) {
      this.stalls = [];
      this.emit("fallback", { from: "hls", reason: "weak network: the smallest picture" });
      return;
    }
    if (this.engine instanceof WhepEngine && this.lecture?.small_picture && !this.smallPicture) {
      // WebRTC carries the full picture: LL-HLS brings the relay's smaller one.
      this.smallPicture = true;
      this.stalls = [];
      this.emit("fallback", { from: "webrtc", reason: "weak network: the smallest picture" });
      this.restartEngine();
      return;
    }
    this.weakNetwork = true;
    this.stalls = [];
    this.emit("fallback", { from: this.engine?.mode ?? null, reason: "weak network: the picture keeps stalling" });
    this.el.notice.hidden = false;
    this.restartEngine();
  }

  /** Back to the picture after a weak-network fallback. */
  restoreVideo(): void {
    if (!this.weakNetwork && !this.smallPicture) return;
    this.weakNetwork = false;
    this.smallPicture = false;
    this.el.notice.hidden = true;
    this.restartEngine();
  }

  private onFailure(reason: string, fatal: boolean): void {
    this.emit("playbackerror", { reason, mode: this.mode });
    // A replay's engine retries by itself.
    if (this.replay || this.lecture?.status === "ended") return;
    this.setState("reconnecting");
    this.failures++;
    const auto = (this.getAttribute("mode") ?? "auto") === "auto";
    if (this.engine?.mode === "webrtc" && auto && (fatal || this.failures >= 3)) {
      // WebRTC does not work from here (UDP blocked, webview): LL-HLS from now on.
      this.forcedHls = true;
    }
    if (this.engine?.mode === "hls" || this.engine?.mode === "audio") {
      // hls.js restarts itself; the state returns to "playing" when frames flow again.
      return;
    }
    window.clearTimeout(this.restartTimer);
    this.restartTimer = window.setTimeout(() => this.restartEngine(), fatal ? 0 : Math.min(1000 * this.failures, 5000));
  }
}
