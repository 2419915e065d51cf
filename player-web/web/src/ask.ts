// Asking back: a sub-venue whose raised hand the main hall's operator accepted is invited
// over the live channel (`{"type":"ask","id":7,"whip":"/whip/NAME?ask=7","token":"…"}`).
// On "Start speaking" its camera and microphone go to the main hall over WHIP; a small
// self-view shows what is sent, and a badge says when the operator broadcasts it to every
// viewer (`on_air`). The operator ends it (`ask_ended`), or the class does ("Stop").
// Nothing is sent before the class clicks, and nothing after it stops.
import { Texts } from "./i18n";
import { WhipError, addSendTrack, whipDelete, whipOffer } from "./whip";

/** Where the ask-back stands: none, invited (not sending yet), publishing (the main hall
 *  sees and hears the class), on_air (broadcast to everyone), ended. */
export type AskState = "none" | "invited" | "publishing" | "on_air" | "ended";

/** The invitation: the ask's id, its WHIP address (relative to the relay) and token. */
interface Invite {
  id: number;
  whip: string;
  token: string;
}

/** A camera's picture for a village link: enough to see a class, small enough to send. */
const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 25, max: 30 } };
const MAX_VIDEO_BPS = 800_000;
/** An ICE connection that does not come up within this long has failed. */
const CONNECT_MS = 15_000;
/** A call that cannot be made (relay busy, network) is tried this many times more before
 *  the class is asked to try again. A call that dropped once connected is over: the relay
 *  ends an ask whose publishing ends, and the operator can accept the hand again. */
const RETRIES = 3;
/** The "ended" note stays this long. */
const ENDED_NOTE_MS = 6000;

export interface AskOptions {
  /** The relay's address ("" for the page's own). */
  server: () => string;
  /** Told of every change of state, with the ask's id and why it ended. */
  onState: (state: AskState, previous: AskState, detail: { id: number | null; reason?: string }) => void;
  /** Sends a message on the live channel (the class declining or stopping tells the relay,
   *  which ends the ask at once). */
  send: (m: unknown) => boolean;
}

/** Whether `m` is a well-formed invitation; its WHIP address must be a path on the relay,
 *  so the token never goes anywhere else. */
function parseInvite(m: any): Invite | null {
  if (!Number.isSafeInteger(m?.id) || typeof m.whip !== "string" || typeof m.token !== "string") return null;
  if (!/^\/(?!\/)[\x21-\x7e]*$/.test(m.whip) || m.whip.includes("\\") || m.whip.length > 512) return null;
  if (!/^[\x21-\x7e]{1,512}$/.test(m.token)) return null;
  return { id: m.id, whip: m.whip, token: m.token };
}

/** The ask-back panel and its WHIP session. */
export class AskBack {
  private t!: Texts;
  private el: Record<string, HTMLElement> = {};
  private panel: HTMLElement | null = null;
  private invite: Invite | null = null;
  /** none → invited → (starting) → live → ended. */
  private phase: "none" | "invited" | "starting" | "live" | "ended" = "none";
  private onAir = false;
  private camera: MediaStream | null = null;
  private pc: RTCPeerConnection | null = null;
  private session: string | null = null;
  private retries = 0;
  private retryTimer = 0;
  private connectTimer = 0;
  private hideTimer = 0;
  private note = "";
  private _state: AskState = "none";

  constructor(private o: AskOptions) {}

  get state(): AskState {
    return this._state;
  }

  /** The ask's id, while there is one. */
  get id(): number | null {
    return this.invite?.id ?? null;
  }

