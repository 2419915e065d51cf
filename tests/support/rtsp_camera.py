#!/usr/bin/python3
"""Local RTSP test camera: gst-rtsp-server serving a test pattern at /cam.

Usage:
    rtsp_server.py PORT [--user U --password P] [--auth basic|digest]
                        [--audio aac|pcmu|none] [--freq HZ] [--shared]
                        [--size WxH] [--fps N] [--bframes N]
                        [--resize-after SECS] [--freeze-after SECS]

Serves rtsp://127.0.0.1:PORT/cam (loopback only):
  * video: videotestsrc -> x264enc (tune=zerolatency, key-int-max=50, i.e. an
    IDR every 2 s at 25 fps; constrained baseline, or main with --bframes) ->
    rtph264pay (pt 96, SPS/PPS in-band before every IDR and in the SDP);
  * audio, one of:
      aac  : sine -> voaacenc (or avenc_aac) -> rtpmp4gpay (pt 97,
             "MPEG4-GENERIC" mode AAC-hbr, which is what retina depacketizes;
             rtpmp4apay's MP4A-LATM is *not* supported by retina);
      pcmu : sine at 8 kHz mono -> mulawenc -> rtppcmupay (static pt 0, G.711 mu-law);
      none : video only.

PORT 0 picks a free port. When the server is bound it prints exactly one line
`rtsp listening on PORT` (the real port) to stdout and flushes, so a test can
wait for that line. SIGTERM or SIGINT stops it cleanly (exit status 0).

With --user/--password every request needs credentials; --auth picks the
challenge sent in the 401 (`WWW-Authenticate: Basic` or `Digest`, default
basic). Digest uses gst_rtsp_auth_add_digest (GStreamer >= 1.16).

Needs Debian packages: python3-gi, python3-gst-1.0, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-{base,good,bad,ugly} (x264enc is in -ugly, voaacenc in
-bad) or gstreamer1.0-libav (avenc_aac). Run it with the system python3
(/usr/bin/python3), which is where python3-gi installs.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ROLE = "camera-user"


def aac_encoder():
    """Name of an AAC encoder element that exists here."""
    for name in ("voaacenc", "avenc_aac"):
        if Gst.ElementFactory.find(name) is not None:
            return name
    sys.exit("rtsp_server.py: no AAC encoder (install gstreamer1.0-plugins-bad or -libav)")


def check_elements(args):
    """Fail at start-up, not at the first DESCRIBE, if a plugin is missing."""
    needed = ["videotestsrc", "videoscale", "capsfilter", "x264enc", "rtph264pay"]
    if args.audio == "aac":
        needed += ["audiotestsrc", "audioconvert", "rtpmp4gpay"]
    elif args.audio == "pcmu":
        needed += ["audiotestsrc", "audioconvert", "mulawenc", "rtppcmupay"]
    missing = [n for n in needed if Gst.ElementFactory.find(n) is None]
    if missing:
        sys.exit(f"rtsp_server.py: missing GStreamer elements: {' '.join(missing)}")


def launch_line(args):
    """The gst-rtsp-server launch description (payloaders must be pay0, pay1, ...)."""
    width, height = args.size
    video = (
        f"videotestsrc is-live=true pattern=smpte "
        f"! video/x-raw,framerate={args.fps}/1 ! videoscale "
        f"! capsfilter name=vcaps caps=video/x-raw,width={width},height={height} "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=50 bitrate=500 "
        f"bframes={args.bframes} b-adapt=false "
        f"! video/x-h264,profile={'main' if args.bframes else 'baseline'} "
        f"! valve name=gate0 ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )
    sine = f"audiotestsrc is-live=true wave=sine freq={args.freq} volume=0.3"
    if args.audio == "aac":
        encoder = aac_encoder()
        audio = (
            f"{sine} ! audio/x-raw,rate=48000,channels=1 ! audioconvert "
            f"! {encoder} bitrate=64000 ! valve name=gate1 ! rtpmp4gpay name=pay1 pt=97"
        )
    elif args.audio == "pcmu":
        audio = (
            f"{sine} ! audio/x-raw,rate=8000,channels=1 ! audioconvert "
            f"! mulawenc ! valve name=gate1 ! rtppcmupay name=pay1 pt=0"
        )
    else:
        audio = ""
    return f"( {video} {audio} )"


def make_auth(args):
    """A GstRTSPAuth that lets only U:P (as ROLE) access and construct media."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    if args.auth == "basic":
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    else:
        auth.add_digest(args.user, args.password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    # Offering both at once would need BASIC|DIGEST, which PyGObject cannot pass
    # (the GIR types the argument as an enum and 3 is not one of its values).
    # No default token: anonymous requests get 401 with the challenge.
    return auth


def schedule_resize(media, args):
    """--resize-after seconds after a media is made (at the client's DESCRIBE,
    or once when --shared), double the picture size: x264enc then emits a new
    SPS/PPS with the next IDR."""
    width, height = args.size
    capsfilter = media.get_element().get_by_name("vcaps")
    caps = Gst.Caps.from_string(f"video/x-raw,width={width * 2},height={height * 2}")

    def resize():
        capsfilter.set_property("caps", caps)
        return GLib.SOURCE_REMOVE

    GLib.timeout_add(int(args.resize_after * 1000), resize)


def schedule_freeze(media, args):
    """--freeze-after seconds after a media is made, stop sending RTP (every valve
    drops) while the RTSP session stays up: a camera whose encoder hung."""
    def freeze():
        pipeline = media.get_element()
        for name in ("gate0", "gate1"):
            valve = pipeline.get_by_name(name)
            if valve is not None:
                valve.set_property("drop", True)
        return GLib.SOURCE_REMOVE

    GLib.timeout_add(int(args.freeze_after * 1000), freeze)


def parse_args(argv):
    p = argparse.ArgumentParser(description="local RTSP test camera serving /cam")
    p.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0 = pick a free one)")
    p.add_argument("--user", help="require this user name")
    p.add_argument("--password", help="password for --user")
    p.add_argument("--auth", choices=("basic", "digest"), default="basic",
                   help="challenge to offer when credentials are required")
    p.add_argument("--audio", choices=("aac", "pcmu", "none"), default="aac")
    p.add_argument("--freq", type=float, default=440.0, help="sine frequency in Hz")
    p.add_argument("--shared", action="store_true",
                   help="one pipeline for all clients (like a real camera); default is "
                        "a fresh pipeline per client, so each starts with a key frame")
    p.add_argument("--size", default="320x240",
                   type=lambda s: tuple(int(x) for x in s.lower().split("x", 1)))
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--resize-after", type=float, metavar="SECS",
                   help="SECS after the media is made, double the picture size "
                        "(a new SPS mid-stream: exercises parameter changes)")
    p.add_argument("--freeze-after", type=float, metavar="SECS",
                   help="SECS after the media is made, stop sending RTP but keep the "
                        "session (a hung encoder)")
    p.add_argument("--bframes", type=int, default=0,
                   help="B-frames between references (main profile; frames then arrive in "
                        "decode order with non-monotonic RTP timestamps = PTS)")
    args = p.parse_args(argv)
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    return args


def main(argv):
    args = parse_args(argv)
    Gst.init(None)
    check_elements(args)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    factory.set_shared(args.shared)
    if args.resize_after is not None:
        factory.connect("media-configure", lambda _factory, media: schedule_resize(media, args))
    if args.freeze_after is not None:
        factory.connect("media-configure", lambda _factory, media: schedule_freeze(media, args))
    if args.user is not None:
        server.set_auth(make_auth(args))
        perms = Gst.Structure.new_from_string(
            f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )
        factory.add_role_from_structure(perms)
    server.get_mount_points().add_factory("/cam", factory)

    loop = GLib.MainLoop()
    try:
        if server.attach(None) == 0:
            raise GLib.Error("attach failed")
    except GLib.Error as e:  # e.g. port in use
        sys.exit(f"rtsp_server.py: cannot listen on 127.0.0.1:{args.port}: {e.message}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)

    print(f"rtsp listening on {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
