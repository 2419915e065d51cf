// Playback engines: WebRTC over WHEP, LL-HLS (hls.js, or the browser's own HLS on
// Safari/iOS), and audio-only HLS of one dialect. Each attaches to a <video> element and
// reports failure through `onFailure`; the player decides what to do next.
import Hls, { ErrorDetails, ErrorTypes, Events } from "hls.js";

export type Mode = "webrtc" | "hls" | "audio";

export interface Engine {
  readonly mode: Mode;
  start(): Promise<void>;
  stop(): void;
  setDialect(lang: string): Promise<void>;
  /** Seconds behind the live edge, when the engine can tell. */
  latency(): Promise<number | null>;
  /** How the link is doing, as far as the engine can tell (reported by a site's player). */
  link(): Promise<LinkStats>;
}

/** A player's link figures: receive rate, packet loss (WebRTC), round trip (WebRTC). */
export interface LinkStats {
  kbps?: number;
  loss?: number;
  rtt?: number;
}

export interface EngineOptions {
  server: string;
  stream: string;
  lang: string | null;
  video: HTMLVideoElement;
  onFailure: (reason: string, fatal: boolean) => void;
  onPlaying: () => void;
  /** The picture stalled or froze: the network cannot keep up with the stream. */
  onStall?: () => void;
  /** WebRTC only: an answer without a picture (sound only) is a failure, because another
   *  engine can bring the picture. Without it the engine plays the sound alone. */
  needPicture?: boolean;
  /** HLS only: start on the smallest picture the lecture offers (a weak link). */
  smallest?: boolean;
  /** The playback token of a lecture that needs one (`?token=` on every request). */
  token?: string | null;
  /** The relay refused to play this lecture (401/403): `reason` is its code
   *  (token_missing, token_expired, token_invalid, token_other_lecture). */
  onDenied?: (reason: string) => void;
}

/** The relay refused playback: no token, or one that does not do. Trying another engine
 *  would be refused the same way. */
export class DeniedError extends Error {
  constructor(readonly reason: string) {
    super(`playback refused: ${reason}`);
    this.name = "DeniedError";
  }
}

