// The project's viewer page in real headless Chromium against the real server: it must
// decode and play the test pattern, and what it shows must be the pattern.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PNG } from "pngjs";
import { startServer, launchBrowser, waitInPage } from "./harness.mjs";

// 75 % colour bars, left to right (src/source/pattern.rs BARS).
const BARS = [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191]];

function pixel(png, x, y) {
  const i = (png.width * y + x) * 4;
  return [png.data[i], png.data[i + 1], png.data[i + 2]];
}

test("viewer page plays the pattern: 60+ decoded frames, bars visible, picture moves", async () => {
  const server = await startServer(["--size", "1280x720", "--fps", "30"]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/");
    const state = await waitInPage(page, () => window.whepcast.framesDecoded >= 60 && window.whepcast);
    assert.equal(state.width, 1280);
    assert.equal(state.height, 720);
    assert.ok(state.ttffMs > 0, "time to first frame measured");
    // The page reads the capture time from the pattern's barcode: a plausible latency.
    const latency = await waitInPage(page, () => window.whepcast.latencyMs !== null && window.whepcast.latencyMs);
    assert.ok(latency >= 0 && latency < 1000, `glass-to-glass latency ${latency} ms`);

    const shot = PNG.sync.read(await page.screenshot());
    assert.equal(shot.width, 1280);
    // Sample the middle of each bar below the overlay.
    BARS.forEach((want, i) => {
      const x = Math.round((i + 0.5) * 1280 / 7);
      const got = pixel(shot, x, 200);
      for (let c = 0; c < 3; c++) {
        assert.ok(Math.abs(got[c] - want[c]) <= 30, `bar ${i} at x=${x}: got ${got}, want ${want}`);
      }
    });
    // The lower half (box, counter, clock) changes between two screenshots.
    await page.waitForTimeout(300);
    const later = PNG.sync.read(await page.screenshot());
    let changed = 0;
    for (let y = 380; y < 700; y += 4) for (let x = 0; x < 1280; x += 4) {
      if (Math.abs(pixel(shot, x, y)[0] - pixel(later, x, y)[0]) > 40) changed++;
    }
    assert.ok(changed > 100, `only ${changed} sampled pixels changed: the picture is not moving`);
  } finally {
    await browser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});

test("Chromium's first, nominating ICE check is answered (no wait for its next check)", async () => {
  // Chromium nominates in its first check. Unanswered, it only connects on its next check
  // (48 ms later) and that request stays unanswered in its stats for ever.
  const server = await startServer(["--size", "320x240", "--fps", "30"]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/?datachannel=0");
    await waitInPage(page, () => window.whepcast.framesDecoded >= 10);
    const checks = await waitInPage(page, () => {
      const c = window.whepcast.checks;
      return c && c.sent >= 1 && c.sent === c.answered && c;
    }, null, 10000);
    assert.equal(checks.sent, checks.answered, "every check on the selected pair answered");
    const metrics = await (await fetch(server.url + "/metrics")).text();
    const replayed = Number(metrics.match(/^whepcast_ice_nominations_replayed_total (\d+)/m)?.[1] ?? 0);
    assert.ok(replayed >= 1, `the server answered the first nomination by replay (${replayed})`);
  } finally {
    await browser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});

test("viewer page reconnects by itself when the server restarts", async () => {
  let server = await startServer(["--size", "640x360"]);
  const listen = new URL(server.url).host;
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/");
    await waitInPage(page, () => window.whepcast.framesDecoded >= 10);
    assert.equal(await server.stop(), 0);
    await waitInPage(page, () => !window.whepcast.connected, null, 30000);
    server = await startServer(["--size", "640x360"], listen);
    const state = await waitInPage(page,
      () => window.whepcast.connected && window.whepcast.attempts >= 2 && window.whepcast.framesDecoded >= 10 && window.whepcast,
      null, 30000);
    assert.ok(state.attempts >= 2);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the page lists every stream with live viewer counts and plays any by name", async () => {
  const server = await startServer(["--stream", "desk=pattern,size=640x360", "--stream", "small=pattern,size=320x240,fps=15"]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/");
    // `/` plays the first stream and lists both, counting this viewer.
    await waitInPage(page, () => window.whepcast.framesDecoded >= 10 && window.whepcast.width === 640);
    await waitInPage(page, () => {
      const items = [...document.querySelectorAll("#streams li")].map((li) => li.textContent);
      return items.length === 2 && items[0].startsWith("desk") && items[0].includes("1 watching")
        && items[1].startsWith("small") && items[1].includes("0 watching");
    });
    // Following the link plays the other stream.
    await page.click("#streams li:nth-child(2) a");
    await page.waitForURL("**/view/small");
    const s = await waitInPage(page, () => window.whepcast.framesDecoded >= 10 && window.whepcast);
    assert.equal(s.width, 320);
    assert.equal(s.height, 240);
    assert.equal(s.endpoint, "/whep/small");
  } finally {
    await browser.close();
    await server.stop();
  }
});
