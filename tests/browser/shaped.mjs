// A shaped link between a whepcast server and a headless Chromium, for tests and benchmarks:
// scripts/shape.sh puts them in namespaces NAME-srv and NAME-view with a router between that
// limits the rate and drops packets server->viewer (see that script for why it is done so).
//
//   const link = await makeLink();               // needs root; works inside `unshare -n` too
//   const server = await startServerIn(link, ["--fps", "30"]);
//   const browser = await launchBrowserIn(link);
//   const page = await browser.context.newPage();
//   await page.goto(server.url + "/");
//   await link.set("1mbit", 1, 300);             // now 1 Mbit/s, 1 % loss, 300 ms queue
//   const series = await watch(page, 20);        // one getStats() sample a second
//   await browser.close(); await server.stop(); link.down();
//
// Everything made here is also removed when the process exits (links, wrapper scripts,
// profiles), so a failed test leaves no namespace, server or browser behind.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { WHEPCAST, CHROMIUM, CHROMIUM_ARGS } from "./harness.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const SHAPE = join(root, "scripts", "shape.sh");

const shape = (...args) => execFileSync("bash", [SHAPE, ...args.map(String)], { encoding: "utf8" }).trim();

// Cleanup on exit, in reverse order of creation; exit handlers must be synchronous.
const cleanups = new Map();
let cleanupId = 0;
function onExit(fn) {
  const id = ++cleanupId;
  cleanups.set(id, fn);
  return () => cleanups.delete(id);
}
process.once("exit", () => {
  for (const fn of [...cleanups.values()].reverse()) { try { fn(); } catch { /* best effort */ } }
});
// A signal ends node without "exit" handlers: turn it into an exit (unless someone else handles it).
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  if (process.listenerCount(sig) === 0) process.once(sig, () => process.exit(128 + { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 }[sig]));
}

let linkCount = 0;

/**
 * Creates a link (three namespaces; unique name from this process's pid unless `name` is given),
 * unshaped. `set(rate, loss, queueMs)` shapes server->viewer: rate as tc spells it ("1mbit",
 * "500kbit") or "none"; loss in percent; queueMs the bottleneck's queue (default 300).
 */
export async function makeLink(name = `wc${process.pid}-${++linkCount}`) {
  shape("up", name);
  const forget = onExit(() => shape("down", name));
  return {
    name,
    serverNs: `${name}-srv`,
    viewerNs: `${name}-view`,
    serverIp: shape("addr", name, "srv"),
    viewerIp: shape("addr", name, "view"),
    set(rate = "none", loss = 0, queueMs = 300) { shape("set", name, rate, loss, queueMs); },
    down() { forget(); shape("down", name); },
  };
}

/**
 * Runs `command args` in the link's server namespace; resolves when stdout matches `ready`
 * (its first capture group, or the whole match, is `url`). The process is the command itself
 * (`ip netns exec` execs it), so stop() signals the real server.
 */
export function spawnIn(link, command, args, ready, { env = {}, timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", link.serverNs, command, ...args], {
      stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env },
    });
    const forget = onExit(() => { if (child.exitCode === null) child.kill("SIGKILL"); });
    let out = "", log = "";
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`${command} did not start: ${log}`)); }, timeoutMs);
    child.stderr.on("data", (d) => { log += d; });
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(ready);
      if (!m) return;
      clearTimeout(timer);
      resolve({ url: m[1] ?? m[0], child, log: () => log, stop: () => stopChild(child).finally(forget) });
    });
    child.on("exit", (code) => { forget(); clearTimeout(timer); reject(new Error(`${command} exited with ${code}: ${log}`)); });
  });
}