/** `url` with the playback token in its query. */
export function withToken(url: string, token: string | null | undefined): string {
  if (!token) return url;
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/** The reason code of a refusal's JSON body, or one guessed from the status. */
export function denialReason(status: number, body: string): string {
  try {
    const r = JSON.parse(body)?.reason;
    if (typeof r === "string") return r;
  } catch {
    /* not JSON */
  }
  return status === 401 ? "token_missing" : "token_invalid";
}

/** The relay answered with sound only: this browser offered no video codec it sends
 *  (H.264), e.g. Firefox without its OpenH264 plugin. */
export class NoPictureError extends Error {
  constructor() {
    super("no picture over WebRTC in this browser: it offers no H.264 video");
    this.name = "NoPictureError";
  }
}

/** Whether an SDP answer accepted a video m-section (a rejected one has port 0). */
export function answerHasVideo(sdp: string): boolean {
  return sdp.split(/\r?\n/).some((l) => /^m=video [1-9]/.test(l));
}

export function webrtcAvailable(): boolean {
  return typeof RTCPeerConnection === "function";
}

export function nativeHls(video: HTMLVideoElement): boolean {
  return video.canPlayType("application/vnd.apple.mpegurl") !== "";
}

/** WebRTC playback: one POST of an SDP offer, one DELETE at the end. */
export class WhepEngine implements Engine {
  readonly mode: Mode = "webrtc";
  private pc: RTCPeerConnection | null = null;
  private session: string | null = null;
  private connectTimer = 0;
  private statsTimer = 0;
  /** The answer brought sound only (see NoPictureError). */
  soundOnly = false;

  constructor(private o: EngineOptions) {}

  async start(): Promise<void> {
    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      this.o.video.srcObject = stream;
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        window.clearTimeout(this.connectTimer);
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        this.o.onFailure(`WebRTC ${pc.connectionState}`, false);
      } else if (pc.connectionState === "disconnected") {
        this.o.onFailure("WebRTC disconnected", false);
      }
    };
    this.o.video.addEventListener("playing", this.o.onPlaying);
    await pc.setLocalDescription(await pc.createOffer());
    const lang = this.o.lang ? `?lang=${encodeURIComponent(this.o.lang)}` : "";
    const url = withToken(`${this.o.server}/whep/${encodeURIComponent(this.o.stream)}${lang}`, this.o.token);
    const resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription?.sdp ?? "",
    });
    if (resp.status === 401 || resp.status === 403) {
      throw new DeniedError(denialReason(resp.status, await resp.text()));
    }
    if (resp.status !== 201) {
      // 404: not live, 503: WebRTC full: both mean "use HLS", not "retry WebRTC".
      throw new Error(`WHEP answered ${resp.status}`);
    }
    this.session = resp.headers.get("Location");
    const answer = await resp.text();
    this.soundOnly = !answerHasVideo(answer);
    // Known from the answer itself: no need to wait for ICE to find out there is no picture.
    if (this.soundOnly && this.o.needPicture) throw new NoPictureError();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    // Freezes (WebRTC's own count of pictures held too long), or no picture at all for a
    // while once connected, mean the link is too slow for the video.
    let freezes = 0;
    let decoded = 0;
    let still = 0;
    this.statsTimer = window.setInterval(async () => {
      if (pc !== this.pc || pc.connectionState !== "connected") return;
      let now = 0;
      let frames = 0;
      (await pc.getStats()).forEach((s: any) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          now = s.freezeCount ?? 0;
          frames = s.framesDecoded ?? 0;
        }
      });
      for (; freezes < now; freezes++) this.o.onStall?.();
      if (this.soundOnly) return;
      still = frames > decoded ? 0 : still + 1;
      decoded = frames;
      if (still >= 2) {
        still = 0;
        this.o.onStall?.();
      }
    }, 2000);
    // UDP blocked or unreachable: ICE never completes. Give up quickly so the player can
    // fall back to HLS over the HTTP port.
    this.connectTimer = window.setTimeout(() => {
      if (pc === this.pc && pc.connectionState !== "connected") {
        this.o.onFailure("WebRTC did not connect (UDP blocked?)", true);
      }
    }, 6000);
  }

  stop(): void {
    window.clearTimeout(this.connectTimer);
    window.clearInterval(this.statsTimer);
    this.o.video.removeEventListener("playing", this.o.onPlaying);
    if (this.session) {
      const url = `${this.o.server}${this.session}`;
      this.session = null;
      fetch(url, { method: "DELETE", keepalive: true }).catch(() => undefined);
    }
    this.pc?.close();
    this.pc = null;
    this.o.video.srcObject = null;
  }

  async setDialect(lang: string): Promise<void> {
    if (!this.session) return;
    const r = await fetch(`${this.o.server}${this.session}/dialect`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ lang }),
    });
    if (r.status !== 204) throw new Error(`dialect switch answered ${r.status}`);
  }

  private lastBytes: { at: number; bytes: number; lost: number; received: number } | null = null;

  async link(): Promise<LinkStats> {
    if (!this.pc) return {};
    let bytes = 0;
    let lost = 0;
    let received = 0;
    let rtt: number | undefined;
    (await this.pc.getStats()).forEach((s: any) => {
      if (s.type === "inbound-rtp") {
        bytes += s.bytesReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        received += s.packetsReceived ?? 0;
      }
      if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
        rtt = s.currentRoundTripTime * 1000;
      }
    });
    const now = performance.now();
    const prev = this.lastBytes;
    this.lastBytes = { at: now, bytes, lost, received };
    if (!prev || now <= prev.at) return { rtt };
    const packets = received - prev.received + (lost - prev.lost);
    return {
      kbps: ((bytes - prev.bytes) * 8) / (now - prev.at),
      loss: packets > 0 ? ((lost - prev.lost) * 100) / packets : 0,
      rtt,
    };
  }

  async latency(): Promise<number | null> {
    if (!this.pc) return null;
    let jitter: number | null = null;
    let rtt: number | null = null;
    (await this.pc.getStats()).forEach((s: any) => {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
        jitter = s.jitterBufferDelay / s.jitterBufferEmittedCount;
      }
      if (s.type === "candidate-pair" && s.nominated && typeof s.currentRoundTripTime === "number") {
        rtt = s.currentRoundTripTime;
      }
    });
    if (jitter === null) return null;
    return (jitter as number) + ((rtt as number | null) ?? 0) / 2;
  }
}

/** LL-HLS: hls.js where Media Source Extensions exist, the browser's own HLS elsewhere. */
export class HlsEngine implements Engine {
  readonly mode: Mode = "hls";
  hls: Hls | null = null;
  private retries = 0;
  private retryTimer = 0;

  private url: string;

  constructor(private o: EngineOptions, url = `${o.server}/hls/${encodeURIComponent(o.stream)}/index.m3u8`) {
    // The relay puts the token on every URI of the playlists it answers.
    this.url = withToken(url, o.token);
  }

  async start(): Promise<void> {
    const v = this.o.video;
    v.addEventListener("playing", this.o.onPlaying);
    if (Hls.isSupported()) {
      this.attach();
    } else if (nativeHls(v)) {
      v.src = this.url;
      v.addEventListener("loadedmetadata", this.pickNativeTrack);
      v.addEventListener("error", this.nativeError);
    } else {
      throw new Error("this browser plays neither WebRTC nor HLS");
    }
  }

  /** Steps down to the smallest picture the lecture offers (the relay's ladder), if it is
   *  not there already: what a weak link tries before sound alone. Whether it stepped. */
  stepDown(): boolean {
    const hls = this.hls;
    if (!hls) return false;
    let smallest = -1;
    hls.levels.forEach((l, i) => {
      if (!l.height) return;
      if (smallest < 0 || l.height * l.width < hls.levels[smallest].height * hls.levels[smallest].width) smallest = i;
    });
    if (smallest < 0 || hls.autoLevelCapping === smallest || hls.levels.length < 2) return false;
    hls.autoLevelCapping = smallest;
    hls.startLevel = smallest;
    hls.nextLevel = smallest;
    return true;
  }

