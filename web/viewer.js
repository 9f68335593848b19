// whepcast viewer: plays a stream with the WHEP client (whep.js), shows its numbers
// (stats.js), the data channel's latency and chat (channel.js, chat.js), the streams on the
// server (streams.js) and the controls (controls.js). Reconnects with backoff when anything
// drops.
import { WhepSession, HttpStatusError, askIceServers, turnUrls } from "./whep.js";
import { openChannel, shownAt } from "./channel.js";
import { barcodeReader } from "./barcode.js";
import { collectStats, statItems, renderStats } from "./stats.js";
import { chatPanel } from "./chat.js";
import { streamPicker } from "./streams.js";
import { controls } from "./controls.js";
import { qualityMenu } from "./quality.js";

const video = document.getElementById("video");
const statsPanel = document.getElementById("overlay");
const statusEl = document.getElementById("status");

// /view/NAME plays stream NAME; / plays the default stream. ?endpoint= overrides.
// relay=1 (in the query or the #fragment) allows only TURN-relayed connections.
const params = new URLSearchParams(location.search);
const hashParams = new URLSearchParams(location.hash.slice(1));
const m = location.pathname.match(/^\/view\/([^/]+)/);
const endpoint = params.get("endpoint") || (m ? "/whep/" + m[1] : "/whep");
const relay = params.get("relay") === "1" || hashParams.get("relay") === "1";
// datachannel=0: video only, like a plain WHEP player (benchmarks compare servers this way).
const withChannel = params.get("datachannel") !== "0";
// rendition=640x360 picks a rendition (the quality menu sets it too; the server still lowers
// it while the link cannot carry it, unless insist=1), max_bitrate=800k caps it; they go to
// the WHEP endpoint's query.
const maxBitrate = params.get("max_bitrate");
const insist = params.get("insist");
const whepUrl = () => {
  const q = new URLSearchParams();
  if (state.quality !== "auto") q.set("rendition", state.quality);
  if (maxBitrate) q.set("max_bitrate", maxBitrate);
  if (insist && state.quality !== "auto") q.set("insist", insist);
  const qs = q.toString();
  return qs ? endpoint + (endpoint.includes("?") ? "&" : "?") + qs : endpoint;
};

// Exposed for tests and curious users: live numbers the stats panel shows.
const state = window.whepcast = {
  endpoint, relay, connected: false, framesDecoded: 0, callbackFrames: 0, ttffMs: null,
  width: 0, height: 0, fps: 0, kbps: 0, packetsLost: 0, rttMs: null, attempts: 0, lastError: "",
  // Milliseconds from the POST to each step of the latest connection (for benchmarks).
  marks: {},
  // ICE: servers announced by the endpoint, candidates trickled, last PATCH status, the
  // candidate types of the pair in use and its checks sent/answered, TURN/STUN errors seen.
  iceServers: null, trickled: 0, patchStatus: null, localCandidateType: null, remoteCandidateType: null, checks: null,
  iceErrors: [],
  // Data channel: state, latency from the server's per-frame capture times, clock offset
  // (server minus this page) and the channel's round trip; chat.
  dcState: "none", dcLatencyMs: null, dcLatencySamples: [], clockOffsetMs: null, clockRttMs: null,
  rttDcMs: null,
  viewerName: null, viewers: null, chat: [], chatErrors: [],
  // Glass-to-glass latency read from the test pattern's barcode.
  latencyMs: null, latencySamples: [],
  // The quality asked for ("auto" or a rendition's size) and the server's view of the link.
  quality: params.get("rendition") || "auto", link: null,
};

// A token from the URL fragment (#token=...; fragments never reach servers or logs), else
// one the user typed earlier in this tab.
let token = hashParams.get("token") || sessionStorage.getItem("whepcast-token");
const auth = () => (token ? { Authorization: "Bearer " + token } : {});

let pc = null, session = null, channel = null, postedAt = 0, backoff = 500, timer = null, generation = 0;
const prevStats = { bytes: 0, at: 0 };
const mark = (name) => { if (postedAt && !(name in state.marks)) state.marks[name] = Math.round(performance.now() - postedAt); };

function setStatus(text, bad) {
  statusEl.textContent = text;
  statusEl.className = bad ? "bad" : "";
}

// ---- ICE servers ----

