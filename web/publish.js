// whepcast publish page: sends one video track (the screen, a camera, or a built-in animation
// drawn on a canvas) to the server's WHIP endpoint (RFC 9725) and shows how it goes.
//
// /publish sends to the default stream (POST /whip), /publish/NAME to stream NAME
// (POST /whip/NAME); ?endpoint=URL overrides both. The offer goes out once ICE gathering has
// ended (or after GATHER_MS), so it carries this browser's candidates and nothing is trickled;
// the answer carries the server's. Video only, H.264 only: constrained baseline 42e01f with
// packetization-mode=1 first, then any other H.264 with packetization-mode=1.
//
// URL: #token=T   the ingest token: read once, kept in this tab's sessionStorage (never sent
//                 anywhere but the WHIP requests' Authorization header) and removed from the
//                 address bar; without one, a 401 shows a field to type it into.
//      ?source=screen|camera|canvas   what to share (default: screen, else camera, else canvas)
//      ?autostart=1   start at once (the canvas needs no permission: a headless test can
//                     publish without a click; the screen needs a click in any browser)
//      ?max_bitrate=2500k   the encoder's cap (bits per second; k and M suffixes)
//
// For tests: document.body.dataset.state is idle | connecting | publishing | failed (and
// dataset.source the source chosen); #error holds the last error's text (empty and hidden when
// there is none); window.publishStats holds the latest numbers (see `stats` below).
import { HttpStatusError, askIceServers } from "./whep.js";
import { renderStats } from "./stats.js";

const GATHER_MS = 3000;        // longest wait for this browser's candidates before the offer goes anyway
const ANSWER_MS = 20000;       // longest wait for the server's answer
const CONNECT_MS = 15000;      // from the answer to a connection
const DISCONNECTED_MS = 5000;  // disconnected this long counts as failed

const $ = (id) => document.getElementById(id);
const preview = $("preview"), canvas = $("canvas"), placeholder = $("placeholder"), statsPanel = $("stats");
const form = $("form"), startBtn = $("start"), stopBtn = $("stop");
const tokenRow = $("token-row"), tokenInput = $("token"), statusEl = $("status"), errorEl = $("error");
const radios = [...form.querySelectorAll('input[name="source"]')];

// ---- where to publish ----

const params = new URLSearchParams(location.search);
const pathMatch = location.pathname.match(/^\/publish\/([^/]+)/);
let streamName = "";
if (pathMatch) {
  try { streamName = decodeURIComponent(pathMatch[1]); } catch { streamName = pathMatch[1]; }
}
const endpoint = params.get("endpoint") || (pathMatch ? "/whip/" + pathMatch[1] : "/whip");
const parseRate = (s) => {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(s || "");
  return m ? Math.round(parseFloat(m[1]) * { "": 1, k: 1e3, K: 1e3, m: 1e6, M: 1e6 }[m[2]]) : null;
};
const maxBitrate = parseRate(params.get("max_bitrate"));

// ---- the ingest token ----

const TOKEN_KEY = "whepcast-ingest-token";
const tokenStore = {
  get() { try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; } },
  set(v) { try { if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage off */ } },
};
let token = null;
{
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("token")) {
    token = hash.get("token").trim() || null;
    tokenStore.set(token);
    hash.delete("token");
    const rest = hash.toString();
    history.replaceState(history.state, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  } else {
    token = tokenStore.get();
  }
}
const auth = () => (token ? { Authorization: "Bearer " + token } : {});

// ---- what the page exposes ----