  private attach(): void {
    const hls = new Hls({
      // On a weak link (the smallest picture), a few seconds of buffer matter more than
      // being a part behind the hall: whole segments, three behind the live edge.
      lowLatencyMode: !this.o.smallest,
      ...(this.o.smallest ? { liveSyncDurationCount: 3 } : {}),
      backBufferLength: 30,
      liveDurationInfinity: true,
      // A blocking playlist reload that cannot be answered in time gets a 503 (RFC 8216bis
      // 6.2.5.2), e.g. while the hall's encoder reconnects: keep asking instead of giving up
      // after hls.js's default two retries.
      playlistLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: 10000,
          maxLoadTimeMs: 20000,
          timeoutRetry: { maxNumRetry: 4, retryDelayMs: 0, maxRetryDelayMs: 0 },
          errorRetry: { maxNumRetry: 12, retryDelayMs: 500, maxRetryDelayMs: 4000 },
        },
      },
    });
    this.hls = hls;
    hls.on(Events.MANIFEST_PARSED, () => {
      this.retries = 0;
      if (this.o.smallest) this.stepDown();
      this.pickTrack();
    });
    hls.on(Events.AUDIO_TRACKS_UPDATED, () => this.pickTrack());
    hls.on(Events.ERROR, (_e, data) => {
      if (data.details === ErrorDetails.BUFFER_STALLED_ERROR) this.o.onStall?.();
      const status = data.response?.code;
      if (status === 401 || status === 403) {
        // Refused, not broken: retrying would be refused again.
        let body = "";
        try {
          // Playlists are loaded as text; media (array buffers) have no text to read.
          body = (data.networkDetails as XMLHttpRequest | undefined)?.responseText ?? "";
        } catch {
          /* not a text response */
        }
        hls.destroy();
        if (this.hls === hls) this.hls = null;
        this.o.onDenied?.(denialReason(status, body));
        return;
      }
      if (!data.fatal) return;
      if (data.type === ErrorTypes.MEDIA_ERROR && this.retries < 3) {
        this.retries++;
        hls.recoverMediaError();
        return;
      }
      // Network trouble or a publisher gap that outlasted hls.js's own retries: start
      // again shortly, with a growing pause.
      this.o.onFailure(`HLS ${data.details}`, false);
      this.retries++;
      const delay = Math.min(1000 * this.retries, 8000);
      window.clearTimeout(this.retryTimer);
      this.retryTimer = window.setTimeout(() => {
        if (this.hls !== hls) return;
        hls.destroy();
        this.attach();
      }, delay);
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

  private nativeError = (): void => {
    // The browser's own HLS does not say why: ask once whether the relay refuses us.
    fetch(this.url, { cache: "no-store" })
      .then(async (r) => {
        if (r.status === 401 || r.status === 403) this.o.onDenied?.(denialReason(r.status, await r.text()));
        else this.retryNative();
      })
      .catch(() => this.retryNative());
  };

  private retryNative(): void {
    this.o.onFailure("HLS playback error", false);
    window.setTimeout(() => {
      this.o.video.src = this.url;
      this.o.video.play().catch(() => undefined);
    }, 2000);
  }

  stop(): void {
    window.clearTimeout(this.retryTimer);
    const v = this.o.video;
    v.removeEventListener("playing", this.o.onPlaying);
    v.removeEventListener("loadedmetadata", this.pickNativeTrack);
    v.removeEventListener("error", this.nativeError);
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
    const l = this.hls?.latency;
    return typeof l === "number" && isFinite(l) ? l : null;
  }

  async link(): Promise<LinkStats> {
    const b = this.hls?.bandwidthEstimate;
    return typeof b === "number" && isFinite(b) && b > 0 ? { kbps: b / 1000 } : {};
  }
}

/** Audio only: one dialect's media playlist, for a classroom on a poor link. */
export class AudioEngine implements Engine {
  readonly mode: Mode = "audio";
  private inner: HlsEngine;

  constructor(private o: EngineOptions) {
    this.inner = new HlsEngine(o, this.url(o.lang));
  }

  private url(lang: string | null): string {
    return `${this.o.server}/hls/${encodeURIComponent(this.o.stream)}/audio-${encodeURIComponent(lang ?? "cmn")}/index.m3u8`;
  }

  start(): Promise<void> {
    return this.inner.start();
  }

  stop(): void {
    this.inner.stop();
  }

  async setDialect(lang: string): Promise<void> {
    this.o.lang = lang;
    this.inner.stop();
    this.inner = new HlsEngine(this.o, this.url(lang));
    await this.inner.start();
    this.o.video.play().catch(() => undefined);
  }

  latency(): Promise<number | null> {
    return this.inner.latency();
  }

  link(): Promise<LinkStats> {
    return this.inner.link();
  }
}
