#!/usr/bin/env python3
"""Time to the first keyframe for aiortc viewers joining one at a time and in a crowd.

    scripts/bench.sh crowd                      # or, by hand (root, loopback-only namespace):
    py=$(scripts/setup-bench-py.sh)
    unshare -n sh -c "ip link set lo up && exec $py benches/crowd.py [options]"

For each server (whepcast's release binary and, when installed, the GStreamer reference
../shared/peers/gst_whep.py, both 1280x720 at 30 fps, 2.5 Mbit/s) and each mode:

  single   one viewer at a time with nobody else watching: join, wait for its first decoded
           frame, leave, pause (--pause, longer than any keyframe rate limit);
  watched  the same, while one more viewer watches throughout (the pipeline is busy, so a join
           takes the mid-stream keyframe path, not the "first viewer after a pause" one);
  crowd    --joins viewers (default 40), one every --interval s (default 0.15); all stay
           (dropping media once they have their first frame, so this process stays light) until
           the last one has its first frame, then --hold s more (negative: each leaves at once).

it measures, per viewer, from the start of its WHEP POST: the 201 (answer), ICE connected
(aiortc's "completed"), DTLS connected (connectionState "connected"), the first RTP packet, the
first RTP packet of an IDR, and the first decoded frame (which is always a keyframe: aiortc cannot
decode anything before one). It prints median, p95, min and max of each, per server and mode.

Every viewer is aiortc (from PyPI, scripts/setup-bench-py.sh); offers are gathered before the POST
(loopback host candidate only), so the POST time is when the server could start.

--server-log DIR keeps each server's stderr (whepcast at WHEPCAST_LOG=whepcast=debug), and for
whepcast matches its lines to the viewers: when each viewer asked for an IDR (ICE up), when the
IDR it got was encoded, and whether that IDR was forced for it, periodic or another joiner's.
"""
import argparse
import asyncio
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import aioice.ice
import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import RTCRtpReceiver

# aiortc skips loopback when gathering; in a loopback-only namespace it is all there is.
aioice.ice.get_host_addresses = lambda *a, **k: ["127.0.0.1"]

ROOT = Path(__file__).resolve().parent.parent
GST = ROOT.parent / "shared" / "peers" / "gst_whep.py"
STEPS = ["answer", "ice", "dtls", "rtp", "rtp_key", "frame"]
TITLES = {
    "answer": "201",
    "ice": "ICE connected",
    "dtls": "DTLS connected",
    "rtp": "first RTP",
    "rtp_key": "first IDR packet",
    "frame": "first frame",
    "live": "live frame",
    "stale": "first frame's lag",
}

now = time.perf_counter