// Asked once (per token) before the first connection and reused by reconnects; a failed
// OPTIONS is not fatal (the connection goes ahead without ICE servers) and is asked again.
let iceCache = null; // { token, servers }
async function iceServers() {
  if (iceCache && iceCache.token === token && (!relay || turnUrls(iceCache.servers).length)) return iceCache.servers;
  try {
    iceCache = { token, servers: await askIceServers(endpoint, auth()) };
  } catch (e) {
    state.iceServersError = e.message || String(e);
    return iceCache ? iceCache.servers : [];
  }
  state.iceServers = iceCache.servers;
  return iceCache.servers;
}
const baseUrl = (u) => String(u).split("?")[0].toLowerCase();

// ---- connecting ----

async function connect() {
  const gen = ++generation;
  state.attempts++;
  state.connected = false;
  state.ttffMs = null;
  state.marks = {};
  state.trickled = 0;
  state.patchStatus = null;
  state.localCandidateType = state.remoteCandidateType = null;
  state.iceErrors = [];
  setStatus("connecting to " + endpoint + "…");
  const servers = await iceServers();
  if (gen !== generation) return;
  if (relay && !turnUrls(servers).length) {
    retry(state.iceServersError && !iceCache
      ? `Relay only (relay=1), but the ICE servers could not be asked for (${state.iceServersError}).`
      : "Relay only (relay=1), but the server announced no TURN server (start whepcast with --turn URL --turn-user U --turn-pass P).");
    return;
  }
  const config = { bundlePolicy: "max-bundle", iceServers: servers, iceTransportPolicy: relay ? "relay" : "all" };
  try {
    pc = new RTCPeerConnection(config);
  } catch (e) {
    // An ICE server entry the browser refuses: go on without them (unless relay-only).
    state.iceErrors.push({ url: "", errorCode: 0, errorText: "RTCPeerConnection refused the ICE servers: " + e.message });
    if (relay) { retry("Relay only (relay=1), but the browser refused the announced TURN servers: " + e.message); return; }
    pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  }
  const thisPc = pc;
  pc.addTransceiver("video", { direction: "recvonly" });
  if (withChannel) channel = openChannel(pc, state, channelEvents);
  const thisSession = session = new WhepSession(pc, whepUrl(), {
    headers: auth,
    on: {
      posted: () => { postedAt = performance.now(); },
      answered: () => mark("answer"),
      patched: ({ status, candidates }) => {
        if (gen !== generation) return;
        state.patchStatus = status;
        state.trickled += candidates;
      },
    },
  });
  pc.oniceconnectionstatechange = () => { if (gen === generation) mark("ice-" + thisPc.iceConnectionState); };
  pc.ontrack = (ev) => {
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    video.play().catch(() => {});
  };
  pc.onconnectionstatechange = () => {
    if (gen !== generation) return;
    const s = thisPc.connectionState;
    mark("pc-" + s);
    if (s === "connected") {
      state.connected = true;
      backoff = 500;
      setStatus("live" + (relay ? " (relayed through TURN)" : ""));
      picker?.refresh(); // counting this viewer now
    }
    // A new session rather than an ICE restart on this one: Chromium calls a broken path
    // disconnected after about 6 s of silence (5.7 s measured), by when whepcast has closed
    // a silent session already (4 s + 2 s grace).
    if (s === "failed" || s === "disconnected" || s === "closed") {
      retry("connection " + s);
    }
  };

  // Our candidates go to the session (trickled with PATCH once it exists).
  let relaySeen = false;
  const failedTurn = new Map();
  const relayProblem = (noError = "no relay candidate gathered") => {
    const urls = turnUrls(config.iceServers);
    const what = urls.map((u) => {
      const err = failedTurn.get(baseUrl(u));
      return "TURN server " + u + (err ? ` (error ${err.errorCode}: ${err.errorText || "no reason given"})` : ` (${noError})`);
    }).join("; ");
    return `No relay from ${what}. Check that the TURN server runs and whepcast's --turn-user/--turn-pass.`;
  };
  pc.onicecandidate = (ev) => {
    if (gen !== generation) return;
    if (ev.candidate && ev.candidate.candidate) {
      mark("candidate");
      if (ev.candidate.type === "relay" || / typ relay /.test(ev.candidate.candidate)) {
        mark("relay-candidate");
        relaySeen = true;
      }
    }
    thisSession.trickle(ev.candidate);
  };
  pc.onicegatheringstatechange = () => {
    if (gen !== generation || thisPc.iceGatheringState !== "complete") return;
    mark("gathered");
    if (relay && !relaySeen) retry(relayProblem());
  };
  pc.onicecandidateerror = (ev) => {
    if (gen !== generation) return;
    const err = { url: ev.url, errorCode: ev.errorCode, errorText: ev.errorText, address: ev.address, port: ev.port };
    state.iceErrors.push(err);
    if (/^turns?:/i.test(ev.url || "")) failedTurn.set(baseUrl(ev.url), err);
    // Relay only and every TURN server failed: say so now rather than at the end of gathering.
    const urls = turnUrls(config.iceServers);
    if (relay && !relaySeen && urls.length && urls.every((u) => failedTurn.has(baseUrl(u)))) {
      retry(relayProblem());
    }
  };
  if (relay) {
    // A TURN server that does not answer at all takes the browser ~40 s to give up on;
    // say what is wrong long before (and keep waiting: a far server may still answer).
    setTimeout(() => {
      if (gen !== generation || relaySeen) return;
      state.lastError = relayProblem("no answer in 5 s");
      setStatus(state.lastError + " — still waiting", true);
    }, 5000);
  }
  try {
    await thisSession.start();
    if (gen !== generation) return;
    // The answer's ICE servers are authoritative (they need the token): keep them for reconnects.
    if (thisSession.iceServers.length) { iceCache = { token, servers: thisSession.iceServers }; state.iceServers = thisSession.iceServers; }
  } catch (e) {
    if (e instanceof HttpStatusError && e.status === 401) {
      const typed = prompt("This stream needs an access token:");
      if (typed) { token = typed.trim(); sessionStorage.setItem("whepcast-token", token); backoff = 0; }
    }
    if (gen === generation) retry(e.message || String(e));
  }
}

