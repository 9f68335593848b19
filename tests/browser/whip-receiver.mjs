// A WHIP endpoint (RFC 9725) whose receiver is real headless Chromium, for tests of
// `whepcast publish`: a tiny HTTP server on 127.0.0.1 takes the offer, a Chromium page answers
// it (its own WebRTC stack: ICE, DTLS, SRTP, jitter buffer, H.264 decoder) and decodes the
// video, and the test reads what the page sees (getStats, the pattern's barcode) and scripts
// how the endpoint behaves over HTTP (errors, redirects, outages, restarts).
//
//   const browser = await launchReceiverBrowser();
//   const rx = await startReceiver(browser, { token: "t" });
//   // whepcast publish rx.url --token t ...
//   await rx.until(async () => (await rx.stats())?.framesDecoded >= 30);
//   const frame = await rx.frameCounter();        // the pattern's frame number, decoded
//   await rx.setMode("503", { times: 2 });         // the next two POSTs get 503 + Retry-After
//   rx.requests                                    // every request: method, path, headers, ...
//   await rx.close(); await browser.close();
//
// Endpoint: POST /whip/ep (also /whip/ep2, the target of same-origin redirects). Sessions:
// /whip/session/<id> (PATCH trickle or ICE restart, DELETE). A second listener on another
// port of 127.0.0.1 (`altOrigin`) serves the same paths and sessions: the target of
// cross-origin redirects.
//
// Chromium 156 as the receiver, seen here: its answer has a=setup:active, a=rtcp-mux and
// a=rtcp-rsize but not a=rtcp-mux-only (even when offered), a=ice-options:trickle, one host
// candidate per interface (in `unshare -n`: 127.0.0.1 only) and no a=end-of-candidates; it
// echoes the offered rtcp-fb (goog-remb, transport-cc, ccm fir, nack, nack pli) and the header
// extensions it knows. To a sendonly peer stamping transport-cc it sends transport-cc feedback
// (RTPFB 15, about ten a second at 30 fps) and an RR about once a second; no
// standalone REMB; PLI only when asked (sendPli) or after loss.
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { launchBrowser } from "./harness.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Switches the receiving Chromium needs: with media permission granted (the fake UI grants it)
 * Chromium gathers host candidates on every interface, loopback included. Without it, in a
 * loopback-only namespace, it gathers none and the answer has no candidate.
 */
export const RECEIVER_ARGS = ["--use-fake-ui-for-media-stream"];

/** launchBrowser (harness.mjs) with RECEIVER_ARGS added. */
export function launchReceiverBrowser(options = {}) {
  return launchBrowser({ ...options, args: [...RECEIVER_ARGS, ...(options.args || [])] });
}

/** Polls `fn` (async allowed) until it returns something truthy; throws after `ms`. */
export async function until(fn, ms = 20000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The receiving page. It is served to the page by page.route, not by the endpoint, so it keeps
// working while the endpoint is "down". *.localhost is a secure context in Chromium.
const PAGE_BASE = "http://whip-receiver.localhost/";

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>WHIP receiver</title>
<style>video { width: 320px; }</style>
<body>
<script type="module">
import { barcodeReader } from "./barcode.js";
import { candidateFragment, applyRestartFragment } from "./whep.js";

const attr = (sdp, name) => (sdp.match(new RegExp("^a=" + name + ":(.*?)\\\\r?$", "m")) || [])[1];
const sessions = new Map();

// Resolves once gathering (started by the next setLocalDescription) ends, or after ms.
function gathered(pc, ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icecandidate", onCandidate);
      pc.removeEventListener("icegatheringstatechange", onState);
      resolve();
    };
    const onCandidate = (e) => { if (!e.candidate) done(); };
    const onState = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, ms);
    pc.addEventListener("icecandidate", onCandidate);
    pc.addEventListener("icegatheringstatechange", onState);
  });
}

