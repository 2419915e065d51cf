// Publishing over WHIP (RFC 9725) from the browser: one POST of an SDP offer (the relay
// answers with its candidates, so no trickle is needed), one DELETE at the end. Used by the
// interpreter's page (a microphone as a dialect) and by a sub-venue asking back (its camera
// and microphone to the main hall).

/** The relay refused the offer: `status` is the HTTP status, the message its error. */
export class WhipError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "WhipError";
  }

  /** Whether trying again could help (not live yet, relay busy), unlike a wrong key or an
   *  offer the relay cannot take. */
  get retryable(): boolean {
    return ![400, 401, 403, 406, 415].includes(this.status);
  }
}

type Codec = NonNullable<ReturnType<typeof RTCRtpSender.getCapabilities>>["codecs"][number];

/** Adds `track` to `pc` to send only (with `encoding`'s limits, e.g. a maximum bitrate); a
 *  camera's track prefers H.264 with packetization-mode 1, what the relay forwards to every
 *  viewer without transcoding. */
export function addSendTrack(pc: RTCPeerConnection, track: MediaStreamTrack, stream?: MediaStream, encoding?: RTCRtpEncodingParameters): RTCRtpTransceiver {
  const tr = pc.addTransceiver(track, { direction: "sendonly", streams: stream ? [stream] : [], sendEncodings: encoding ? [encoding] : undefined });
  if (track.kind === "video") preferH264(tr);
  return tr;
}

/** Puts H.264 with packetization-mode 1 first in the transceiver's codecs (constrained
 *  baseline before other profiles), keeping the rest behind it. No-op where the browser
 *  cannot reorder codecs or has no such H.264. */
export function preferH264(tr: RTCRtpTransceiver): void {
  const caps = typeof RTCRtpSender !== "undefined" && RTCRtpSender.getCapabilities ? RTCRtpSender.getCapabilities("video") : null;
  if (!caps || typeof tr.setCodecPreferences !== "function") return;
  const mode1 = (c: Codec) => c.mimeType.toLowerCase() === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine ?? "");
  const baseline = (c: Codec) => /profile-level-id=42e0/i.test(c.sdpFmtpLine ?? "");
  const h264 = caps.codecs.filter(mode1).sort((a, b) => Number(baseline(b)) - Number(baseline(a)));
  if (h264.length === 0) return;
  try {
    tr.setCodecPreferences([...h264, ...caps.codecs.filter((c) => !mode1(c))]);
  } catch {
    /* an older browser that refuses the list: its own order, the relay picks H.264 anyway */
  }
}

/** Offers `pc`'s transceivers to the WHIP endpoint `url` (with `token` as the bearer, when
 *  given) and applies the answer. Returns the session's absolute address (for DELETE), or
 *  null when the relay gave none. Throws a [`WhipError`] for a refusal. */
export async function whipOffer(pc: RTCPeerConnection, url: string, token?: string | null): Promise<string | null> {
  await pc.setLocalDescription(await pc.createOffer());
  const headers: Record<string, string> = { "Content-Type": "application/sdp" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(url, { method: "POST", headers, body: pc.localDescription?.sdp ?? "" });
  if (resp.status !== 201) {
    let message = `HTTP ${resp.status}`;
    try {
      message = (await resp.json()).error ?? message;
    } catch {
      /* not JSON */
    }
    throw new WhipError(resp.status, message);
  }
  const loc = resp.headers.get("Location");
  const location = loc ? new URL(loc, new URL(url, window.location.href)).href : null;
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
  } catch (e) {
    // An answer this browser cannot take: the relay's session would wait for nothing.
    whipDelete(location);
    throw e;
  }
  return location;
}

/** Ends a WHIP session (also when the page is being closed): its address is its
 *  capability, so no credentials (a keepalive request may not need a preflight). */
export function whipDelete(location: string | null): void {
  if (!location) return;
  fetch(location, { method: "DELETE", keepalive: true }).catch(() => undefined);
}