function teardown() {
  if (channel) { channel.close(); channel = null; }
  chat.show(false);
  if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; }
  if (session) { session.close(); session = null; }
}

function retry(reason) {
  generation++;
  state.connected = false;
  state.lastError = reason;
  teardown();
  clearTimeout(timer);
  const wait = backoff;
  backoff = Math.min(Math.max(backoff * 2, 500), 8000);
  setStatus(reason + " — retrying in " + (wait / 1000).toFixed(1) + " s", true);
  timer = setTimeout(connect, wait);
}

// ---- data channel and chat ----

const chat = chatPanel(state, (text) => channel !== null && channel.send({ type: "chat", text }));
const channelEvents = {
  hello: () => chat.show(true),
  viewers: () => chat.update(),
  chat: (from, text) => chat.line(from, text, from === state.viewerName ? "me" : ""),
  error: (text) => chat.line(null, text, "err"),
  closed: () => chat.show(false),
  link: () => quality.update(),
};
// A new choice: a new session asking for it (the first frame comes within ~50 ms).
const quality = qualityMenu(state, (value) => {
  state.quality = value;
  quality.update();
  backoff = 0;
  retry("switching to " + value);
});

// ---- per frame: TTFF, latency ----

// Count decoded frames as the compositor presents them; the first one stops the TTFF clock.
// A few times a second, read the pattern's barcode: its display time minus the capture time
// is the glass-to-glass latency.
const barcode = barcodeReader(video);
let lastRead = 0;
function onFrame(now, meta) {
  state.callbackFrames++;
  channel?.frame(meta, now);
  if (now - lastRead > 200) {
    lastRead = now;
    const ms = barcode.read();
    if (ms !== null) {
      const latency = Math.round(shownAt(meta, now) % 2 ** 40 - ms);
      if (latency > -1000 && latency < 60000) {
        state.latencySamples.push(latency);
        if (state.latencySamples.length > 300) state.latencySamples.shift();
        const recent = state.latencySamples.slice(-15).sort((a, b) => a - b);
        state.latencyMs = recent[recent.length >> 1];
      }
    }
  }
  if (state.ttffMs === null && postedAt) { state.ttffMs = Math.round(now - postedAt); mark("first-frame"); }
  video.requestVideoFrameCallback(onFrame);
}
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) video.requestVideoFrameCallback(onFrame);

async function updateStats() {
  if (!pc) return;
  await collectStats(pc, state, prevStats);
  renderStats(statsPanel, statItems(state));
}
setInterval(() => updateStats().catch(() => {}), 1000);

// ---- the page ----

controls();
const picker = params.get("endpoint") ? null : streamPicker(state, m ? decodeURIComponent(m[1]) : null, auth);
addEventListener("pagehide", teardown);
connect();
