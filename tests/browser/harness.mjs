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
    child.stderr.on("data", (d) => { log += d; });
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/http:\/\/[\d.]+:\d+/);
      if (m) resolve({ url: m[0], child, log: () => log, stop: () => stopChild(child) });
    });
    child.on("exit", (code) => reject(new Error(`whepcast exited with ${code}: ${log}`)));
    setTimeout(() => reject(new Error("whepcast did not start: " + log)), 15000);
  });
}

function stopChild(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    child.once("exit", (code) => resolve(code));
    child.kill("SIGTERM");
  });
}

/** A headless Chromium with a fresh profile, as root on a loopback-only network. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "whepcast-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 720 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-features=WebRtcHideLocalIpsWithMdns", "--allow-loopback-in-peer-connection",
      "--autoplay-policy=no-user-gesture-required",
    ],
  });
  // WHEPCAST_PAGE=path/to/index.html: serve that viewer page instead of the one built into the
  // binary (to try page changes against an older server build without rebuilding it).
  if (process.env.WHEPCAST_PAGE) {
    const html = readFileSync(process.env.WHEPCAST_PAGE, "utf8");
    await context.route((url) => url.pathname === "/" || url.pathname.startsWith("/view/"),
      (route) => route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html }));
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