/** The latest numbers (outbound-rtp and the candidate pair, read every second) and state. */
const stats = window.publishStats = {
  state: "idle",          // as document.body.dataset.state
  source: null,           // "screen" | "camera" | "canvas": the one chosen
  sending: null,          // the source of the track being sent (null when none)
  stream: streamName,     // "" = the default stream
  endpoint,
  session: null,          // the session's URL (from Location) while there is one
  httpStatus: null,       // the status of the last POST
  deleteStatus: null,     // the status of the last DELETE (or "error: ...")
  error: "",              // as #error
  connectionState: "new", iceConnectionState: "new",
  width: 0, height: 0, fps: 0, kbps: 0, rttMs: null,
  bytesSent: 0, packetsSent: 0, framesEncoded: 0, framesSent: 0, keyFramesEncoded: 0,
  nackCount: 0, pliCount: 0, firCount: 0,
  codec: null,            // e.g. "H264 42e01f"
  encoder: null,          // encoderImplementation
  qualityLimitation: null, // "none" | "cpu" | "bandwidth" | "other"
  localCandidateType: null, remoteCandidateType: null,
  canvasFrame: 0,         // the animation's frame number (also in its barcode)
  updatedAt: 0,           // Date.now() of the last stats reading
};

class PageError extends Error {}

function setStatus(text) {
  statusEl.textContent = text;
}

function setError(text) {
  stats.error = text;
  errorEl.textContent = text;
  errorEl.hidden = !text;
}

const busy = () => stats.state === "connecting" || stats.state === "publishing";

function setState(s) {
  stats.state = s;
  document.body.dataset.state = s;
  updateControls();
}

function updateControls() {
  startBtn.disabled = busy() || !window.RTCPeerConnection;
  stopBtn.disabled = !busy() && !capture;
  // While connecting the track is being chosen; once publishing, a new choice replaces it.
  for (const r of radios) r.disabled = !can[r.value] || stats.state === "connecting";
}

// ---- sources ----

const can = {
  screen: !!navigator.mediaDevices?.getDisplayMedia,
  camera: !!navigator.mediaDevices?.getUserMedia,
  canvas: typeof canvas.captureStream === "function",
};
const LABEL = { screen: "the screen", camera: "the camera", canvas: "the animation" };
const selectedSource = () => radios.find((r) => r.checked)?.value || "canvas";

/** { source, track }: the track captured (kept between sessions until Stop or a new source). */
let capture = null;

// The built-in animation, 640×360 at 30 fps, deterministic per frame number. Its colours
// (exact in the canvas; after H.264 within a few levels):
//   background    #0000ff pure blue, wherever nothing else is: e.g. the 40×40 px top right
//                 corner (600-639, 0-39) and the left and right edges between rows 60 and 260
//                 (x < 230 or x > 410) are always blue
//   red square    #ff0000, 120 px, centred on (320, 180), turning 4° a frame: the disc of
//                 radius 60 around the centre (e.g. 290-350 × 150-210) is always red
//   green square  #00ff00, 48 px, rows 276-323, sliding left and right (x from 16 to 623,
//                 8 px a frame, 70 frames each way)
//   text          #ffffff, top left (x 16-, rows 14-40): "whepcast  frame N"
//   barcode       black and white blocks, rows 348-355, x 32-607: the frame number (mod 2^24)
//                 and the capture time (Unix ms) in the test pattern's layout
//                 (src/source/pattern.rs Barcode; barcode.js reads it back)
const W = canvas.width, H = canvas.height;
const ctx = canvas.getContext("2d");
let frame = 0;

function drawFrame() {
  frame = (frame + 1) % 2 ** 24;
  ctx.fillStyle = "#0000ff";
  ctx.fillRect(0, 0, W, H);
  ctx.save();
  ctx.translate(320, 180);
  ctx.rotate((frame * 4 * Math.PI) / 180);
  ctx.fillStyle = "#ff0000";
  ctx.fillRect(-60, -60, 120, 120);
  ctx.restore();
  const travel = 560, v = (frame * 8) % (2 * travel);
  ctx.fillStyle = "#00ff00";
  ctx.fillRect(16 + (v < travel ? v : 2 * travel - v), 276, 48, 48);
  ctx.fillStyle = "#ffffff";
  ctx.font = "bold 24px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(`whepcast  frame ${frame}`, 16, 14);
  drawBarcode(frame, Date.now());
  stats.canvasFrame = frame;
}