class _DecodeErrors(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (a stream that does not start at an IDR, or
    P-frames that do not follow the IDR they were sent after)."""
    count = 0

    def emit(self, record):
        if "failed to decode" in record.getMessage():
            _DecodeErrors.count += 1


logging.getLogger("aiortc.rtcrtpreceiver").addHandler(_DecodeErrors())
logging.getLogger("aiortc.rtcrtpreceiver").setLevel(logging.WARNING)
logging.getLogger("aiortc.rtcrtpreceiver").propagate = False


# --- marks from inside aiortc ---------------------------------------------------------------

def _h264_is_key(payload: bytes) -> bool:
    """Whether an RTP payload (RFC 6184) carries an IDR slice or an SPS."""
    if not payload:
        return False
    t = payload[0] & 0x1F
    if t in (5, 7):
        return True
    if t == 28 and len(payload) > 1:  # FU-A
        return (payload[1] & 0x1F) == 5
    if t == 24:  # STAP-A: walk the aggregated units
        i = 1
        while i + 2 < len(payload):
            size = int.from_bytes(payload[i:i + 2], "big")
            if i + 2 < len(payload) and payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
    return False


_orig_handle_rtp = RTCRtpReceiver._handle_rtp_packet


async def _handle_rtp(self, packet, arrival_time_ms):
    marks = getattr(self, "_crowd_marks", None)
    if marks is not None:
        t = now()
        marks.setdefault("rtp", t)
        if "rtp_key" not in marks and _h264_is_key(packet.payload):
            marks["rtp_key"] = t
    return await _orig_handle_rtp(self, packet, arrival_time_ms)


RTCRtpReceiver._handle_rtp_packet = _handle_rtp


def stop_reading_media(receiver):
    """From now on, drop this viewer's SRTP packets as they arrive, before decryption: a viewer
    that has its first frame keeps the server sending to it (and ICE alive) but costs this
    process next to nothing (40 viewers decoding 720p would saturate the machine)."""
    conn = receiver.transport.transport._connection  # aioice's Connection
    deliver = conn.data_received

    def data_received(data, component):
        # SRTP goes (SRTCP stays: packet types 192-223 in its second byte), as do DTLS and the
        # rest; STUN never gets here (aioice answers it before).
        if 127 < data[0] < 192 and len(data) > 1 and not (192 <= data[1] <= 223):
            return
        deliver(data, component)
    conn.data_received = data_received


# --- one viewer ------------------------------------------------------------------------------

async def join(session: aiohttp.ClientSession, url: str,
               stay: asyncio.Event | None = None, firsts: list | None = None,
               timeout: float = 10.0, check_frames: int = 0) -> dict:
    """Joins `url` as a WHEP viewer; returns ms from the POST to each step (missing: None).

    Leaves at the first frame (after `check_frames` more), or with `stay`, stays (dropping
    media) until the event is set."""
    pc = RTCPeerConnection()
    marks: dict = {}
    first_frame = asyncio.get_running_loop().create_future()
    tr = pc.addTransceiver("video", direction="recvonly")
    tr.receiver._crowd_marks = marks
    location = None

    @pc.on("iceconnectionstatechange")
    def _ice():
        if pc.iceConnectionState in ("completed", "connected"):
            marks.setdefault("ice", now())

    @pc.on("connectionstatechange")
    def _conn():
        if pc.connectionState == "connected":
            marks.setdefault("dtls", now())

    @pc.on("track")
    def _track(track):
        async def pull():
            try:
                frame = await track.recv()
                marks["frame"] = now()
                marks["frame_is_key"] = bool(getattr(frame, "key_frame", True))
                # Decode a few more to check the frames after the first one follow it, and
                # how far behind the live picture the first one was (see `staleness`).
                seen = [(marks["frame"], frame.pts)]
                for _ in range(check_frames):
                    f = await track.recv()
                    seen.append((now(), f.pts))
                marks["seen"] = seen
            except Exception as e:  # noqa: BLE001 (the track ended first)
                if not first_frame.done():
                    first_frame.set_exception(e)
                return
            if not first_frame.done():
                first_frame.set_result(None)
        asyncio.ensure_future(pull())

    try:
        await pc.setLocalDescription(await pc.createOffer())  # gathers (loopback: at once)
        t0 = now()
        marks["t0_wall"] = time.time()
        async with session.post(url, data=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"}) as r:
            body = await r.text()
            marks["answer"] = now()
            if r.status != 201:
                raise RuntimeError(f"POST {url}: {r.status} {body[:200]}")
            location = r.headers.get("Location")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        try:
            await asyncio.wait_for(first_frame, timeout)
        except (asyncio.TimeoutError, Exception) as e:  # noqa: BLE001
            marks["error"] = repr(e)[:120]
        if firsts is not None:
            firsts.append(1)
        if stay is not None:
            stop_reading_media(tr.receiver)
            await stay.wait()
    finally:
        if location:
            try:
                target = location if location.startswith("http") else str(
                    aiohttp.client.URL(url).join(aiohttp.client.URL(location)))
                async with session.delete(target) as r:
                    await r.read()
            except Exception:  # noqa: BLE001 (closing anyway)
                pass
        await pc.close()
    out = {k: (round((marks[k] - t0) * 1000, 1) if k in marks else None) for k in STEPS}
    out["t0_wall"] = marks.get("t0_wall")
    if marks.get("seen") and len(marks["seen"]) > 2:
        out["stale"], live = staleness(marks["seen"])
        out["live"] = round((live - t0) * 1000, 1)
    out["frame_is_key"] = marks.get("frame_is_key")
    out["error"] = marks.get("error")
    return out


def staleness(seen):
    """How old the first decoded picture was next to the live stream, and when the viewer
    reached live. Frames sent late (a cached keyframe and the frames after it, replayed at
    once) arrive faster than their RTP timestamps advance; live frames arrive as fast. So the
    media time gained over wall time, at its largest, is the first picture's lag (ms), and
    the first frame within a frame interval of that largest lag is where live starts."""
    (w0, p0) = seen[0]
    ahead = [((p - p0) / 90.0) - (w - w0) * 1000 for w, p in seen]
    lag = max(ahead)
    live = next(w for (w, _), a in zip(seen, ahead) if a >= lag - 20)
    return round(lag, 1), live


# --- the servers -----------------------------------------------------------------------------

class Server:
    def __init__(self, name, argv, env=None, log_path=None):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                                     env={**os.environ, **(env or {})}, text=True)
        deadline = time.time() + 30
        out = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{name} exited: {self.proc.wait()}")
            out += line
            m = re.search(r"(http://[\d.]+:\d+)", out)
            if m:
                self.base = m.group(1)
                self.whep = self.base + "/whep"
                return
        raise RuntimeError(f"{name} did not start")

    def get_json(self, path):
        with urllib.request.urlopen(self.base + path, timeout=5) as r:
            return json.loads(r.read())

    def counters(self):
        """What the server encoded so far (whepcast only): (keyframes, forced, bytes)."""
        try:
            s = self.get_json("/api/streams")
            s = s[0] if isinstance(s, list) else (s.get("streams") or [s])[0]
            return s.get("keyframes"), s.get("forced_keyframes"), s.get("bytes_encoded")
        except Exception:  # noqa: BLE001
            return None, None, None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


def start_whepcast(args, log_dir, binary):
    argv = [binary, "serve", "--listen", "127.0.0.1:0", *args.whepcast_arg]
    env = {"WHEPCAST_LOG": "whepcast=debug" if log_dir else "whepcast=info,error"}
    return Server("whepcast", argv, env, log_dir and log_dir / "server.log")


def start_gst(args, log_dir):
    argv = ["/usr/bin/python3", str(GST), "--listen", f"127.0.0.1:{free_port()}",
            "--size", "1280x720", "--fps", "30", "--bitrate", "2500"]
    return Server("gst", argv, None, log_dir and log_dir / "server.log")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- modes -----------------------------------------------------------------------------------

async def run_single(server, args, watched: bool):
    async with aiohttp.ClientSession() as http:
        stop_bg = asyncio.Event()
        bg = None
        if watched:
            bg = asyncio.ensure_future(join(http, server.whep, stay=stop_bg))
            await asyncio.sleep(1.0)
        await asyncio.sleep(args.pause)
        rows = []
        for _ in range(args.single_joins):
            rows.append(await join(http, server.whep, check_frames=args.check_frames))
            await asyncio.sleep(args.pause)
        stop_bg.set()
        if bg:
            await bg
        return rows


async def run_crowd(server, args):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.sleep(args.pause)
        start = now()
        tasks = []
        stay = asyncio.Event() if args.hold >= 0 else None
        firsts: list = []
        for i in range(args.joins):
            delay = start + i * args.interval - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(join(http, server.whep, stay=stay, firsts=firsts,
                                                        check_frames=args.check_frames)))
        if stay is not None:
            # Everyone watches until the last one has its first frame (or gave up), + hold.
            while len(firsts) + sum(t.done() for t in tasks) < args.joins:
                await asyncio.sleep(0.05)
            await asyncio.sleep(max(args.hold, 0))
            stay.set()
        return await asyncio.gather(*tasks)


# --- reporting -------------------------------------------------------------------------------

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def table_header(steps=None):
    steps = steps or STEPS
    print("| server | mode | n | " + " | ".join(TITLES[s] for s in steps) + " |")
    print("|---|---|---|" + "---|" * len(steps))


def table_row(server, mode, rows, extra="", steps=None):
    cells = []
    for s in steps or STEPS:
        xs = [r[s] for r in rows if r.get(s) is not None]
        if not xs:
            cells.append("-")
            continue
        cells.append(f"{statistics.median(xs):.0f} / {pct(xs, 0.95):.0f} / {min(xs):.0f} / {max(xs):.0f}")
    fails = sum(1 for r in rows if r["frame"] is None)
    n = f"{len(rows)}" + (f" ({fails} no frame)" if fails else "")
    print(f"| {server} | {mode}{extra} | {n} | " + " | ".join(cells) + " |", flush=True)


# --- whepcast's log, matched to the viewers ----------------------------------------------------

LOG_LINE = re.compile(r"^(\S+Z)\s+\w+\s+(.*)$")


def parse_ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def analyse_whepcast_log(path, rows, label):
    """Per viewer: ask (ICE up), the IDR it got (number, when encoded), the wait in between."""
    text = Path(path).read_text(errors="replace")
    clean = re.sub(r"\x1b\[[0-9;]*m", "", text)
    asks, outs, encoded = [], [], {}
    for line in clean.splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        t, msg = parse_ts(m.group(1)), m.group(2)
        if mm := re.search(r"ICE connected ([\d.]+)(m?s|µs) after the offer", msg):
            asks.append((t, t - dur(mm.group(1), mm.group(2))))
        elif mm := re.search(r"keyframe (\d+) going out ([\d.]+)(m?s|µs) after the offer", msg):
            outs.append((t, t - dur(mm.group(2), mm.group(3)), int(mm.group(1)), "replayed" in msg))
        elif mm := re.search(r"keyframe (\d+) took ([\d.]+)(m?s|µs)", msg):
            encoded[int(mm.group(1))] = t  # encoded (and published) at t
    # Match each viewer's POST (wall clock) to the nearest offer time the server logged.
    def nearest(items, t0):
        # The first line for that offer: a viewer that later falls behind logs another
        # "keyframe going out" for the same offer when it resynchronises.
        near = [it for it in items if abs(it[1] - t0) < 0.05]
        return min(near, key=lambda it: it[0], default=None)

    waits, replayed, details = [], [], []
    for r in rows:
        if r.get("t0_wall") is None:
            continue
        a, o = nearest(asks, r["t0_wall"]), nearest(outs, r["t0_wall"])
        if not a or not o:
            continue
        idr = o[2]
        enc = encoded.get(idr)
        if enc is None:
            continue
        wait = (enc - a[0]) * 1000
        (replayed if o[3] else waits).append(wait)
        details.append((r["t0_wall"], round((a[0] - a[1]) * 1000), idr, round(wait), r["frame"]))
    if not details:
        print(f"  ({label}: no whepcast debug lines matched)")
        return
    shared = {}
    for d in details:
        shared.setdefault(d[2], 0)
        shared[d[2]] += 1
    line = f"  {label}: {len(shared)} IDRs started {len(details)} joins"
    if waits:
        line += (f"; ICE up (the ask) -> its IDR encoded: median {statistics.median(waits):.0f} ms, "
                 f"p95 {pct(waits, 0.95):.0f}, max {max(waits):.0f} (n={len(waits)})")
    if replayed:
        line += (f"; {len(replayed)} started from a replayed IDR encoded a median "
                 f"{-statistics.median(replayed):.0f} ms before they were ready")
    resyncs = clean.count("resyncing on next keyframe")
    if resyncs:
        line += f"; {resyncs} resyncs (viewers fell 8 frames behind: machine overloaded)"
    print(line)
    if os.environ.get("CROWD_DETAIL"):
        base = details[0][0]
        print("    t(ms) ask(ms after POST) idr wait(ms) first-frame(ms)")
        for d in details:
            print(f"    {(d[0] - base) * 1000:7.0f} {d[1]:5d} {d[2]:6d} {d[3]:5d} {d[4]}")


def dur(v, unit):
    v = float(v)
    return v / 1000 if unit == "ms" else v / 1e6 if unit == "µs" else v


# --- main --------------------------------------------------------------------------------------

async def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="whepcast,gst")
    p.add_argument("--modes", default="single,watched,crowd")
    p.add_argument("--joins", type=int, default=40, help="viewers in the crowd")
    p.add_argument("--interval", type=float, default=0.15, help="s between crowd joins")
    p.add_argument("--hold", type=float, default=1.0,
                   help="crowd viewers watch until the last one has its first frame, then this many s "
                        "more; negative: each leaves at its first frame")
    p.add_argument("--single-joins", type=int, default=10)
    p.add_argument("--pause", type=float, default=0.6, help="s between single joins")
    p.add_argument("--check-frames", type=int, default=0,
                   help="decode this many frames after the first (and count decode errors)")
    p.add_argument("--rounds", type=int, default=1, help="repeat every server x mode this often")
    p.add_argument("--whepcast-bin", default=os.environ.get("WHEPCAST_BIN", str(ROOT / "target/release/whepcast")))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="another whepcast binary to measure, as server NAME (repeatable; "
                        "with --servers unset: every variant and gst)")
    p.add_argument("--whepcast-arg", action="append", default=[], help="extra argument to `whepcast serve`")
    p.add_argument("--server-log", type=Path, help="keep servers' stderr here (whepcast at debug) and analyse it")
    p.add_argument("--json", type=Path, help="write every viewer's marks here")
    args = p.parse_args()

    binaries = {"whepcast": args.whepcast_bin}
    for v in args.variant:
        name, _, path = v.partition("=")
        binaries[name] = path
    if args.variant and args.servers == p.get_default("servers"):
        args.servers = ",".join([k for k in binaries if k != "whepcast"] + ["gst"])
    servers = [s for s in args.servers.split(",") if s]
    if "gst" in servers and not (GST.exists() and Path("/usr/bin/python3").exists()):
        print("GStreamer reference not found; skipping it", file=sys.stderr)
        servers.remove("gst")
    modes = [m for m in args.modes.split(",") if m]
    if args.server_log:
        args.server_log.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; aiortc viewers; crowd = {args.joins} joins every "
          f"{args.interval * 1000:.0f} ms, "
          + ("each leaves at its first frame" if args.hold < 0 else f"all stay until the last has its first frame + {args.hold} s")
          + f"; single = {args.single_joins} joins")
    print("\nms from the POST: median / p95 / min / max\n")
    steps = STEPS + (["live", "stale"] if args.check_frames >= 2 else [])
    table_header(steps)
    everything = []
    for rnd in range(args.rounds):
        for name in servers:
            for mode in modes:
                log_dir = args.server_log and args.server_log / f"{name}-{mode}-{rnd}"
                if log_dir:
                    log_dir.mkdir(parents=True, exist_ok=True)
                server = (start_gst(args, log_dir) if name == "gst"
                          else start_whepcast(args, log_dir, binaries[name]))
                try:
                    await asyncio.sleep(1.0)  # let the pipeline settle
                    k0 = server.counters()
                    errors0 = _DecodeErrors.count
                    if mode == "crowd":
                        rows = await run_crowd(server, args)
                    else:
                        rows = await run_single(server, args, watched=(mode == "watched"))
                    k1 = server.counters()
                finally:
                    server.stop()
                extra = ""
                if k0[0] is not None and k1[0] is not None:
                    extra = f" (IDRs {k1[0] - k0[0]}, forced {k1[1] - k0[1]}"
                    if k0[2] is not None and k1[2] is not None:
                        extra += f", {(k1[2] - k0[2]) / 1e6:.1f} MB"
                    extra += ")"
                if args.check_frames:
                    extra += f" [decode errors {_DecodeErrors.count - errors0}]"
                table_row(name, mode, rows, extra, steps)
                everything.append({"server": name, "mode": mode, "round": rnd, "viewers": rows})
                if log_dir and name != "gst":
                    analyse_whepcast_log(log_dir / "server.log", rows, f"{name} {mode}")
                errs = [r["error"] for r in rows if r.get("error")]
                if errs:
                    print(f"  {len(errs)} errors, e.g. {errs[0]}", file=sys.stderr)
    if args.rounds > 1:
        print(f"\nAll {args.rounds} rounds together:\n")
        table_header(steps)
        for name in servers:
            for mode in modes:
                rows = [r for e in everything if e["server"] == name and e["mode"] == mode
                        for r in e["viewers"]]
                table_row(name, mode, rows, steps=steps)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
