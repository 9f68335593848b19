// A real third-party media server for the WHIP publisher tests: Janus (Debian's `janus`) with
// Meetecho's simple-whip-server as its WHIP front, and a headless Chromium that watches the
// published stream *through Janus* (a VideoRoom subscriber on Janus's HTTP API).
//
//   const janus = await startJanus({ token: "t", bitrate: 500000 });
//   // ... whepcast publish <janus.whipUrl> --token t ...
//   const browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
//   const viewer = await watchThroughJanus(browser, janus);
//   await viewer.waitFor((s) => s.framesDecoded >= 30);
//   await viewer.close(); await browser.close(); await janus.stop();
//
// In the loopback-only namespace of scripts/test.sh, Janus needs one more interface: it gathers
// ICE candidates on every interface *except* loopback ones (src/ice.c skips IFF_LOOPBACK, and so
// does libnice, whatever ice_enforce_list says). So startJanus adds a veth pair there with
// 198.18.7.x (no route beyond the namespace) and removes it on stop(). Peers reach that address
// from 127.0.0.1 through the kernel's local table. Chromium gathers host candidates there only
// with --use-fake-ui-for-media-stream and on an http origin (none on about:blank); without any,
// it still connects, through the peer-reflexive candidates Janus learns from its checks.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, copyFileSync, symlinkSync, existsSync, readFileSync } from "node:fs";
import { tmpdir, networkInterfaces } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus";

/**
 * Where simple-whip-server's src/ is. The Debian package cannot be installed next to
 * NodeSource's node (its node-websocket needs Debian's libnode108, which conflicts with it), so
 * scripts/setup-test.sh unpacks it under /opt and tests/browser's npm dependencies provide its
 * modules. Where the package is installed for real, that copy is used.
 */
function whipServerSrc() {
  const candidates = [process.env.SIMPLE_WHIP_SERVER, "/usr/share/simple-whip-server/src",
    "/opt/simple-whip-server/usr/share/simple-whip-server/src"];
  const src = candidates.find((d) => d && existsSync(join(d, "server.js")));
  if (!src) throw new Error("simple-whip-server not found: run scripts/setup-test.sh");
  return src;
}