/** The test pattern's barcode: 72 blocks, 24-bit frame number, 40-bit Unix ms, 8-bit checksum. */
function drawBarcode(number, ms) {
  const bw = Math.floor(W / 76) & ~1, bh = Math.max(Math.floor(H / 40), 4) & ~1;
  if (bw < 2 || H < 4 * bh) return;
  const left = Math.floor((W - bw * 72) / 2) & ~1, top = (H - Math.floor((bh * 3) / 2)) & ~1;
  const bytes = new Uint8Array(9);
  bytes[0] = (number >> 16) & 0xff;
  bytes[1] = (number >> 8) & 0xff;
  bytes[2] = number & 0xff;
  let t = ms % 2 ** 40;
  for (let i = 7; i >= 3; i--) {
    bytes[i] = t % 256;
    t = Math.floor(t / 256);
  }
  let check = 0xa5;
  for (let i = 0; i < 8; i++) check = (check + bytes[i]) & 0xff;
  bytes[8] = check;
  for (let i = 0; i < 72; i++) {
    ctx.fillStyle = (bytes[i >> 3] >> (7 - (i & 7))) & 1 ? "#ffffff" : "#000000";
    ctx.fillRect(left + i * bw, top, bw, bh);
  }
}

// Ticks from a worker: its timers keep their pace while the tab is in the background (the
// page's own are slowed to once a second there); setInterval when no worker can be made.
let ticker = null, tickerUrl = null;
function animate(on) {
  if (on === !!ticker) return;
  if (!on) {
    ticker.stop();
    ticker = null;
    return;
  }
  const fallback = () => {
    const t = setInterval(drawFrame, 1000 / 30);
    return { stop: () => clearInterval(t) };
  };
  try {
    tickerUrl ??= URL.createObjectURL(new Blob(["setInterval(() => postMessage(0), 1000 / 30);"], { type: "text/javascript" }));
    const worker = new Worker(tickerUrl);
    const me = { stop: () => worker.terminate() };
    worker.onmessage = drawFrame;
    worker.onerror = () => { // e.g. a Content-Security-Policy without blob: workers
      worker.terminate();
      if (ticker === me) ticker = fallback();
    };
    ticker = me;
  } catch {
    ticker = fallback();
  }
  drawFrame();
}

/** A new video track of `source`; throws PageError with what went wrong. */
async function acquire(source, byUser) {
  if (!can[source]) {
    throw new PageError(source === "canvas" ? "This browser cannot capture a canvas (no captureStream)."
      : `This browser cannot use ${LABEL[source]} here: ` + (window.isSecureContext
        ? "it has no " + (source === "screen" ? "getDisplayMedia (phones cannot share their screen)." : "getUserMedia.")
        : "that needs a secure page (HTTPS, or http://localhost)."));
  }
  if (source === "canvas") {
    animate(true);
    const track = canvas.captureStream(30).getVideoTracks()[0];
    if (!track) throw new PageError("The canvas gave no video track.");
    return track;
  }
  let stream;
  try {
    stream = source === "screen"
      ? await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false })
      : await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } }, audio: false,
      });
  } catch (e) {
    throw new PageError(mediaError(e, source, byUser));
  }
  for (const t of stream.getAudioTracks()) t.stop();
  const track = stream.getVideoTracks()[0];
  if (!track) throw new PageError(`The browser gave no video track for ${LABEL[source]}.`);
  return track;
}