/** Like harness.startServer, inside the link's server namespace, listening on its address. */
export function startServerIn(link, args = [], { bin = WHEPCAST } = {}) {
  return spawnIn(link, bin, ["serve", "--listen", `${link.serverIp}:0`, ...args], /http:\/\/[\d.]+:\d+/,
    { env: { WHEPCAST_LOG: process.env.WHEPCAST_LOG || "whepcast=info,error" } });
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

/**
 * Like harness.launchBrowser, with Chromium inside the link's viewer namespace: playwright
 * runs a wrapper that execs `ip netns exec NAME-view chromium ...`, which keeps the pid and
 * playwright's pipe (fds 3 and 4), so nothing about driving it changes. The viewer namespace's
 * default route is the veth, so Chromium gathers its host candidate on the viewer address.
 *
 * Every page also keeps its RTCPeerConnections in window.__shapedPcs (the viewer page keeps
 * its own in a module variable), for watch().
 *
 * `namespace: link.serverNs` runs this Chromium beside the server instead: a viewer whose
 * path to the server never crosses the router (unshaped whatever link.set() says).
 */
export async function launchBrowserIn(link, { args = [], context: options = {}, executable = CHROMIUM, namespace = link.viewerNs } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "whepcast-shaped-"));
  const forget = onExit(() => rmSync(dir, { recursive: true, force: true }));
  const wrapper = join(dir, "chromium-in-netns");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${namespace}' '${executable}' "$@"\n`, { mode: 0o755 });
  const context = await chromium.launchPersistentContext(join(dir, "profile"), {
    executablePath: wrapper,
    headless: true,
    viewport: { width: 1280, height: 720 },
    ...options,
    args: [...CHROMIUM_ARGS, ...args],
  });
  await context.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    if (!Native || window.__shapedPcs) return;
    const pcs = window.__shapedPcs = [];
    window.RTCPeerConnection = class extends Native {
      constructor(...a) { super(...a); pcs.push(this); }
    };
  });
  return {
    context,
    async close() {
      await context.close();
      forget();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A new page of `browser` (from launchBrowserIn) loading `url`, loaded again until `ready`
 * (a function run in the page; default: the viewer page's window.whepcast exists) holds.
 * Chromium, new in a namespace, sometimes sees the network change under it at start and
 * fails a load, or one of the page's scripts (then window.whepcast never appears), with
 * net::ERR_NETWORK_CHANGED.
 */
export async function openPage(browser, url, { tries = 6, ready = () => window.whepcast !== undefined } = {}) {
  const page = await browser.context.newPage();
  const failed = [];
  page.on("requestfailed", (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.loadProblems = []; // the loads tried again, and why
  for (let attempt = 1; ; attempt++) {
    let problem;
    try {
      await page.goto(url);
      if (await page.evaluate(ready)) return page;
      problem = `not ready after loading (failed requests: ${failed.join(", ") || "none"})`;
    } catch (e) {
      if (!/net::ERR_/.test(String(e?.message))) throw e;
      problem = String(e.message).split("\n")[0];
    }
    if (attempt >= tries) throw new Error(`${url}: ${problem}, ${attempt} times`);
    page.loadProblems.push(problem);
    failed.length = 0;
    await new Promise((r) => setTimeout(r, 300 * attempt));
  }
}

/**
 * GET `path` (default /api/streams) as JSON, from inside `page`: node runs outside the link's
 * namespaces and cannot reach the server's address, the page can.
 */
export function apiGet(page, path = "/api/streams") {
  return page.evaluate(async (p) => {
    const r = await fetch(p, { cache: "no-store" });
    if (!r.ok) throw new Error(`GET ${p}: ${r.status} ${await r.text()}`);
    return r.json();
  }, path);
}

// Counters that restart with each new peer connection (the page reconnects after a failure):
// watch() adds up every connection's last value so the series stays cumulative.
const COUNTERS = ["framesDecoded", "framesDropped", "totalFreezesDuration", "freezeCount", "packetsLost",
  "packetsReceived", "bytesReceived", "nackCount", "pliCount", "firCount", "jitterBufferDelay",
  "jitterBufferEmittedCount"];

/**
 * Samples the page's latest peer connection once a second for `seconds` s: inbound-rtp video
 * (counters cumulative over reconnects), the current framesPerSecond and frame size, and
 * `shown`, frames the page presented (window.whepcast.callbackFrames, when the page has it).
 * Returns seconds + 1 samples, t = 0 (a baseline, taken at once) to t = seconds:
 * [{ t, pcs, state, shown, framesPerSecond, frameWidth, frameHeight, jitterBufferMs (mean
 * over the second before), ...COUNTERS }]. `onSample(sample)` sees each as it comes.
 */
export async function watch(page, seconds, { onSample } = {}) {
  const series = [];
  const last = new Map(); // pc index -> its latest counters
  const start = Date.now();
  let prev = null;
  for (let t = 0; t <= seconds; t++) {
    await new Promise((r) => setTimeout(r, Math.max(0, start + t * 1000 - Date.now())));
    const s = await page.evaluate(async () => {
      const pcs = window.__shapedPcs || [];
      const pc = pcs[pcs.length - 1];
      const out = { pcs: pcs.length, state: pc ? pc.connectionState : "none", shown: window.whepcast?.callbackFrames ?? null };
      if (!pc || pc.connectionState === "closed") return out;
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp" && r.kind === "video") out.rtp = { ...r };
      });
      return out;
    });
    if (s.rtp) last.set(s.pcs, s.rtp);
    const sample = { t, pcs: s.pcs, state: s.state, shown: s.shown,
      framesPerSecond: s.rtp?.framesPerSecond ?? 0, frameWidth: s.rtp?.frameWidth ?? 0, frameHeight: s.rtp?.frameHeight ?? 0 };
    for (const k of COUNTERS) sample[k] = [...last.values()].reduce((sum, r) => sum + (r[k] ?? 0), 0);
    const emitted = prev ? sample.jitterBufferEmittedCount - prev.jitterBufferEmittedCount : 0;
    sample.jitterBufferMs = emitted > 0 ? Math.round(1000 * (sample.jitterBufferDelay - prev.jitterBufferDelay) / emitted) : null;
    series.push(sample);
    prev = sample;
    onSample?.(sample);
  }
  return series;
}

/** Frames in each sample's second (0 for the first): presented ones when the page counts them, else decoded. */
export function frameCounts(series) {
  const k = series.every((s) => s.shown !== null) ? "shown" : "framesDecoded";
  return series.map((s, i) => (i ? s[k] - series[i - 1][k] : 0));
}

/**
 * Figures for seconds (from, to] of a watch() series: frames/s shown (decoded when the page
 * does not count presented ones), freeze seconds (Chromium's totalFreezesDuration, counted
 * only when a frame ends the freeze: a stall to the end shows in `stalledSeconds` instead),
 * seconds with no new frame, packets lost %, NACKs, PLIs, kbit/s received, frame sizes seen.
 */
export function summarize(series, from = 0, to = series[series.length - 1].t) {
  const a = series[from], b = series[to];
  const d = (k) => b[k] - a[k];
  const counts = frameCounts(series).slice(from + 1, to + 1);
  const lost = d("packetsLost"), got = d("packetsReceived");
  return {
    fps: counts.reduce((x, y) => x + y, 0) / (to - from),
    freezeSeconds: d("totalFreezesDuration"),
    stalledSeconds: counts.filter((n) => n === 0).length,
    lossPercent: lost + got > 0 ? 100 * lost / (lost + got) : 0,
    nacks: d("nackCount"),
    plis: d("pliCount"),
    kbps: d("bytesReceived") * 8 / (to - from) / 1000,
    sizes: [...new Set(series.slice(from + 1, to + 1).filter((s) => s.frameWidth).map((s) => `${s.frameWidth}x${s.frameHeight}`))],
  };
}

/**
 * Seconds after second `from` until the start of the first `window` seconds that each show
 * >= `fps` frames (a smooth picture, not just a good average), or null if there is none.
 */
export function settledAfter(series, from = 0, { fps = 25, window = 5 } = {}) {
  const counts = frameCounts(series);
  for (let t = from; t + window < counts.length; t++) {
    if (counts.slice(t + 1, t + 1 + window).every((n) => n >= fps)) return t - from;
  }
  return null;
}

/**
 * The most frames/s over any `window` consecutive seconds inside (from, to] of a watch()
 * series (an average over the window, not every second), and the second that window starts at.
 */
export function bestWindow(series, from, to = series[series.length - 1].t, window = 5) {
  const counts = frameCounts(series);
  let best = { fps: 0, at: null };
  for (let t = from; t + window <= to; t++) {
    const fps = counts.slice(t + 1, t + 1 + window).reduce((x, y) => x + y, 0) / window;
    if (best.at === null || fps > best.fps) best = { fps, at: t };
  }
  return best;
}

/** Seconds after second `from` until the first sample with frame size `size` ("1280x720"), or null. */
export function sizeAfter(series, from, size) {
  const s = series.slice(from).find((x) => `${x.frameWidth}x${x.frameHeight}` === size);
  return s ? s.t - from : null;
}