async function until(what, fn, exited, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn().catch(() => false)) return;
    if (exited()) throw new Error(`${what} exited`);
    if (Date.now() > end) throw new Error(`${what} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function run(cmd, args, options, logs, name) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  const collect = (d) => { for (const line of String(d).split("\n")) if (line) logs.push(`[${name}] ${line}\n`); };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise((r) => child.once("exit", (code) => r(code)));
  // Never leave one behind, even when a test run aborts.
  const reap = () => { if (child.exitCode === null) child.kill("SIGKILL"); };
  process.once("exit", reap);
  exited.then(() => process.removeListener("exit", reap));
  return {
    child, exited: () => child.exitCode !== null,
    async stop() { if (child.exitCode === null) { child.kill("SIGTERM"); await exited; } },
  };
}

let vethCount = 0;

/**
 * Gives Janus a non-loopback interface when the namespace has none: a veth pair (this kernel
 * has no dummy interfaces) whose one end holds a /32 address. Returns { name, ip, remove() },
 * or null where the namespace already has one (then Janus uses that, as on a host).
 */
function janusInterface() {
  const hasOther = Object.values(networkInterfaces()).flat().some((a) => a.family === "IPv4" && !a.internal);
  if (hasOther) return null;
  const n = ++vethCount;
  const name = `wj${process.pid % 100000}x${n}`, ip = `198.18.7.${(process.pid + n) % 250 + 1}`;
  const ipc = (...args) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
  try {
    ipc("link", "add", name, "type", "veth", "peer", "name", name + "p");
  } catch (e) {
    throw new Error("Janus needs a non-loopback interface and adding one needs root: " + e.message);
  }
  const remove = () => { try { ipc("link", "del", name); } catch { /* gone with the namespace */ } };
  try {
    // No IPv6 link-local addresses: nothing should gather on these but Janus, on `ip`.
    for (const end of [name, name + "p"]) ipc("link", "set", end, "addrgenmode", "none");
    ipc("addr", "add", ip + "/32", "dev", name);
    for (const end of [name, name + "p"]) ipc("link", "set", end, "up"); // a veth runs only with both ends up
  } catch (e) { remove(); throw e; }
  process.once("exit", remove);
  return { name, ip, remove() { process.removeListener("exit", remove); remove(); } };
}

/**
 * Starts Janus (videoroom plugin, HTTP and WebSocket transports only, on 127.0.0.1) with one
 * H.264 room, and simple-whip-server in front of it with one WHIP endpoint that takes `token`.
 * `bitrate` (bps) is the room's REMB cap (none by default); `firFreq` (s) how often Janus asks
 * the publisher for a keyframe besides when a subscriber joins (0: never). `iceServers`
 * ([{ uri, username?, credential? }]) come back to the publisher as Link headers.
 */
export async function startJanus({ token, room = 1234, bitrate = 0, firFreq = 0, id = "whepcast", iceServers } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "whepcast-janus-"));
  const logs = [];
  const procs = [];
  let iface = null;
  const stop = async () => {
    for (const p of procs.splice(0).reverse()) await p.stop();
    iface?.remove();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    iface = janusInterface();
    const ports = new Set();
    while (ports.size < 3) ports.add(await freePort());
    const [httpPort, wsPort, whipPort] = ports;
    // Own plugin and transport folders holding only what is needed: Janus loads every library
    // in them, and the others (SIP, MQTT, RabbitMQ, ...) only slow the start and log errors.
    for (const sub of ["conf", "plugins", "transports", "none"]) mkdirSync(join(dir, sub));
    symlinkSync(join(JANUS_LIB, "plugins", "libjanus_videoroom.so"), join(dir, "plugins", "libjanus_videoroom.so"));
    for (const t of ["http", "websockets"]) symlinkSync(join(JANUS_LIB, "transports", `libjanus_${t}.so`), join(dir, "transports", `libjanus_${t}.so`));
    const conf = (name, text) => writeFileSync(join(dir, "conf", name), text);
    conf("janus.jcfg", `general: {
  configs_folder = "${dir}/conf"
  plugins_folder = "${dir}/plugins"
  transports_folder = "${dir}/transports"
  events_folder = "${dir}/none"
  loggers_folder = "${dir}/none"
  debug_level = 4
  debug_colors = false
}
# No STUN/TURN: host candidates only${iface ? ", on our veth alone (Janus skips loopback)" : ""}.
# Keepalives as binding requests, not indications: unanswered, they fail ICE and Janus hangs up,
# so a publisher that vanished without a DELETE frees the WHIP endpoint (else it stays "in use").
nat: {
  ice_keepalive_conncheck = true${iface ? `
  ice_enforce_list = "${iface.name}"` : ""}
}
`);
    conf("janus.transport.http.jcfg", `general: { json = "plain" base_path = "/janus" http = true port = ${httpPort} ip = "127.0.0.1" https = false }
admin: { admin_http = false }
`);
    conf("janus.transport.websockets.jcfg", `general: { json = "plain" ws = true ws_port = ${wsPort} ws_ip = "127.0.0.1" wss = false }
admin: { admin_ws = false }
`);
    // One publisher, H.264 constrained baseline (what whepcast sends); the REMB cap is a hard one.
    conf("janus.plugin.videoroom.jcfg", `general: { }
room-${room}: {
  description = "whepcast"
  publishers = 1
  videocodec = "h264"
  h264_profile = "42e01f"
  fir_freq = ${firFreq}
  bitrate = ${bitrate}
  bitrate_cap = ${bitrate > 0}
}
`);
    const janus = run("janus", ["-F", join(dir, "conf"), "-C", join(dir, "conf", "janus.jcfg")], {}, logs, "janus");
    procs.push(janus);
    const janusHttp = `http://127.0.0.1:${httpPort}/janus`;
    await until("janus", async () => (await fetch(janusHttp + "/info")).ok, janus.exited);

    // simple-whip-server reads ./config.js next to server.js: run a copy beside our own.
    const src = whipServerSrc();
    mkdirSync(join(dir, "whip"));
    for (const f of ["server.js", "whip-janus.js"]) copyFileSync(join(src, f), join(dir, "whip", f));
    writeFileSync(join(dir, "whip", "config.js"), `module.exports = ${JSON.stringify({
      janus: { address: `ws://127.0.0.1:${wsPort}` }, port: whipPort, rest: "/whip",
      allowTrickle: true, strictETags: false, iceServers: [],
    })};\n`);
    const whip = run("node", [join(dir, "whip", "server.js")], {
      cwd: join(dir, "whip"),
      env: {
        ...process.env, NODE_PATH: join(here, "node_modules"), FORCE_COLOR: "0", DEBUG_COLORS: "no",
        DEBUG: "whip:*,janus:*,-janus:vdebug,-janus:debug",
      },
    }, logs, "whip");
    procs.push(whip);
    const whipBase = `http://127.0.0.1:${whipPort}/whip`;
    await until("simple-whip-server", async () => (await fetch(whipBase + "/healthcheck")).ok, whip.exited);
    const created = await fetch(whipBase + "/create", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ id, room, token, iceServers }),
    });
    if (!created.ok) throw new Error(`simple-whip-server /create: ${created.status} ${await created.text()}`);

    return { whipUrl: `${whipBase}/endpoint/${id}`, token, janusHttp, room, iceIp: iface?.ip ?? null, stop, log: () => logs.join("") };
  } catch (e) {
    await stop();
    e.message += "\n" + logs.join("").slice(-4000);
    throw e;
  }
}