function mediaError(e, source, byUser) {
  const what = source === "screen" ? "share the screen" : "use the camera";
  const name = e?.name || "Error";
  if ((name === "NotAllowedError" || name === "InvalidStateError") && source === "screen" && !byUser) {
    return "Sharing the screen needs a click: press Start.";
  }
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Permission to ${what} was refused (${name}). Allow it in the browser (the icon in the address bar) and press Start again.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${source === "screen" ? "screen to share" : "camera"} was found (${name}).`;
    case "NotReadableError":
    case "AbortError":
      return `The browser could not ${what} (${name}): another application may be using it.`;
    default:
      return `Could not ${what}: ${name}: ${e?.message || e}`;
  }
}

/** Makes `track` (of `source`) the one captured: shown in the preview, the old one stopped. */
function adopt(source, track) {
  const old = capture;
  capture = { source, track };
  stats.sending = source;
  track.addEventListener("ended", () => {
    if (capture?.track !== track) return;
    // The browser's own "Stop sharing" button, or the camera went away.
    if (busy()) stop(source === "screen" ? "stopped: screen sharing ended in the browser" : `stopped: ${LABEL[source]} ended`);
    else releaseCapture();
  });
  if (old && old.track !== track) old.track.stop();
  showPreview();
}

function releaseCapture() {
  if (capture) capture.track.stop();
  capture = null;
  stats.sending = null;
  showPreview();
}

/** The preview: the capture's picture, else the animation when it is chosen, else a hint. */
function showPreview() {
  const source = capture ? capture.source : selectedSource();
  const onCanvas = source === "canvas";
  animate(onCanvas);
  canvas.hidden = !onCanvas;
  const video = capture && !onCanvas;
  if (video && preview.srcObject?.getVideoTracks()[0] !== capture.track) {
    preview.srcObject = new MediaStream([capture.track]);
    preview.play().catch(() => {});
  }
  if (!video && preview.srcObject) preview.srcObject = null;
  preview.hidden = !video;
  placeholder.hidden = onCanvas || !!video;
  placeholder.textContent = source === "screen"
    ? "Press Start to choose a screen, window or tab to share."
    : "Press Start to turn the camera on.";
  updateControls();
}

// ---- H.264 only ----

const fmtp = (codec, key) =>
  ((new RegExp(`(?:^|;)\\s*${key}=([^;]*)`, "i").exec(codec.sdpFmtpLine || "") || [])[1] || "").trim().toLowerCase();

/** { codecs } to prefer (H.264 with packetization-mode=1, best first, then RTX), or { error }. */
function h264Preferences() {
  const caps = (cls) => (typeof cls?.getCapabilities === "function" ? cls.getCapabilities("video")?.codecs || [] : []);
  const all = caps(window.RTCRtpSender);
  const list = all.length ? all : caps(window.RTCRtpReceiver);
  if (!list.length) return { codecs: null }; // capabilities unknown: offer what the browser offers
  const h264 = list.filter((c) => /^video\/h264$/i.test(c.mimeType));
  if (!h264.length) {
    return { error: "This browser has no H.264 video encoder, and the server takes only H.264. " +
      "(Firefox: enable the OpenH264 plugin under Add-ons → Plugins; some Chromium builds leave H.264 out.)" };
  }
  const usable = h264.filter((c) => fmtp(c, "packetization-mode") === "1");
  if (!usable.length) {
    return { error: "This browser's H.264 has no packetization-mode=1, which the server needs." };
  }
  const rank = (c) => {
    const p = fmtp(c, "profile-level-id");
    if (p === "42e01f") return 0;            // constrained baseline, level 3.1
    if (/^42[ce]0/.test(p)) return 1;        // constrained baseline, another level
    if (p.startsWith("42")) return 2;        // baseline
    if (p.startsWith("4d")) return 3;        // main
    return 4;                                // high and the rest
  };
  usable.sort((a, b) => rank(a) - rank(b));
  return { codecs: [...usable, ...list.filter((c) => /^video\/rtx$/i.test(c.mimeType))] };
}

/** setCodecPreferences with `codecs`; browsers that check them against the receiver's capabilities get those entries. */
function preferCodecs(transceiver, codecs) {
  if (!codecs || typeof transceiver.setCodecPreferences !== "function") return;
  try {
    transceiver.setCodecPreferences(codecs);
    return;
  } catch { /* try the receiver's entries */ }
  const recv = RTCRtpReceiver.getCapabilities?.("video")?.codecs || [];
  const same = codecs.map((c) => recv.find((r) => r.mimeType.toLowerCase() === c.mimeType.toLowerCase() &&
    (r.sdpFmtpLine || "") === (c.sdpFmtpLine || ""))).filter(Boolean);
  try {
    if (same.some((c) => /h264/i.test(c.mimeType))) transceiver.setCodecPreferences(same);
  } catch { /* offer all codecs: the server picks H.264 (or says 422) */ }
}

// ---- the WHIP session ----

let run = 0;               // every start and stop begins a new run; callbacks of older runs do nothing
let pc = null, transceiver = null, session = null; // session: { url, etag }
let timers = {};
const prevBytes = { bytes: 0, at: 0 };

/** Resolves once ICE gathering ends (started by the next setLocalDescription), or after `ms`. */
function gathered(peer, ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      peer.removeEventListener("icecandidate", onCandidate);
      peer.removeEventListener("icegatheringstatechange", onState);
      resolve();
    };
    const onCandidate = (e) => { if (!e.candidate) done(); };
    const onState = () => { if (peer.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, ms);
    peer.addEventListener("icecandidate", onCandidate);
    peer.addEventListener("icegatheringstatechange", onState);
  });
}

/** The ICE servers the endpoint announces (OPTIONS, Link rel="ice-server"); none when it does not say within 2 s. */
async function iceServersOrNone() {
  try {
    return await Promise.race([
      askIceServers(endpoint, auth()),
      new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 2000)),
    ]);
  } catch {
    return [];
  }
}

function resetNumbers() {
  Object.assign(stats, {
    session: null, httpStatus: null, connectionState: "new", iceConnectionState: "new",
    width: 0, height: 0, fps: 0, kbps: 0, rttMs: null, bytesSent: 0, packetsSent: 0, framesEncoded: 0,
    framesSent: 0, keyFramesEncoded: 0, nackCount: 0, pliCount: 0, firCount: 0, codec: null, encoder: null,
    qualityLimitation: null, localCandidateType: null, remoteCandidateType: null, updatedAt: 0,
  });
  prevBytes.bytes = prevBytes.at = 0;
}

async function start(byUser) {
  if (busy()) return;
  const gen = ++run;
  const source = selectedSource();
  resetNumbers();
  setError("");
  setState("connecting");
  try {
    if (!window.RTCPeerConnection) throw new PageError("This browser has no WebRTC (RTCPeerConnection).");
    const prefs = h264Preferences();
    if (prefs.error) throw new PageError(prefs.error);
    let track;
    if (capture && capture.source === source && capture.track.readyState === "live") {
      track = capture.track; // kept from the last try: no new permission prompt
    } else {
      setStatus(source === "canvas" ? "starting the animation…" : `asking to use ${LABEL[source]}…`);
      track = await acquire(source, byUser);
      if (gen !== run) { if (capture?.track !== track) track.stop(); return; }
      adopt(source, track);
    }

    setStatus("connecting to " + endpoint + "…");
    const iceServers = await iceServersOrNone();
    if (gen !== run) return;
    const peer = pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers });
    transceiver = peer.addTransceiver(track, {
      direction: "sendonly",
      ...(maxBitrate ? { sendEncodings: [{ maxBitrate }] } : {}),
    });
    preferCodecs(transceiver, prefs.codecs);
    watch(peer, gen);
    const ready = gathered(peer, GATHER_MS);
    await peer.setLocalDescription(await peer.createOffer());
    await ready;
    if (gen !== run) return;

    setStatus("sending the offer to " + endpoint + "…");
    const answer = await post(peer.localDescription.sdp);
    if (gen !== run) { del(answer.url); return; }
    session = { url: answer.url, etag: answer.etag };
    stats.session = answer.url;
    try {
      await peer.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (e) {
      throw new PageError("The server's answer could not be used: " + (e.message || e));
    }
    if (gen !== run) return;
    setStatus("connecting the media path…");
    timers.connect = setTimeout(() => {
      if (gen === run && stats.state === "connecting") {
        fail(`No connection to the server within ${CONNECT_MS / 1000} s of its answer (ICE ${peer.iceConnectionState}): ` +
          "a firewall may block UDP between this browser and the server.");
      }
    }, CONNECT_MS);
  } catch (e) {
    if (gen === run) fail(explain(e), e);
  }
}

/** POSTs the offer; resolves to { url, etag, sdp } or throws (HttpStatusError, PageError). */
async function post(offer) {
  // Not aborted by Stop: an answer that comes after it still tells which session to DELETE.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ANSWER_MS);
  let res, body;
  try {
    res = await fetch(endpoint, {
      method: "POST", headers: { "Content-Type": "application/sdp", ...auth() }, body: offer,
      cache: "no-store", signal: abort.signal,
    });
    body = await res.text();
  } catch (e) {
    throw new PageError(abort.signal.aborted
      ? `The server did not answer the offer within ${ANSWER_MS / 1000} s (POST ${endpoint}).`
      : `Could not reach the server (POST ${endpoint}): ${e.message || e}.`);
  } finally {
    clearTimeout(timer);
  }
  stats.httpStatus = res.status;
  if (res.status !== 201) throw new HttpStatusError("POST", endpoint, res.status, body);
  const where = res.headers.get("Location");
  if (!where) {
    throw new PageError("The server accepted the offer (201) but sent no Location header, so the session could not be ended; not using it.");
  }
  const url = new URL(where, new URL(endpoint, location.href)).href;
  return { url, etag: res.headers.get("ETag"), sdp: body };
}

/** Follows the connection: publishing once connected; failed when ICE fails or stays disconnected. */
function watch(peer, gen) {
  const onChange = () => {
    if (gen !== run) return;
    const cs = peer.connectionState, ice = peer.iceConnectionState;
    stats.connectionState = cs || ice;
    stats.iceConnectionState = ice;
    if (cs === "closed") return;
    if (cs === "failed" || ice === "failed") {
      fail(stats.state === "publishing"
        ? "The connection to the server failed (ICE failed): the media path was lost."
        : "Could not connect to the server (ICE failed): no network path for the media; a firewall may block UDP.");
      return;
    }
    if (cs === "disconnected" || ice === "disconnected") {
      if (!timers.disconnected) {
        setStatus(`connection interrupted; giving up after ${DISCONNECTED_MS / 1000} s…`);
        timers.disconnected = setTimeout(() => {
          if (gen === run) fail(`The connection to the server was lost (disconnected for more than ${DISCONNECTED_MS / 1000} s).`);
        }, DISCONNECTED_MS);
      }
      return;
    }
    if (cs ? cs === "connected" : ice === "connected" || ice === "completed") {
      clearTimeout(timers.connect);
      clearTimeout(timers.disconnected);
      timers.connect = timers.disconnected = null;
      setState("publishing");
      setStatus(publishingText());
    }
  };
  peer.onconnectionstatechange = onChange;
  peer.oniceconnectionstatechange = onChange;
}

const publishingText = () =>
  `publishing ${LABEL[capture?.source] || "video"} to ${streamName ? `stream “${streamName}”` : "the default stream"}`;

/** Ends the session (DELETE) and the peer connection; the captured track stays. */
function endSession() {
  clearTimeout(timers.connect);
  clearTimeout(timers.disconnected);
  timers = {};
  if (session) {
    del(session.url);
    session = null;
  }
  stats.session = null;
  if (pc) {
    pc.onconnectionstatechange = pc.oniceconnectionstatechange = null;
    pc.close();
    pc = null;
  }
  transceiver = null;
  statsPanel.hidden = true;
}

/** DELETE the session: keepalive, so it still goes out while the page unloads. */
function del(url) {
  fetch(url, { method: "DELETE", headers: auth(), keepalive: true, cache: "no-store" })
    .then((res) => { stats.deleteStatus = res.status; }, (e) => { stats.deleteStatus = "error: " + (e.message || e); });
}

function fail(text, cause) {
  run++;
  endSession();
  setError(text);
  setState("failed");
  setStatus("not publishing: press Start to try again");
  if (cause instanceof HttpStatusError && cause.status === 401) {
    tokenRow.hidden = false;
    tokenInput.value = "";
    tokenInput.focus();
  }
}

function stop(note = "stopped") {
  run++;
  endSession();
  releaseCapture();
  setError("");
  setState("idle");
  setStatus(note);
}

// ---- why it failed, in words ----

function serverSaid(body) {
  let t = String(body ?? "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
  if (t.length > 300) t = t.slice(0, 300) + "…";
  return t ? ` The server said: “${t}”` : "";
}

function explain(e) {
  if (e instanceof PageError) return e.message;
  if (e instanceof HttpStatusError) {
    const s = e.status;
    const which = streamName ? `stream “${streamName}”` : "default stream";
    const lead = {
      400: "The server could not use this browser's offer (400).",
      401: token
        ? "The ingest token was refused (401): enter the right one below and press Start."
        : "This server needs an ingest token to publish (401): enter it below and press Start.",
      403: "Publishing to this stream is not allowed (403).",
      404: `This server has no ${which} to publish to (404).`,
      409: "This stream already has a publisher (409): stop the other one (or wait for it to time out) and press Start again.",
      413: "The offer was too large for the server (413).",
      415: "The server refused the offer's content type (415).",
      422: "The server found no usable H.264 in this browser's offer (422): it needs H.264 with packetization-mode=1.",
      429: "The server is busy (429): try again shortly.",
      503: "The server cannot take a publisher right now (503): try again shortly.",
    }[s] || (s >= 500 ? `The server failed (${s}).` : `The server refused the offer (${s}).`);
    return lead + serverSaid(e.body);
  }
  return "Publishing failed: " + (e?.message || String(e));
}

// ---- stats, every second ----

async function updateStats() {
  const peer = pc;
  if (!peer) return;
  const report = await peer.getStats();
  if (peer !== pc) return;
  let out = null, pair = null;
  report.forEach((s) => {
    if (s.type === "outbound-rtp" && (s.kind || s.mediaType) === "video" && (!out || (s.bytesSent || 0) > (out.bytesSent || 0))) out = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
  });
  if (!pair) report.forEach((s) => { if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  if (out) {
    stats.width = out.frameWidth || 0;
    stats.height = out.frameHeight || 0;
    stats.fps = out.framesPerSecond || 0;
    const bytes = out.bytesSent || 0;
    if (prevBytes.at && out.timestamp > prevBytes.at && bytes >= prevBytes.bytes) {
      stats.kbps = Math.round(((bytes - prevBytes.bytes) * 8) / (out.timestamp - prevBytes.at));
    }
    prevBytes.bytes = bytes;
    prevBytes.at = out.timestamp;
    stats.bytesSent = bytes;
    stats.packetsSent = out.packetsSent || 0;
    stats.framesEncoded = out.framesEncoded || 0;
    stats.framesSent = out.framesSent || 0;
    stats.keyFramesEncoded = out.keyFramesEncoded || 0;
    stats.nackCount = out.nackCount || 0;
    stats.pliCount = out.pliCount || 0;
    stats.firCount = out.firCount || 0;
    stats.qualityLimitation = out.qualityLimitationReason ?? null;
    stats.encoder = out.encoderImplementation ?? null;
    const codec = out.codecId ? report.get(out.codecId) : null;
    if (codec) {
      const plid = fmtp(codec, "profile-level-id");
      stats.codec = codec.mimeType.replace(/^video\//i, "") + (plid ? " " + plid : "");
    }
  }
  if (pair) {
    if (pair.currentRoundTripTime !== undefined) stats.rttMs = pair.currentRoundTripTime * 1000;
    stats.localCandidateType = report.get(pair.localCandidateId)?.candidateType ?? null;
    stats.remoteCandidateType = report.get(pair.remoteCandidateId)?.candidateType ?? null;
  }
  stats.updatedAt = Date.now();
  renderStats(statsPanel, [
    `${stats.width}×${stats.height}`,
    `${Number(stats.fps).toFixed(0)} fps`,
    `${stats.kbps} kbps`,
    `rtt ${stats.rttMs === null ? "–" : stats.rttMs.toFixed(1) + " ms"}`,
    stats.codec || "",
    stats.qualityLimitation && stats.qualityLimitation !== "none" ? `limited by ${stats.qualityLimitation}` : "",
    stats.localCandidateType === "relay" ? "via TURN" : "",
    stats.connectionState === "connected" ? "" : stats.connectionState,
  ]);
  statsPanel.hidden = false;
}
setInterval(() => updateStats().catch(() => {}), 1000);

// ---- a new source while publishing: the same session, the new track ----

async function switchSource(source) {
  stats.source = document.body.dataset.source = source;
  if (stats.state !== "publishing" || !transceiver) {
    if (capture && capture.source !== source) releaseCapture();
    else showPreview();
    return;
  }
  if (capture?.source === source) return;
  const gen = run, sender = transceiver.sender, before = capture?.source;
  setStatus(`switching to ${LABEL[source]}…`);
  try {
    const track = await acquire(source, true);
    if (gen !== run || !transceiver || transceiver.sender !== sender) { track.stop(); showPreview(); return; }
    await sender.replaceTrack(track);
    adopt(source, track);
    setError("");
    setStatus(publishingText());
  } catch (e) {
    if (gen !== run) return;
    setError(explain(e) + ` Still publishing ${LABEL[before] || "the old picture"}.`);
    setStatus(publishingText());
    const back = radios.find((r) => r.value === before);
    if (back) back.checked = true;
    stats.source = document.body.dataset.source = before;
    showPreview();
  }
}

// ---- the page ----

$("stream-name").textContent = streamName ? "“" + streamName + "”" : "(default stream)";
document.title = "whepcast · publish" + (streamName ? " " + streamName : "");
$("endpoint").textContent = "POST " + endpoint;
$("watch").href = pathMatch ? "/view/" + pathMatch[1] : "/";
for (const r of radios) {
  const why = form.querySelector(`.why[data-for="${r.value}"]`);
  if (why && !can[r.value]) why.textContent = window.isSecureContext ? "(not in this browser)" : "(needs HTTPS)";
  r.addEventListener("change", () => { if (r.checked) switchSource(r.value); });
}
{
  const wanted = params.get("source");
  const initial = can[wanted] ? wanted : ["screen", "camera", "canvas"].find((s) => can[s]) || "canvas";
  radios.find((r) => r.value === initial).checked = true;
  stats.source = document.body.dataset.source = initial;
}
form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (!tokenRow.hidden) {
    token = tokenInput.value.trim() || null;
    tokenStore.set(token);
  }
  start(true);
});
stopBtn.addEventListener("click", () => stop());
// Leaving the page ends the session (DELETE with keepalive) and lets the camera go.
addEventListener("pagehide", () => {
  run++;
  endSession();
  releaseCapture();
});
addEventListener("pageshow", (e) => {
  if (e.persisted) { setState("idle"); setStatus("idle"); showPreview(); }
});

showPreview();
setState("idle");
if (!window.RTCPeerConnection) setError("This browser has no WebRTC (RTCPeerConnection): it cannot publish.");
else {
  const { error } = h264Preferences();
  if (error) setError(error);
}
if (params.get("autostart") === "1") start(false);
