// <jiangtang-interpreter server="https://relay.example" stream="xihe" lang="yue" ui="zh">
//
// The interpreter's page: the lecture plays at low latency (a <jiangtang-player> over
// WebRTC), and the interpreter's microphone is published as one dialect of it over WHIP
// (`POST /whip/STREAM?lang=yue`, Authorization: Bearer KEY), with a level meter and a mute.
// A dropped connection reconnects by itself; the relay fills the dialect with silence
// meanwhile. Everything shown from the relay is set as text.
import { Locale } from "./i18n";
import { WhipError, addSendTrack, whipDelete, whipOffer } from "./whip";

export type InterpreterState = "idle" | "connecting" | "live" | "muted" | "reconnecting" | "error";

const TEXTS = {
  zh: {
    dialect: "翻译为",
    key: "讲堂密钥",
    start: "开始传译",
    stop: "结束",
    mute: "静音",
    unmute: "取消静音",
    idle: "未开始",
    connecting: "正在连接…",
    live: "直播中：听众正在收听您的传译",
    muted: "已静音：听众听到的是静音",
    reconnecting: "连接中断，正在重新连接…",
    error: "出错",
    level: "话筒音量",
    headphones: "请戴耳机，避免原声被话筒收入。",
  },
  en: {
    dialect: "Interpreting into",
    key: "Lecture key",
    start: "Start interpreting",
    stop: "Stop",
    mute: "Mute",
    unmute: "Unmute",
    idle: "Not started",
    connecting: "Connecting…",
    live: "On air: listeners hear your interpretation",
    muted: "Muted: listeners hear silence",
    reconnecting: "Connection lost; reconnecting…",
    error: "Error",
    level: "Microphone level",
    headphones: "Wear headphones so the microphone does not pick up the original.",
  },
};

const STYLE = `
:host { display: block; font: 15px/1.4 system-ui, -apple-system, "PingFang SC", "Microsoft YaHei", sans-serif; color: #eee; background: #111; }
.panel { display: grid; gap: 10px; padding: 12px; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
label { display: inline-flex; align-items: center; gap: 6px; }
button, select, input { font: inherit; min-height: 40px; border-radius: 6px; border: 1px solid #444; background: #222; color: #eee; padding: 0 12px; }
button.primary { background: #c22; border-color: #c22; color: #fff; }
button:focus-visible, select:focus-visible, input:focus-visible { outline: 2px solid #4af; outline-offset: 2px; }
.meter { position: relative; height: 14px; flex: 1 1 160px; min-width: 120px; background: #333; border-radius: 7px; overflow: hidden; }
.meter > div { position: absolute; inset: 0 auto 0 0; width: 0; background: linear-gradient(90deg, #3c6, #fc3 70%, #e33); transition: width .05s linear; }
.status { font-weight: 600; }
.status.error { color: #f77; }
.hint { opacity: .75; font-size: .9em; }
`;

