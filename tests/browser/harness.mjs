// Shared by the browser tests and benchmarks: start a real whepcast server, launch a real
// headless Chromium (Debian's, driven by playwright-core), open pages.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const WHEPCAST = process.env.WHEPCAST_BIN || join(root, "target", "release", "whepcast");
export const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";

/** Starts `whepcast serve` on an ephemeral port; resolves once it printed its URL. */
export function startServer(args = [], listen = "127.0.0.1:0") {
  return new Promise((resolve, reject) => {
    const child = spawn(WHEPCAST, ["serve", "--listen", listen, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, WHEPCAST_LOG: process.env.WHEPCAST_LOG || "whepcast=info,error" },
    });
    let out = "", log = "";
    // Cleared once it started: a pending timer would keep node alive after the last test.
    const timer = setTimeout(() => reject(new Error("whepcast did not start: " + log)), 15000);
    child.stderr.on("data", (d) => { log += d; });
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/[\d.]+:\d+/);
      if (m) { clearTimeout(timer); resolve({ url: m[0], child, log: () => log, stop: () => stopChild(child) }); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`whepcast exited with ${code}: ${log}`)); });
  });
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

/** Headless Chromium's switches for every test: no sandbox (root), no network chatter, host
 * candidates on loopback, autoplay. */
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
];

/**
 * A headless Chromium with a fresh profile, as root on a loopback-only network. `args` adds
 * command-line switches, e.g. --use-fake-ui-for-media-stream: with media permission granted
 * Chromium gathers host candidates on every interface, loopback included (without it, in a
 * loopback-only namespace, it gathers none and only learns peer-reflexive ones from checks).
 * `context` adds playwright context options, e.g. a phone's { viewport, deviceScaleFactor,
 * isMobile, hasTouch }.
 */
export async function launchBrowser({ args = [], context: options = {} } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "whepcast-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 720 },
    ...options,
    args: [...CHROMIUM_ARGS, ...args],
  });
  // WHEPCAST_PAGE=path/to/index.html: serve that viewer page, and its /assets/NAME from the
  // same directory, instead of the ones built into the binary (to try page changes against
  // an older server build without rebuilding it).
  if (process.env.WHEPCAST_PAGE) {
    const html = readFileSync(process.env.WHEPCAST_PAGE, "utf8");
    const dir = dirname(process.env.WHEPCAST_PAGE);
    await context.route((url) => url.pathname === "/" || url.pathname.startsWith("/view/"),
      (route) => route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html }));
    await context.route((url) => /^\/assets\/[\w.-]+$/.test(url.pathname), (route) => {
      const name = new URL(route.request().url()).pathname.slice("/assets/".length);
      let body;
      try { body = readFileSync(join(dir, name), "utf8"); } catch { return route.fulfill({ status: 404, body: "not here" }); }
      const contentType = name.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8";
      return route.fulfill({ status: 200, contentType, headers: { "Cache-Control": "no-cache" }, body });
    });
  }
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` in the page until it returns a truthy value or `ms` pass. */
export async function waitInPage(page, fn, arg, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await page.evaluate(fn, arg);
    if (v) return v;
    if (Date.now() > end) {
      const state = await page.evaluate(() => JSON.stringify(window.whepcast));
      throw new Error("timed out; page state: " + state);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A UDP port on 127.0.0.1 that nothing listens on right now (TCP free too). */
export async function freePort() {
  const { createSocket } = await import("node:dgram");
  const { createServer } = await import("node:net");
  for (;;) {
    const udp = createSocket("udp4");
    const port = await new Promise((res, rej) => {
      udp.once("error", rej);
      udp.bind(0, "127.0.0.1", () => res(udp.address().port));
    });
    const tcpFree = await new Promise((res) => {
      const srv = createServer();
      srv.once("error", () => res(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => res(true)));
    });
    await new Promise((r) => udp.close(r));
    if (tcpFree) return port;
  }
}

/** Resolves true once a STUN Binding request to 127.0.0.1:port gets a response. */
async function stunAnswers(port, ms) {
  const { createSocket } = await import("node:dgram");
  const { randomBytes } = await import("node:crypto");
  const sock = createSocket("udp4");
  const req = Buffer.alloc(20);
  req.writeUInt16BE(0x0001, 0); // Binding request, no attributes
  req.writeUInt32BE(0x2112a442, 4); // magic cookie
  randomBytes(12).copy(req, 8);
  return new Promise((resolve) => {
    const done = (ok) => { clearInterval(tick); clearTimeout(limit); sock.close(); resolve(ok); };
    sock.on("message", (msg) => { if (msg.length >= 20 && msg.readUInt16BE(0) === 0x0101) done(true); });
    sock.on("error", () => {}); // ICMP port unreachable until the server listens
    const send = () => sock.send(req, port, "127.0.0.1");
    const tick = setInterval(send, 100);
    const limit = setTimeout(() => done(false), ms);
    send();
  });
}

/**
 * Starts a real TURN server (coturn) on loopback with long-term credentials `user`:`pass`;
 * resolves once it answers STUN on its port. `url` is the turn: URL to give whepcast --turn.
 */
export async function startTurn({ user = "u", pass = "p", realm = "whepcast" } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "whepcast-turn-"));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn("turnserver", [
      "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", `--listening-port=${port}`,
      "--min-port=49200", "--max-port=49300", `--user=${user}:${pass}`, `--realm=${realm}`,
      "--lt-cred-mech", "--no-tls", "--no-dtls", "--allow-loopback-peers", "--no-cli",
      "--log-file=stdout", "--simple-log", `--pidfile=${join(dir, "turnserver.pid")}`,
      `--userdb=${join(dir, "turndb")}`,
    ], { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    child.stdout.on("data", (d) => { log += d; });
    child.stderr.on("data", (d) => { log += d; });
    const exited = new Promise((r) => child.once("exit", (code) => r(code)));
    // coturn outlives its parent: never leave one behind, even when a test run aborts.
    const reap = () => { if (child.exitCode === null) child.kill("SIGKILL"); };
    process.once("exit", reap);
    exited.then(() => process.removeListener("exit", reap));
    const up = await Promise.race([stunAnswers(port, 10000), exited.then(() => false)]);
    if (up) {
      return {
        url: `turn:127.0.0.1:${port}`, port, user, pass, child, log: () => log,
        async stop() {
          if (child.exitCode === null) { child.kill("SIGTERM"); await exited; }
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    if (child.exitCode === null) { child.kill("SIGKILL"); await exited; }
    if (attempt >= 2) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error("coturn (turnserver) did not start on 127.0.0.1:" + port + ":\n" + log.slice(-3000));
    }
  }
}

/** Sum of every sample of a Prometheus metric in GET /metrics, or null when it is absent. */
export async function metric(serverUrl, name) {
  const text = await (await fetch(serverUrl + "/metrics")).text();
  let sum = null;
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m && m[1] === name) sum = (sum || 0) + Number(m[3]);
  }
  return sum;
}