  /** The panel, (re)built in the words of `t` and showing the current state. */
  render(t: Texts): HTMLElement {
    this.t = t;
    const panel = document.createElement("div");
    panel.className = "ask-back";
    panel.setAttribute("role", "region");
    panel.setAttribute("aria-label", t.askInvite);
    this.el = {};
    const make = (tag: string, cls: string, parent: HTMLElement) => {
      const e = document.createElement(tag);
      e.className = cls;
      parent.appendChild(e);
      this.el[cls.split(" ")[0]] = e;
      return e;
    };
    const self = make("video", "ask-self", panel) as HTMLVideoElement;
    self.muted = true;
    self.autoplay = true;
    self.playsInline = true;
    self.setAttribute("aria-label", t.askSelf);
    const onair = make("span", "ask-onair", panel);
    onair.textContent = t.askOnAir;
    const msg = make("p", "ask-msg", panel);
    msg.setAttribute("role", "status");
    msg.setAttribute("aria-live", "assertive");
    const buttons = make("div", "ask-buttons", panel);
    const start = make("button", "ask-start", buttons) as HTMLButtonElement;
    start.type = "button";
    start.textContent = t.askStart;
    start.addEventListener("click", () => void this.start());
    const decline = make("button", "ask-decline", buttons) as HTMLButtonElement;
    decline.type = "button";
    decline.textContent = t.askDecline;
    decline.addEventListener("click", () => this.end("declined"));
    const stop = make("button", "ask-stop", buttons) as HTMLButtonElement;
    stop.type = "button";
    stop.textContent = t.askStop;
    stop.addEventListener("click", () => this.end("stopped"));
    if (this.camera) self.srcObject = this.camera;
    this.panel = panel;
    this.update();
    return panel;
  }

  /** A live-channel message: `ask`, `ask_ended` or `on_air`. */
  onMessage(m: any): void {
    if (m.type === "ask") {
      const invite = parseInvite(m);
      if (!invite) return;
      // The same invitation again (the channel reconnected): nothing changes. The same hand
      // accepted again after its ask ended comes with a new token: a new invitation.
      if (this.invite?.id === invite.id && this.invite.token === invite.token && this.phase !== "ended") return;
      this.closePeer();
      this.stopCamera();
      window.clearTimeout(this.hideTimer);
      this.invite = invite;
      this.onAir = false;
      this.retries = 0;
      this.note = "";
      this.phase = "invited";
      this.update();
    } else if (m.type === "ask_ended") {
      if (this.invite && m.id === this.invite.id && this.phase !== "ended") this.end("ended");
    } else if (m.type === "on_air") {
      if (!this.invite || m.id !== this.invite.id || this.phase === "ended") return;
      this.onAir = m.on === true;
      this.update();
    }
  }

  /** The player leaves the page: stop sending at once. */
  stop(): void {
    if (this.phase !== "none" && this.phase !== "ended") this.end("closed");
    window.clearTimeout(this.hideTimer);
  }

  // ---- sending ----------------------------------------------------------------------------

  private async start(): Promise<void> {
    if (this.phase !== "invited" || !this.invite) return;
    const invite = this.invite;
    this.phase = "starting";
    this.note = this.t.askConnecting;
    this.update();
    try {
      this.camera = await navigator.mediaDevices.getUserMedia({ video: VIDEO, audio: true });
    } catch (e) {
      if (this.invite !== invite || this.phase !== "starting") return;
      this.phase = "invited";
      this.note = `${this.t.askNoCamera} (${e instanceof Error ? e.name : String(e)})`;
      this.update();
      return;
    }
    // Declined or ended while the browser asked for the camera.
    if (this.invite !== invite || this.phase !== "starting") {
      this.stopCamera();
      return;
    }
    (this.el["ask-self"] as HTMLVideoElement).srcObject = this.camera;
    this.update();
    await this.connect();
  }