// The watching page, served on Janus's own origin (so its API calls need no CORS) by a route.
const WATCH_PAGE = `<!doctype html><meta charset="utf-8"><title>through Janus</title>
<style>body{margin:0;background:#000}video{width:100vw;height:100vh}</style>
<video id="v" autoplay muted playsinline></video>
<script type="module">
import { barcodeReader } from "./barcode.js";
const api = "/janus";
const tx = () => Math.random().toString(36).slice(2);
async function post(path, body) {
  const json = await (await fetch(api + path, { method: "POST", body: JSON.stringify({ transaction: tx(), ...body }) })).json();
  if (json.janus === "error") throw new Error(json.error.reason);
  return json;
}
const state = window.janusWatch = { error: null, events: [], closed: false };
const video = document.getElementById("v");
const barcode = barcodeReader(video);
// { frame, ms } (web/barcode.js's decode(); an older one only reads the capture time).
window.readBarcode = () => barcode.decode ? barcode.decode() : (barcode.read() === null ? null : { frame: null, ms: barcode.read() });
const pc = window.pc = new RTCPeerConnection();
pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
async function main(room) {
  const session = (await post("", { janus: "create" })).data.id;
  const handle = (await post("/" + session, { janus: "attach", plugin: "janus.plugin.videoroom" })).data.id;
  const msg = (body, jsep) => post("/" + session + "/" + handle, { janus: "message", body, ...(jsep ? { jsep } : {}) });
  state.session = session;
  window.closeJanus = () => { state.closed = true; pc.close(); return post("/" + session, { janus: "destroy" }).catch(() => {}); };
  // Wait for the WHIP publisher to be in the room.
  let feed;
  for (;;) {
    const list = (await msg({ request: "listparticipants", room })).plugindata.data.participants || [];
    feed = list.find((p) => p.publisher);
    if (feed) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  state.feed = feed.id;
  await msg({ request: "join", ptype: "subscriber", room, streams: [{ feed: feed.id }] });
  // Events arrive by long poll (which also keeps the session alive): Janus offers, we answer.
  while (!state.closed) {
    const res = await fetch(api + "/" + session + "?maxev=10&rid=" + Date.now());
    let evs = await res.json();
    if (!Array.isArray(evs)) evs = [evs];
    for (const ev of evs) {
      if (ev.janus === "keepalive") continue;
      state.events.push(ev.janus + (ev.plugindata ? " " + JSON.stringify(ev.plugindata.data) : ""));
      if (ev.jsep && ev.jsep.type === "offer") {
        await pc.setRemoteDescription(ev.jsep);
        await pc.setLocalDescription(await pc.createAnswer());
        // Whole answer, candidates included: no trickle to keep the exchange to one message.
        if (pc.iceGatheringState !== "complete") {
          await new Promise((r) => { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); });
        }
        await msg({ request: "start" }, { type: "answer", sdp: pc.localDescription.sdp, trickle: false });
      }
    }
  }
}
window.startWatch = (room) => { main(room).catch((e) => { state.error = String(e); }); };
</script>`;

/**
 * Opens a page in `browser` (from launchBrowser) that subscribes to the room's publisher through Janus and plays it;
 * it waits for a publisher if there is none yet, and follows only the first one it finds.
 * stats() reads the inbound video's getStats(); barcode() the test pattern's barcode in the
 * picture shown now ({ frame, ms }: frame number mod 2^24, capture time in Unix ms mod 2^40; or
 * null), frameCounter() just its frame number; waitFor(pred) polls stats().
 */
export async function watchThroughJanus(browser, { janusHttp, room }) {
  const page = await browser.context.newPage();
  const origin = new URL(janusHttp).origin;
  const barcodeJs = readFileSync(join(here, "..", "..", "web", "barcode.js"), "utf8");
  await page.route(origin + "/whepcast-watch/**", (route) => {
    const url = route.request().url();
    if (url.endsWith("/barcode.js")) return route.fulfill({ contentType: "text/javascript", body: barcodeJs });
    return route.fulfill({ contentType: "text/html; charset=utf-8", body: WATCH_PAGE });
  });
  await page.goto(origin + "/whepcast-watch/");
  await page.waitForFunction(() => typeof window.startWatch === "function");
  await page.evaluate((r) => window.startWatch(r), room);

  const stats = () => page.evaluate(async () => {
    const s = { framesDecoded: 0, frameWidth: 0, frameHeight: 0, keyFramesDecoded: 0, bytesReceived: 0 };
    for (const r of (await window.pc.getStats()).values()) {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        for (const k of Object.keys(s)) s[k] = r[k] ?? 0;
      }
    }
    if (window.janusWatch.error) s.error = window.janusWatch.error;
    return s;
  });
  return {
    page, stats,
    barcode: () => page.evaluate(() => window.readBarcode()),
    frameCounter: async () => (await page.evaluate(() => window.readBarcode()))?.frame ?? null,
    /** Polls stats() until `pred(stats)` holds; throws with the page's Janus events if not in `ms`. */
    async waitFor(pred, ms = 20000) {
      const end = Date.now() + ms;
      for (;;) {
        const s = await stats();
        if (s.error) throw new Error("watching through Janus: " + s.error);
        if (pred(s)) return s;
        if (Date.now() > end) {
          const events = await page.evaluate(() => window.janusWatch.events);
          throw new Error(`timed out; stats ${JSON.stringify(s)}; Janus events: ${events.join(" | ")}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async close() {
      await page.evaluate(() => window.closeJanus && window.closeJanus()).catch(() => {});
      await page.close();
    },
  };
}