/** The interpreter element. */
export class JiangtangInterpreter extends HTMLElement {
  private root: ShadowRoot;
  private el: Record<string, HTMLElement> = {};
  private _state: InterpreterState = "idle";
  private mic: MediaStream | null = null;
  private pc: RTCPeerConnection | null = null;
  private session: string | null = null;
  private retry = 0;
  private retryTimer = 0;
  private meterFrame = 0;
  private analyser: AnalyserNode | null = null;
  private audioCtx: AudioContext | null = null;
  private running = false;
  /** Latest microphone level, 0..1 (RMS). */
  level = 0;

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
  }

  /** Current state: idle, connecting, live, muted, reconnecting, error. */
  get state(): InterpreterState {
    return this._state;
  }

  private get t() {
    return TEXTS[(this.getAttribute("ui") as Locale) === "en" ? "en" : "zh"];
  }

  private server(): string {
    return (this.getAttribute("server") ?? location.origin).replace(/\/$/, "");
  }

  private stream(): string {
    return this.getAttribute("stream") ?? "";
  }

  connectedCallback(): void {
    if (this.el.panel) return;
    const t = this.t;
    const style = document.createElement("style");
    style.textContent = STYLE;
    this.root.append(style);
    const player = document.createElement("jiangtang-player");
    player.setAttribute("server", this.server());
    player.setAttribute("stream", this.stream());
    player.setAttribute("mode", "webrtc");
    player.setAttribute("autoplay", "");
    if (this.getAttribute("ui")) player.setAttribute("ui", this.getAttribute("ui")!);
    this.root.append(player);
    const panel = this.make("div", "panel", this.root);
    const row1 = this.make("div", "row", panel);
    const dl = this.make("label", "", row1);
    dl.append(t.dialect);
    const select = this.make("select", "dialect", dl) as HTMLSelectElement;
    const kl = this.make("label", "", row1);
    kl.append(t.key);
    const key = this.make("input", "key", kl) as HTMLInputElement;
    key.type = "password";
    key.autocomplete = "off";
    const row2 = this.make("div", "row", panel);
    const start = this.make("button", "start primary", row2) as HTMLButtonElement;
    start.textContent = t.start;
    start.onclick = () => (this.running ? this.stop() : this.start());
    const mute = this.make("button", "mute", row2) as HTMLButtonElement;
    mute.textContent = t.mute;
    mute.disabled = true;
    mute.onclick = () => this.setMuted(this._state !== "muted");
    const meter = this.make("div", "meter", row2);
    meter.setAttribute("role", "meter");
    meter.setAttribute("aria-label", t.level);
    meter.setAttribute("aria-valuemin", "0");
    meter.setAttribute("aria-valuemax", "100");
    this.el.level = this.make("div", "", meter);
    this.el.meter = meter;
    this.make("div", "status", panel).setAttribute("role", "status");
    this.make("div", "hint", panel).textContent = t.headphones;
    this.loadDialects(select);
    this.render();
  }

  disconnectedCallback(): void {
    this.stop();
  }

  private make(tag: string, cls: string, parent: Node): HTMLElement {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    parent.appendChild(e);
    const first = cls.split(" ")[0];
    if (first) this.el[first] = e;
    return e;
  }

  private async loadDialects(select: HTMLSelectElement): Promise<void> {
    try {
      const r = await fetch(`${this.server()}/api/v1/dialects`);
      const list: { lang: string; name: string }[] = (await r.json()).dialects;
      for (const d of list) {
        const o = document.createElement("option");
        o.value = d.lang;
        o.textContent = d.name;
        select.appendChild(o);
      }
    } catch {
      /* the relay answers with the default list; leave the attribute's dialect */
    }
    const want = this.getAttribute("lang");
    if (want && ![...select.options].some((o) => o.value === want)) {
      const o = document.createElement("option");
      o.value = o.textContent = want;
      select.appendChild(o);
    }
    if (want) select.value = want;
  }

  private setState(s: InterpreterState, error?: string): void {
    this._state = s;
    this.render(error);
    this.dispatchEvent(new CustomEvent("statechange", { detail: { state: s, error }, bubbles: true, composed: true }));
  }

  private render(error?: string): void {
    const t = this.t;
    const status = this.el.status;
    if (!status) return;
    status.textContent = this._state === "error" ? `${t.error}: ${error ?? ""}` : t[this._state];
    status.classList.toggle("error", this._state === "error");
    (this.el.start as HTMLButtonElement).textContent = this.running ? t.stop : t.start;
    (this.el.mute as HTMLButtonElement).disabled = !this.running;
    (this.el.mute as HTMLButtonElement).textContent = this._state === "muted" ? t.unmute : t.mute;
    (this.el.dialect as HTMLSelectElement).disabled = this.running;
    (this.el.key as HTMLInputElement).disabled = this.running;
  }

  /** Opens the microphone and starts publishing the chosen dialect. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.retry = 0;
    this.setState("connecting");
    try {
      this.mic = await navigator.mediaDevices.getUserMedia({
        // A booth microphone: no noise suppression or gain riding on the interpreter's voice.
        audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false },
        video: false,
      });
    } catch (e) {
      this.running = false;
      this.setState("error", String(e));
      return;
    }
    this.startMeter(this.mic);
    await this.connect();
  }

  /** Stops publishing (the dialect goes on as silence for listeners) and closes the mic. */
  stop(): void {
    this.running = false;
    window.clearTimeout(this.retryTimer);
    this.hangUp();
    cancelAnimationFrame(this.meterFrame);
    this.audioCtx?.close().catch(() => undefined);
    this.audioCtx = null;
    this.mic?.getTracks().forEach((t) => t.stop());
    this.mic = null;
    this.level = 0;
    if (this.el.level) this.el.level.style.width = "0";
    this.setState("idle");
  }

  /** Mutes or unmutes the microphone; while muted, listeners hear silence. */
  setMuted(muted: boolean): void {
    if (!this.mic) return;
    for (const t of this.mic.getAudioTracks()) t.enabled = !muted;
    if (this._state === "live" || this._state === "muted") this.setState(muted ? "muted" : "live");
  }

  private hangUp(): void {
    whipDelete(this.session);
    this.session = null;
    this.pc?.close();
    this.pc = null;
  }

  private async connect(): Promise<void> {
    if (!this.running || !this.mic) return;
    this.hangUp();
    const lang = (this.el.dialect as HTMLSelectElement).value || this.getAttribute("lang") || "";
    const key = (this.el.key as HTMLInputElement).value;
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of this.mic.getAudioTracks()) addSendTrack(pc, track);
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        this.retry = 0;
        const muted = this.mic?.getAudioTracks().some((t) => !t.enabled);
        this.setState(muted ? "muted" : "live");
      } else if (["failed", "disconnected", "closed"].includes(pc.connectionState)) {
        this.reconnectLater();
      }
    };
    try {
      const url = `${this.server()}/whip/${encodeURIComponent(this.stream())}?lang=${encodeURIComponent(lang)}`;
      this.session = await whipOffer(pc, url, key);
    } catch (e) {
      // Wrong key, dialect taken, not acceptable: retrying will not help. Not live yet or
      // the relay busy: try again.
      if (e instanceof WhipError && !e.retryable) {
        this.running = false;
        this.hangUp();
        this.setState("error", e.message);
      } else {
        this.reconnectLater(e instanceof WhipError ? e.message : String(e));
      }
    }
  }

  private reconnectLater(why?: string): void {
    if (!this.running) return;
    this.setState("reconnecting", why);
    window.clearTimeout(this.retryTimer);
    this.retry++;
    this.retryTimer = window.setTimeout(() => this.connect(), Math.min(1000 * this.retry, 10000));
  }

  private startMeter(stream: MediaStream): void {
    const ctx = new AudioContext();
    this.audioCtx = ctx;
    const an = ctx.createAnalyser();
    an.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(an);
    this.analyser = an;
    const buf = new Float32Array(an.fftSize);
    const tick = () => {
      an.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      const muted = this.mic?.getAudioTracks().some((t) => !t.enabled) ?? false;
      this.level = muted ? 0 : Math.sqrt(sum / buf.length);
      const pct = Math.min(100, Math.round(this.level * 300));
      this.el.level.style.width = `${pct}%`;
      this.el.meter.setAttribute("aria-valuenow", String(pct));
      this.meterFrame = requestAnimationFrame(tick);
    };
    tick();
  }
}