// Every a=candidate of sdp as { candidate, sdpMid }.
function candidatesOf(sdp) {
  const out = [];
  for (const sec of sdp.split(/\\r?\\n(?=m=)/).slice(1)) {
    const mid = attr(sec, "mid");
    for (const m of sec.matchAll(/^a=(candidate:.*?)\\r?$/gm)) out.push({ candidate: m[1], sdpMid: mid });
  }
  return out;
}

// The o= line's session version plus one (a changed offer, RFC 3264 section 8).
const bumpVersion = (sdp) => sdp.replace(/^(o=\\S+ \\S+ )(\\d+)/m, (_, a, v) => a + (BigInt(v) + 1n));

window.rx = {
  sessions,

  /** Answers offer for session id; returns the answer once gathering ended. */
  async answer(id, offer, { h264Only = true, config = {}, gatherMs = 5000 } = {}) {
    const pc = new RTCPeerConnection(config);
    const s = { id, pc, video: null, reader: null, track: null, receiver: null, presented: 0, events: [] };
    sessions.set(id, s);
    const log = (what) => s.events.push({ t: Date.now(), what });
    pc.onconnectionstatechange = () => log("connection " + pc.connectionState);
    pc.oniceconnectionstatechange = () => log("ice " + pc.iceConnectionState);
    pc.ontrack = (e) => {
      if (e.track.kind !== "video" || s.video) return;
      const v = document.createElement("video");
      v.muted = true; v.autoplay = true; v.playsInline = true;
      v.srcObject = new MediaStream([e.track]);
      document.body.append(v);
      v.play().catch(() => {});
      const count = () => { s.presented++; v.requestVideoFrameCallback(count); };
      v.requestVideoFrameCallback(count);
      Object.assign(s, { video: v, reader: barcodeReader(v), track: e.track, receiver: e.receiver });
      log("track");
    };
    await pc.setRemoteDescription({ type: "offer", sdp: offer });
    if (h264Only) {
      // Answer H.264 only (with its RTX), whatever else the offer carries.
      const codecs = RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => /^video\\/(h264|rtx)$/i.test(c.mimeType));
      for (const t of pc.getTransceivers()) {
        if (t.receiver.track.kind === "video") t.setCodecPreferences(codecs);
      }
    }
    const ready = gathered(pc, gatherMs);
    await pc.setLocalDescription();
    await ready;
    log("answered");
    return pc.localDescription.sdp;
  },

  /**
   * Applies a trickle-ice-sdpfrag. New credentials = an ICE restart: the offer again with the
   * fragment's credentials and candidates, a new answer; returns { restart: true, fragment }
   * (the answer's credentials and candidates). Else adds the candidates: { restart: false, added }.
   */
  async patch(id, frag, { gatherMs = 5000 } = {}) {
    const s = sessions.get(id);
    if (!s) return null;
    const remote = s.pc.remoteDescription.sdp;
    const ufrag = attr(frag, "ice-ufrag"), pwd = attr(frag, "ice-pwd");
    if ((ufrag && ufrag !== attr(remote, "ice-ufrag")) || (pwd && pwd !== attr(remote, "ice-pwd"))) {
      await s.pc.setRemoteDescription({ type: "offer", sdp: bumpVersion(applyRestartFragment(remote, frag)) });
      const ready = gathered(s.pc, gatherMs);
      await s.pc.setLocalDescription();
      await ready;
      const local = s.pc.localDescription.sdp;
      s.events.push({ t: Date.now(), what: "restarted" });
      return { restart: true, fragment: candidateFragment(local, candidatesOf(local), true) };
    }
    let mid = null, added = 0, ended = false;
    for (const line of frag.split(/\\r?\\n/)) {
      if (line.startsWith("m=")) mid = null;
      else if (line.startsWith("a=mid:")) mid = line.slice(6);
      else if (line.startsWith("a=candidate:")) {
        await s.pc.addIceCandidate({ candidate: line.slice(2), usernameFragment: ufrag, ...(mid !== null ? { sdpMid: mid } : { sdpMLineIndex: 0 }) });
        added++;
      } else if (line === "a=end-of-candidates") ended = true;
    }
    if (ended) await s.pc.addIceCandidate().catch(() => {});
    return { restart: false, added, ended };
  },

  close(id) {
    const s = sessions.get(id);
    if (!s) return false;
    s.pc.close();
    s.video?.remove();
    s.keyframes?.worker.terminate();
    sessions.delete(id);
    return true;
  },

  closeAll() {
    for (const id of [...sessions.keys()]) window.rx.close(id);
  },

  async stats(id) {
    const s = sessions.get(id);
    if (!s) return null;
    const report = await s.pc.getStats();
    let inbound = null, transport = null;
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") inbound = r;
      if (r.type === "transport") transport = r;
    });
    const codec = inbound && inbound.codecId ? report.get(inbound.codecId) : null;
    const pair = transport && transport.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
    const cand = (cid) => { const c = cid && report.get(cid); return c ? c.address + ":" + c.port + " " + c.candidateType : null; };
    const i = inbound || {};
    return {
      framesDecoded: i.framesDecoded ?? 0, keyFramesDecoded: i.keyFramesDecoded ?? 0,
      framesReceived: i.framesReceived ?? 0, framesDropped: i.framesDropped ?? 0,
      framesPresented: s.presented, framesPerSecond: i.framesPerSecond ?? null,
      frameWidth: i.frameWidth ?? null, frameHeight: i.frameHeight ?? null,
      bytesReceived: i.bytesReceived ?? 0, packetsReceived: i.packetsReceived ?? 0,
      packetsLost: i.packetsLost ?? 0, jitter: i.jitter ?? null,
      pliCount: i.pliCount ?? 0, firCount: i.firCount ?? 0, nackCount: i.nackCount ?? 0,
      ssrc: i.ssrc ?? null, decoderImplementation: i.decoderImplementation ?? null,
      mimeType: codec?.mimeType ?? null, sdpFmtpLine: codec?.sdpFmtpLine ?? null, payloadType: codec?.payloadType ?? null,
      connectionState: s.pc.connectionState, iceConnectionState: s.pc.iceConnectionState,
      localCandidate: cand(pair?.localCandidateId), remoteCandidate: cand(pair?.remoteCandidateId),
      events: s.events,
    };
  },

  /** The pattern's barcode in the picture shown now: { frame, ms, ageMs } or null. */
  barcode(id) {
    const d = sessions.get(id)?.reader?.decode();
    return d ? { frame: d.frame, ms: d.ms, ageMs: Date.now() % 2 ** 40 - d.ms } : null;
  },

  /**
   * Makes Chromium send a PLI for the session's video: RTCRtpScriptTransformer's
   * sendKeyFrameRequest(), on a pass-through transform installed on the receiver at the first
   * call (and kept: removing it makes Chromium ask for a keyframe by itself). Resolves to
   * { ok, error }.
   */
  async requestKeyFrame(id) {
    const s = sessions.get(id);
    if (!s || !s.receiver) return { ok: false, error: "no video track yet" };
    if (!s.keyframes) {
      const code = "let t = null; const queue = [];\\n"
        + "const send = (n) => t.sendKeyFrameRequest().then(() => postMessage({ n, ok: true }), (e) => postMessage({ n, ok: false, error: String(e) }));\\n"
        + "onrtctransform = (e) => { t = e.transformer; t.readable.pipeTo(t.writable).catch(() => {}); queue.splice(0).forEach(send); };\\n"
        + "onmessage = (m) => t ? send(m.data) : queue.push(m.data);\\n";
      const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
      const pending = new Map();
      worker.onmessage = (e) => { pending.get(e.data.n)?.(e.data); pending.delete(e.data.n); };
      s.receiver.transform = new RTCRtpScriptTransform(worker);
      s.keyframes = { worker, pending, n: 0 };
      s.events.push({ t: Date.now(), what: "keyframe transform" });
    }
    const k = s.keyframes, n = ++k.n;
    return new Promise((resolve) => {
      k.pending.set(n, resolve);
      k.worker.postMessage(n);
      setTimeout(() => { k.pending.delete(n); resolve({ ok: false, error: "no answer from the transform" }); }, 2000);
    });
  },
};
window.rx.ready = true;
</script>`;

/** Reads an incoming request's body as text (at most 1 MB). */
function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d) => { body += d; if (body.length > 1 << 20) req.destroy(new Error("body too large")); });
    req.on("end", () => resolve(body));
    req.on("error", reject);
  });
}

const mediaType = (v) => String(v || "").split(";")[0].trim().toLowerCase();
const randomHex = (n) => randomBytes(n).toString("hex");

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => { server.off("error", reject); resolve(server.address().port); });
  });
}

function unlisten(server) {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/**
 * Starts a WHIP endpoint answered by a page of `browser` (launchReceiverBrowser(), or any
 * launchBrowser() result or playwright BrowserContext launched with RECEIVER_ARGS).
 *
 * options:
 *   token        the Bearer token every request must carry (401 otherwise); null: none needed
 *   port         the endpoint's port (default ephemeral); altPort: the second origin's
 *   linkHeaders  Link header values sent with the 201 (and OPTIONS), one header line each, e.g.
 *                ['<stun:127.0.0.1:3478>; rel="ice-server"']
 *   endpoint     the endpoint's path (default /whip/ep; its redirect target is endpoint + "2")
 *   h264Only     answer only H.264 (default true); rtcConfig: the page's RTCConfiguration
 *   gatherMs     the page's bound on ICE gathering per answer (default 5000)
 *
 * Returns { url, origin, port, altUrl, altOrigin, altPort, page, requests, sessions, history,
 * setMode, mode, restart, current, stats, frameCounter, barcode, sendPli, until,
 * waitForRequest, close }.
 */
export async function startReceiver(browser, options = {}) {
  const {
    token = null, port = 0, altPort = 0, linkHeaders = [], endpoint = "/whip/ep",
    h264Only = true, rtcConfig = {}, gatherMs = 5000,
  } = options;
  const context = browser.context || browser;
  const page = await context.newPage();
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.route(PAGE_BASE + "**", (route) => {
    const name = new URL(route.request().url()).pathname.slice(1);
    if (name === "" || name === "index.html") return route.fulfill({ contentType: "text/html; charset=utf-8", body: PAGE });
    if (name === "barcode.js" || name === "whep.js") {
      return route.fulfill({ contentType: "text/javascript; charset=utf-8", body: readFileSync(join(root, "web", name), "utf8") });
    }
    return route.fulfill({ status: 404, body: "not here" });
  });
  await page.goto(PAGE_BASE);
  await page.waitForFunction(() => window.rx && window.rx.ready, null, { timeout: 10000 }).catch(() => {
    throw new Error("the receiver page did not load: " + pageErrors.join("; "));
  });

  /** Every request, in arrival order: { method, path, headers, body, time, server, status, response }. */
  const requests = [];
  /** Live sessions by id: { id, etag, offer, answer, created, location, server, patches }. */
  const sessions = new Map();
  /** Every session ever made, deleted ones too (deleted: time of DELETE, dropped: of restart()). */
  const history = [];
  let mode = { name: "ok" };
  let generation = 0; // bumped by restart(): answers still in flight then are dropped
  const hung = new Set();

  const endpoints = new Set([endpoint, endpoint + "2"]);
  const primary = createServer((req, res) => handle(req, res, "primary").catch((e) => fail(res, e)));
  const secondary = createServer((req, res) => handle(req, res, "secondary").catch((e) => fail(res, e)));
  const ports = { primary: await listen(primary, port), secondary: await listen(secondary, altPort) };
  const origin = `http://127.0.0.1:${ports.primary}`;
  const altOrigin = `http://127.0.0.1:${ports.secondary}`;
  let down = false;

  function fail(res, e) {
    if (!res.headersSent) { res.writeHead(500, { "Content-Type": "text/plain" }); res.end(String(e && e.stack || e)); }
  }

  async function handle(req, res, server) {
    const body = await readBody(req);
    const url = new URL(req.url, origin);
    const path = url.pathname;
    const entry = { method: req.method, path: req.url, headers: { ...req.headers }, body, time: Date.now(), server, status: null, response: null };
    requests.push(entry);
    const reply = (status, headers = {}, text = "") => {
      entry.status = status;
      entry.response = { headers, body: text };
      res.writeHead(status, headers);
      res.end(text);
    };

    // Scripted behaviour first, as a load balancer or a starting server would answer.
    const isEndpoint = endpoints.has(path) || path.startsWith("/whip/loop/");
    const m = mode;
    if (m.name !== "ok" && isEndpoint && (m.methods || ["POST"]).includes(req.method)) {
      let handled = true;
      if (m.name === "hang") {
        entry.status = "hang";
        hung.add(res);
        res.on("close", () => hung.delete(res));
        return;
      } else if (/^\d{3}$/.test(m.name)) {
        const headers = { "Content-Type": m.contentType || "text/plain", ...(m.headers || {}) };
        const retry = m.retryAfter !== undefined ? m.retryAfter : m.name === "503" ? "1" : null;
        if (retry !== null) headers["Retry-After"] = String(retry);
        reply(Number(m.name), headers, m.body !== undefined ? m.body : `scripted ${m.name}\n`);
      } else if (m.name === "redirect-loop") {
        const n = Number(path.match(/^\/whip\/loop\/(\d+)$/)?.[1] || 0) + 1;
        reply(m.status || 307, { Location: `/whip/loop/${n}` });
      } else if (/^redirect30[78](-cross)?$/.test(m.name) && server === "primary" && path === endpoint) {
        const location = m.location || (m.name.endsWith("-cross") ? altOrigin + endpoint : endpoint + "2");
        reply(Number(m.name.slice(8, 11)), { Location: location });
      } else handled = false;
      if (handled) {
        if (m.times !== undefined && --m.times <= 0 && mode === m) mode = { name: "ok" };
        return;
      }
    }

    if (req.method !== "OPTIONS" && token !== null && req.headers.authorization !== `Bearer ${token}`) {
      return reply(401, { "Content-Type": "text/plain", "WWW-Authenticate": 'Bearer realm="whip"' },
        req.headers.authorization ? "wrong bearer token\n" : "missing bearer token\n");
    }

    if (isEndpoint) {
      if (req.method === "OPTIONS") {
        return reply(204, { "Accept-Post": "application/sdp", Allow: "POST, OPTIONS", ...(linkHeaders.length ? { Link: linkHeaders } : {}) });
      }
      if (req.method !== "POST") return reply(405, { Allow: "POST, OPTIONS", "Content-Type": "text/plain" }, "POST an SDP offer\n");
      if (mediaType(req.headers["content-type"]) !== "application/sdp") {
        return reply(415, { "Accept-Post": "application/sdp", "Content-Type": "text/plain" }, "Content-Type must be application/sdp\n");
      }
      if (!/^v=0/.test(body) || !/^m=video /m.test(body)) return reply(400, { "Content-Type": "text/plain" }, "not an SDP offer with video\n");
      const id = randomHex(8);
      const gen = generation;
      let answer;
      try {
        answer = await page.evaluate(([id, offer, opts]) => window.rx.answer(id, offer, opts), [id, body, { h264Only, config: rtcConfig, gatherMs }]);
      } catch (e) {
        await page.evaluate((id) => window.rx.close(id), id).catch(() => {});
        return reply(400, { "Content-Type": "text/plain" }, "the browser refused the offer: " + (e.message || e).split("\n")[0] + "\n");
      }
      if (gen !== generation) {
        await page.evaluate((id) => window.rx.close(id), id).catch(() => {});
        return reply(503, { "Content-Type": "text/plain", "Retry-After": "1" }, "restarting\n");
      }
      if (!/^a=rtpmap:\d+ H264\/90000/m.test(answer) || /^m=video 0 /m.test(answer)) {
        await page.evaluate((id) => window.rx.close(id), id).catch(() => {});
        return reply(422, { "Content-Type": "text/plain" }, "no H.264 (packetization-mode=1) in the offer\n");
      }
      if (!/^a=candidate:/m.test(answer)) {
        await page.evaluate((id) => window.rx.close(id), id).catch(() => {});
        return reply(500, { "Content-Type": "text/plain" },
          "Chromium gathered no candidate: launch it with --use-fake-ui-for-media-stream (RECEIVER_ARGS)\n");
      }
      const session = {
        id, etag: `"${randomHex(8)}"`, offer: body, answer, created: Date.now(), server,
        location: `/whip/session/${id}`, patches: [], deleted: null, dropped: null,
      };
      sessions.set(id, session);
      history.push(session);
      return reply(201, {
        "Content-Type": "application/sdp", Location: session.location, ETag: session.etag,
        "Accept-Patch": "application/trickle-ice-sdpfrag",
        ...(linkHeaders.length ? { Link: linkHeaders } : {}),
      }, answer);
    }

    const sm = path.match(/^\/whip\/session\/([0-9a-f]+)$/);
    if (!sm) return reply(404, { "Content-Type": "text/plain" }, "no such path\n");
    const session = sessions.get(sm[1]);
    if (!session) return reply(404, { "Content-Type": "text/plain" }, "no such session\n");

    if (req.method === "DELETE") {
      sessions.delete(session.id);
      session.deleted = Date.now();
      await page.evaluate((id) => window.rx.close(id), session.id).catch(() => {});
      return reply(200, { "Content-Type": "text/plain" }, "session ended\n");
    }
    if (req.method !== "PATCH") return reply(405, { Allow: "PATCH, DELETE", "Content-Type": "text/plain" }, "PATCH or DELETE\n");
    if (mediaType(req.headers["content-type"]) !== "application/trickle-ice-sdpfrag") {
      return reply(415, { "Accept-Patch": "application/trickle-ice-sdpfrag", "Content-Type": "text/plain" }, "Content-Type must be application/trickle-ice-sdpfrag\n");
    }
    const ifMatch = req.headers["if-match"];
    if (ifMatch === undefined) return reply(428, { "Content-Type": "text/plain" }, "If-Match required\n");
    if (ifMatch.trim() !== "*" && ifMatch.trim() !== session.etag) return reply(412, { "Content-Type": "text/plain" }, "stale ETag\n");
    let result;
    try {
      result = await page.evaluate(([id, frag, opts]) => window.rx.patch(id, frag, opts), [session.id, body, { gatherMs }]);
    } catch (e) {
      return reply(400, { "Content-Type": "text/plain" }, "the browser refused the fragment: " + (e.message || e).split("\n")[0] + "\n");
    }
    if (!result) return reply(404, { "Content-Type": "text/plain" }, "no such session\n");
    session.patches.push({ time: Date.now(), ...result });
    if (result.restart) {
      session.etag = `"${randomHex(8)}"`;
      return reply(200, { "Content-Type": "application/trickle-ice-sdpfrag", ETag: session.etag }, result.fragment);
    }
    return reply(204);
  }

  const current = () => [...sessions.values()].pop() || null;
  const sessionId = (id) => id || current()?.id || null;
  const inPage = async (fn, id) => {
    const sid = sessionId(id);
    return sid ? page.evaluate(fn, sid) : null;
  };

  const receiver = {
    url: origin + endpoint, origin, port: ports.primary,
    altUrl: altOrigin + endpoint, altOrigin, altPort: ports.secondary,
    page, pageErrors, requests, sessions, history,

    /** The scripted behaviour now (name plus options). */
    get mode() { return down ? "down" : mode.name; },

    /**
     * Scripts the endpoint:
     *   "ok"               normal WHIP endpoint
     *   "down"             stop listening (both origins): connections refused, open ones reset
     *   "up"               listen again on the same ports, then "ok"
     *   "503", any "NNN"   POSTs to the endpoint get that status (503: Retry-After: 1;
     *                      options.retryAfter, .body, .contentType, .headers override)
     *   "redirect307", "redirect308"   POST /whip/ep -> Location: /whip/ep2 (relative)
     *   "redirect307-cross", "redirect308-cross"   -> Location: altOrigin + /whip/ep
     *   "redirect-loop"    every POST -> 307 to /whip/loop/<n+1>, for ever
     *   "hang"             POSTs are read and never answered
     * options.times: only for the next N scripted replies, then "ok"; options.methods: which
     * methods the scripted reply applies to (default ["POST"]); options.location: the
     * redirect's Location. Any mode but "down" listens again if down. Hung requests are reset.
     */
    async setMode(name, opts = {}) {
      for (const res of hung) res.destroy();
      hung.clear();
      if (name === "down") {
        down = true;
        await Promise.all([unlisten(primary), unlisten(secondary)]);
        return;
      }
      mode = { ...opts, name: name === "up" ? "ok" : String(name) };
      if (down) {
        await listen(primary, ports.primary);
        await listen(secondary, ports.secondary);
        down = false;
      }
    },

    /**
     * The endpoint "restarts": every session is forgotten (later PATCH/DELETE get 404), its
     * peer connection closed, open HTTP connections reset. Listening and mode are unchanged.
     */
    async restart() {
      generation++;
      for (const s of sessions.values()) s.dropped = Date.now();
      sessions.clear();
      primary.closeAllConnections();
      secondary.closeAllConnections();
      await page.evaluate(() => window.rx.closeAll());
    },

    /** The newest live session (Node side: id, etag, offer, answer, ...) or null. */
    current,

    /**
     * getStats() of the session's (default: newest) inbound video, or null without one:
     * framesDecoded, keyFramesDecoded, frameWidth/Height, bytesReceived, packetsReceived/Lost,
     * pliCount, firCount, nackCount (what Chromium sent), mimeType, sdpFmtpLine, payloadType,
     * connection/ICE state, the selected pair's addresses, events (state changes). Also
     * framesPresented (requestVideoFrameCallback): headless Chromium renders only the page in
     * front at full rate, so it crawls when another page was opened later (page.bringToFront()).
     */
    stats: (id) => inPage((sid) => window.rx.stats(sid), id),

    /** The pattern's barcode in the picture shown now: { frame, ms, ageMs } or null. */
    barcode: (id) => inPage((sid) => window.rx.barcode(sid), id),

    /** The pattern's frame number in the picture shown now, or null (no picture, no barcode). */
    async frameCounter(id) { return (await receiver.barcode(id))?.frame ?? null; },

    /**
     * Makes Chromium send a PLI (RTCP PSFB FMT 1) for the session's video, by the WebRTC
     * Encoded Transform's RTCRtpScriptTransformer.sendKeyFrameRequest() (the first call installs
     * a pass-through transform on the receiver, kept for the session's life). Resolves to the
     * receiver's new pliCount once it grew, or null if it did not within `ms`.
     */
    async sendPli(id, ms = 3000) {
      const sid = sessionId(id);
      if (!sid) return null;
      const before = (await receiver.stats(sid))?.pliCount ?? 0;
      const end = Date.now() + ms;
      let sent = null;
      while (Date.now() < end) {
        if (!sent?.ok) sent = await page.evaluate((i) => window.rx.requestKeyFrame(i), sid);
        const n = (await receiver.stats(sid))?.pliCount ?? 0;
        if (n > before) return n;
        await new Promise((r) => setTimeout(r, 50));
      }
      return null;
    },

    until,

    /** Resolves with the first request (already recorded or to come) matching `pred`. */
    waitForRequest: (pred, ms = 20000) => until(() => requests.find(pred), ms, "a matching request"),

    /** Stops both listeners and closes the page (not the browser). */
    async close() {
      for (const res of hung) res.destroy();
      await Promise.all([unlisten(primary), unlisten(secondary)]);
      await page.close().catch(() => {});
    },
  };
  return receiver;
}