  private async connect(): Promise<void> {
    const invite = this.invite;
    if (!invite || !this.camera) return;
    this.closePeer();
    const pc = new RTCPeerConnection();
    this.pc = pc;
    for (const track of this.camera.getTracks()) {
      addSendTrack(pc, track, this.camera, track.kind === "video" ? { maxBitrate: MAX_VIDEO_BPS } : undefined);
    }
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === "connected") {
        window.clearTimeout(this.connectTimer);
        this.retries = 0;
        this.phase = "live";
        this.note = this.t.askLive;
        this.update();
      } else if (pc.connectionState === "failed") {
        this.dropped(this.t.askFailed);
      }
    };
    let session: string | null;
    try {
      session = await whipOffer(pc, `${this.o.server()}${invite.whip}`, invite.token);
    } catch (e) {
      if (pc !== this.pc) return;
      // Refused: the invitation is no longer good (ended, token used up), or the offer
      // cannot be taken. Anything else (busy, network): try again a few times.
      if (e instanceof WhipError && (!e.retryable || [404, 409, 410].includes(e.status))) {
        this.note = `${this.t.askFailed}: ${e.message}`;
        this.end("refused");
      } else {
        this.dropped(`${this.t.askFailed}: ${e instanceof Error ? e.message : String(e)}`);
      }
      return;
    }
    if (pc !== this.pc) {
      // Ended while the offer was on its way.
      whipDelete(session);
      return;
    }
    this.session = session;
    window.clearTimeout(this.connectTimer);
    this.connectTimer = window.setTimeout(() => {
      if (pc === this.pc && pc.connectionState !== "connected") this.dropped(this.t.askFailed);
    }, CONNECT_MS);
  }

  /** The call dropped, or could not be made: a dropped call is over; one not made yet is
   *  tried again a few times, then the class may try again. */
  private dropped(why: string): void {
    if (this.phase !== "starting" && this.phase !== "live") return;
    this.note = why;
    if (this.phase === "live") {
      this.end("failed");
      return;
    }
    this.closePeer();
    if (this.retries >= RETRIES) {
      this.stopCamera();
      this.phase = "invited";
      this.retries = 0;
      this.update();
      return;
    }
    this.retries++;
    this.update();
    window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => void this.connect(), Math.min(1000 * this.retries, 5000));
  }

  /** Ends the ask here: stops sending (the WHIP session deleted), closes the camera. */
  private end(reason: string): void {
    // The class's own decision ends the ask on the relay too; the relay's does not need telling.
    if ((reason === "declined" || reason === "stopped") && this.invite) this.o.send({ type: "ask_end", id: this.invite.id });
    this.closePeer();
    this.stopCamera();
    this.phase = "ended";
    this.onAir = false;
    if (reason !== "refused" && reason !== "failed") this.note = this.t.askEnded;
    this.update(reason);
    window.clearTimeout(this.hideTimer);
    this.hideTimer = window.setTimeout(() => {
      if (this.phase === "ended" && this.panel) this.panel.hidden = true;
    }, ENDED_NOTE_MS);
  }

  /** Ends the peer connection and its WHIP session, if any. */
  private closePeer(): void {
    window.clearTimeout(this.retryTimer);
    window.clearTimeout(this.connectTimer);
    const pc = this.pc;
    this.pc = null;
    pc?.close();
    // A session whose peer is closed is over: the relay would time it out; say so now.
    whipDelete(this.session);
    this.session = null;
  }

  private stopCamera(): void {
    this.camera?.getTracks().forEach((t) => t.stop());
    this.camera = null;
    const self = this.el["ask-self"] as HTMLVideoElement | undefined;
    if (self) self.srcObject = null;
  }

  // ---- showing ----------------------------------------------------------------------------

  private update(reason?: string): void {
    const state: AskState =
      this.phase === "none"
        ? "none"
        : this.phase === "invited" || this.phase === "starting"
          ? "invited"
          : this.phase === "live"
            ? this.onAir
              ? "on_air"
              : "publishing"
            : "ended";
    const p = this.panel;
    if (p) {
      const t = this.t;
      const sending = this.phase === "starting" || this.phase === "live";
      p.hidden = this.phase === "none";
      p.setAttribute("data-ask-state", state);
      p.classList.toggle("on-air", state === "on_air");
      this.el["ask-self"].hidden = !this.camera;
      this.el["ask-onair"].hidden = state !== "on_air";
      this.el["ask-msg"].textContent =
        this.phase === "invited" ? (this.note ? `${t.askInvite} · ${this.note}` : t.askInvite) : this.note || (this.phase === "ended" ? t.askEnded : "");
      const start = this.el["ask-start"] as HTMLButtonElement;
      start.hidden = this.phase !== "invited" && this.phase !== "starting";
      start.disabled = this.phase === "starting";
      this.el["ask-decline"].hidden = this.phase !== "invited";
      this.el["ask-stop"].hidden = !sending;
    }
    if (state !== this._state) {
      const previous = this._state;
      this._state = state;
      this.o.onState(state, previous, { id: this.invite?.id ?? null, reason });
    }
  }
}
