// `serve --source whip`: Chromium publishes the publish page's canvas animation over WHIP
// (web/publish.html, ?source=canvas&autostart=1) and other Chromium pages watch it with the
// viewer page. What viewers see is read from the decoded video: the animation's colours
// (blue background, red disc at the centre), its barcode (the canvas's frame number and
// capture time, read with web/barcode.js) and green square, and the server's "waiting for
// the publisher" picture (dark slate, RGB 32,40,56) while nobody publishes.
//
//   cd tests/browser && unshare -n sh -c 'ip link set lo up && node --test ingest.test.mjs'
//
// Publishing browsers get --use-fake-ui-for-media-stream: with media permission Chromium
// gathers host candidates on loopback (see harness.mjs launchBrowser).
//
// The waiting picture's exact colour is asserted at the end of the tests that show it after
// a publisher: a decoder keeps the colour signalling (range, matrix) of the last SPS that had
// any, and Chromium's canvas publisher signals full-range BT.709, so a waiting picture whose
// SPS signals nothing is shown too light by a viewer that watched the publisher.
//
// What each test prints (# lines) are measurements: the time from the publisher connecting
// to its first frame at a viewer, from the publisher leaving (Stop, or its connection dying)
// to the waiting picture, and from it coming back to its picture again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { startServer, launchBrowser, WHEPCAST } from "./harness.mjs";

/** The Rust viewer (examples/watch.rs, webrtc-rs + OpenH264, built beside the binary): what it
 * decoded of `whep` in `seconds`, as JSON. */
function rustViewer(whep, seconds) {
  const bin = join(dirname(WHEPCAST), "examples", "watch");
  return new Promise((resolve, reject) => {
    execFile(bin, [whep, String(seconds)], { timeout: 60000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`the Rust viewer failed: ${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout));
    });
  });
}

const TOKEN = "ingest-s3cret";
const SLATE = [32, 40, 56];   // src/source/standby.rs BACKGROUND
const BLUE = [0, 0, 255];     // the animation's background (web/publish.js)
const RED = [255, 0, 0];      // its turning square: the disc of radius 60 at the centre
const CANVAS_FPS = 30;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the publish page ----

/** Opens the publish page at `path` with the canvas; autostart unless `autostart` is false. */
async function openPublisher(context, base, { path = "/publish", token = TOKEN, autostart = true } = {}) {
  const page = await context.newPage();
  const console_ = [];
  page.on("console", (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => console_.push(`pageerror: ${e.message}`));
  page.consoleLines = console_;
  const query = "?source=canvas" + (autostart ? "&autostart=1" : "");
  const hash = token === null ? "" : "#token=" + encodeURIComponent(token);
  await page.goto(base + path + query + hash);
  return page;
}

/** The publish page's hooks: state, #error (text and visibility), window.publishStats. */
const publisherState = (page) => page.evaluate(() => {
  const err = document.getElementById("error");
  return {
    state: document.body.dataset.state,
    error: err.textContent,
    errorShown: !err.hidden,
    tokenRowShown: !document.getElementById("token-row").hidden,
    stats: { ...window.publishStats },
  };
});

/** Polls the publish page until its state is `want`; throws (with the page's view) when it fails otherwise or times out. */
async function waitPublisher(page, want, ms, why = () => "") {
  const end = Date.now() + ms;
  for (;;) {
    const s = await publisherState(page);
    if (s.state === want) return s;
    if (s.state === "failed" && want !== "failed") {
      throw new Error(`publish page failed instead of reaching "${want}": #error “${s.error}”, stats ${JSON.stringify(s.stats)}${why()}`);
    }
    if (Date.now() > end) {
      throw new Error(`publish page still "${s.state}" after ${ms} ms (wanted "${want}"): #error “${s.error}”, stats ${JSON.stringify(s.stats)}${why()}`);
    }
    await sleep(50);
  }
}

// ---- what a viewer page shows ----

/**
 * One look at the viewer page's video: mean RGB of regions (in the coordinates of a 640x360
 * picture, whatever the video's size), the barcode (web/barcode.js decode()), the page's
 * numbers. null while the video has no picture.
 */
const probe = (page) => page.evaluate(async () => {
  const video = document.querySelector("video");
  if (!video || !video.videoWidth) return null;
  const { barcodeReader } = await import("/assets/barcode.js");
  window.__reader ??= barcodeReader(video);
  const c = window.__probeCanvas ??= Object.assign(document.createElement("canvas"), { width: 640, height: 360 });
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, 640, 360);
  const px = ctx.getImageData(0, 0, 640, 360).data;
  const mean = (x0, y0, x1, y1) => {
    const sum = [0, 0, 0];
    let n = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) {
      const o = (y * 640 + x) * 4;
      sum[0] += px[o]; sum[1] += px[o + 1]; sum[2] += px[o + 2]; n++;
    }
    return sum.map((v) => Math.round(v / n));
  };
  // The green square's centre on row 300 (it covers rows 276-323), or null when not seen.
  let gx = 0, gn = 0;
  for (let x = 0; x < 640; x++) {
    const o = (300 * 640 + x) * 4;
    if (px[o + 1] > 150 && px[o] < 100 && px[o + 2] < 100) { gx += x; gn++; }
  }
  const code = window.__reader.decode();
  return {
    at: Date.now(),
    width: video.videoWidth, height: video.videoHeight,
    framesDecoded: window.whepcast.framesDecoded, attempts: window.whepcast.attempts,
    connected: window.whepcast.connected,
    topLeft: mean(0, 0, 20, 20),        // slate in the waiting picture (its text starts at x = w/16)
    topRight: mean(604, 4, 636, 36),    // always blue in the animation, slate while waiting
    centre: mean(300, 160, 340, 200),   // inside the animation's always-red disc
    greenX: gn >= 24 ? gx / gn : null,
    code,                                // { frame, ms } or null
  };
});

const near = (got, want, tol) => got.every((v, i) => Math.abs(v - want[i]) <= tol);
/** The publisher's animation: blue corner, red centre. */
const showsCanvas = (p) => !!p && near(p.topRight, BLUE, 40) && near(p.centre, RED, 40);
/** The waiting picture, roughly: slate-ish corners (to see it come; its colour is checked by exactSlate). */
const showsWaiting = (p) => !!p && near(p.topLeft, SLATE, 14) && near(p.topRight, SLATE, 14);
/**
 * The waiting picture's colour as the server draws it, RGB(32,40,56), within what H.264 and
 * the conversions cost a flat area (a fresh viewer decodes 31,40,56). Returns a complaint,
 * or "" when it is right.
 */
const exactSlate = (p, when) => near(p.topLeft, SLATE, 6) && near(p.topRight, SLATE, 6) ? ""
  : `${when}: the waiting picture decodes as ${p.topLeft} (top left) / ${p.topRight} (top right), not RGB ${SLATE} (±6)`;
const describe = (p) => p
  ? `${p.width}x${p.height}, top-left ${p.topLeft}, top-right ${p.topRight}, centre ${p.centre}, barcode ${JSON.stringify(p.code)}, framesDecoded ${p.framesDecoded}, attempts ${p.attempts}`
  : "no picture";

/** Probes every ~50 ms until `pred` holds; resolves to that probe (its `at` is when). */
async function waitView(page, pred, ms, what, why = () => "") {
  const end = Date.now() + ms;
  let last = null;
  for (;;) {
    last = await probe(page);
    if (pred(last)) return last;
    if (Date.now() > end) throw new Error(`viewer: no ${what} within ${ms} ms; last look: ${describe(last)}${why()}`);
    await sleep(50);
  }
}

/** Where the animation draws the green square's centre in frame `n` (web/publish.js drawFrame). */
function greenCentre(n) {
  const travel = 560, v = (n * 8) % (2 * travel);
  return 16 + (v < travel ? v : 2 * travel - v) + 24;
}

/**
 * Reads the viewer's barcode for `ms` alongside the publisher's own frame number; asserts the
 * numbers go forward at about the canvas's 30 fps and trail the publisher's by little (they
 * are its frames, not the waiting picture's own numbering). Returns the readings.
 */
async function assertFollowsPublisher(view, pub, ms, where, why = () => "") {
  const reads = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const p = await probe(view);
    const pubFrame = await pub.evaluate(() => window.publishStats.canvasFrame);
    if (p?.code) {
      reads.push({
        frame: p.code.frame, lag: pubFrame - p.code.frame, latency: (p.at % 2 ** 40) - p.code.ms,
        colours: showsCanvas(p), green: p.greenX, greenWant: greenCentre(p.code.frame),
      });
    }
    await sleep(80);
  }
  const frames = reads.map((r) => r.frame);
  const list = `[${frames.join(" ")}]`;
  assert.ok(reads.length >= 8, `${where}: only ${reads.length} barcode readings in ${ms} ms: ${list}${why()}`);
  for (let i = 1; i < frames.length; i++) {
    assert.ok(frames[i] >= frames[i - 1], `${where}: the barcode's frame number went back ${frames[i - 1]} -> ${frames[i]}: ${list}${why()}`);
  }
  const advanced = frames[frames.length - 1] - frames[0];
  const expected = CANVAS_FPS * ms / 1000;
  assert.ok(advanced >= expected * 0.5, `${where}: frame numbers advanced ${advanced} in ~${ms} ms (the canvas draws ~${expected}): ${list}${why()}`);
  assert.ok(advanced <= expected * 1.5, `${where}: frame numbers advanced ${advanced} in ~${ms} ms, faster than the canvas: ${list}${why()}`);
  const lags = reads.map((r) => r.lag);
  assert.ok(lags.every((l) => l >= -1 && l <= 45),
    `${where}: the viewer's frame numbers are not the publisher's current ones (publisher minus viewer: ${lags.join(" ")})${why()}`);
  assert.ok(reads.every((r) => r.colours), `${where}: the animation's colours went away while its barcode was read${why()}`);
  // The green square slides as the animation draws it for the frame the barcode names (one
  // frame off, 8 px, is allowed: the barcode is read from a second copy of the picture).
  const greens = reads.map((r) => `${r.frame}:${r.green === null ? "-" : Math.round(r.green)}/${r.greenWant}`).join(" ");
  const placed = reads.filter((r) => r.green !== null && Math.abs(r.green - r.greenWant) <= 12).length;
  assert.ok(placed >= reads.length * 0.8,
    `${where}: the green square is where the animation draws it in only ${placed} of ${reads.length} looks (frame:seen/expected x) ${greens}${why()}`);
  const spots = new Set(reads.filter((r) => r.green !== null).map((r) => Math.round(r.green / 8)));
  assert.ok(spots.size >= 3, `${where}: the green square did not move (${greens})${why()}`);
  return reads;
}

/** Polls `fn` in `page` until it returns something other than null/undefined, or `ms` pass (then that). */
async function pollPage(page, fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await page.evaluate(fn);
    if ((v !== null && v !== undefined) || Date.now() > end) return v;
    await sleep(50);
  }
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
const api = async (server) => (await fetch(server.url + "/api/streams")).json();

/** Failure context: the server's log tail and the publish pages' console. */
const context = (server, ...pages) => () =>
  `\nserver log (tail):\n${server.log().slice(-5000)}` +
  pages.filter(Boolean).map((p, i) => `\npublish page ${i + 1} console (tail):\n${(p.consoleLines || []).slice(-20).join("\n")}`).join("");

// ---- the tests ----

test("Chromium publishes its canvas by WHIP; a viewer page joining later and a Rust viewer see its colours and motion; /api/streams counts its frames", async () => {
  const server = await startServer(["--source", "whip", "--ingest-token", TOKEN, "--size", "640x360"]);
  const pubBrowser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  const viewBrowser = await launchBrowser();
  let pub = null;
  try {
    const openedAt = Date.now();
    pub = await openPublisher(pubBrowser.context, server.url);
    const why = context(server, pub);
    await waitPublisher(pub, "publishing", 20000, why);
    const publishingAt = Date.now();
    const ps = await publisherState(pub);
    assert.equal(ps.errorShown, false, `no error while publishing (#error “${ps.error}”)`);
    assert.equal(ps.stats.httpStatus, 201, "the WHIP POST was answered 201");
    assert.match(ps.stats.session || "", /\/whip\/session\//, `the session URL from Location: ${ps.stats.session}`);

    const view = await viewBrowser.context.newPage();
    const navAt = Date.now();
    await view.goto(server.url + "/");
    const first = await waitView(view, showsCanvas, 15000, "picture in the publisher's colours (blue corner, red centre)", why);
    const ttff = await view.evaluate(() => window.whepcast.ttffMs);
    console.log(`# publish page opened -> publishing: ${publishingAt - openedAt} ms; ` +
      `viewer opened ${navAt - publishingAt} ms later -> publisher's colours at the viewer: ${first.at - navAt} ms ` +
      `(viewer's own TTFF from its POST: ${ttff} ms); first look: ${describe(first)}`);
    assert.equal(first.width, 640, `the viewer decodes the publisher's width (${describe(first)})`);
    assert.equal(first.height, 360, `the viewer decodes the publisher's height (${describe(first)})`);
    assert.ok(!showsWaiting(first), `the viewer shows the canvas, not the waiting picture (${describe(first)})`);

    // Motion: the canvas's barcode at the viewer moves on with the publisher's frame number,
    // and the green square with it.
    const reads = await assertFollowsPublisher(view, pub, 2000, "viewer", why);
    console.log(`# viewer of a WHIP publisher: ${reads.length} barcode readings, frames ${reads[0].frame} -> ${reads[reads.length - 1].frame}, ` +
      `median lag behind the canvas ${median(reads.map((r) => r.lag))} frames, glass-to-glass ${median(reads.map((r) => r.latency))} ms`);

    // The server's view: a WHIP stream, its frames counted at the publisher's rate (the
    // waiting picture would be 5 a second), one viewer.
    const a = await api(server);
    const t0 = Date.now();
    await sleep(1500);
    const b = await api(server);
    const secs = (Date.now() - t0) / 1000;
    assert.equal(b.streams.length, 1, `one stream: ${JSON.stringify(b.streams.map((s) => s.name))}`);
    const [sa, sb] = [a.streams[0], b.streams[0]];
    assert.equal(sb.source, "whip", `/api/streams source: ${JSON.stringify(sb)}`);
    assert.equal(sb.size, "640x360", `/api/streams size is the publisher's: ${sb.size}`);
    const rate = (sb.frames_encoded - sa.frames_encoded) / secs;
    assert.ok(rate >= CANVAS_FPS * 0.5 && rate <= CANVAS_FPS * 1.5,
      `/api/streams frames_encoded grows ${rate.toFixed(1)}/s (${sa.frames_encoded} -> ${sb.frames_encoded}); the publisher sends ~${CANVAS_FPS}/s`);
    assert.equal(sb.viewers, 1, `/api/streams counts the one viewer: ${sb.viewers}`);
    assert.equal(b.sessions.active, 1, `one active viewer session: ${JSON.stringify(b.sessions)}`);

    // A second, independent viewer: webrtc-rs and OpenH264, no browser. The canvas is sent
    // as Chromium encoded it (full-range BT.709 planes): blue has U high and V a little low,
    // red has V high and U low.
    const rust = await rustViewer(server.url + "/whep", 3);
    assert.ok(rust.frames >= 30, `the Rust viewer decoded ${rust.frames} frames in 3 s`);
    assert.deepEqual([rust.width, rust.height], [640, 360], "the Rust viewer's picture size");
    const [, uc, vc] = rust.regions.centre, [, ub, vb] = rust.regions.top_right;
    assert.ok(vc > 190 && uc < 128, `the Rust viewer's centre is red (YUV ${rust.regions.centre})`);
    assert.ok(ub > 190 && vb < 140, `the Rust viewer's top-right corner is blue (YUV ${rust.regions.top_right})`);
    const ns = rust.numbers;
    assert.ok(ns.length >= 10 && ns.every((n, i) => i === 0 || n > ns[i - 1]),
      `the Rust viewer reads the canvas's frame numbers moving on: ${ns.join(" ")}`);
  } finally {
    await viewBrowser.close();
    await pubBrowser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});

test("the publisher leaves and comes back: the same viewer session shows the waiting picture, then the publisher again", async () => {
  // --size 320x240: the waiting picture's size until a publisher came; then the publisher's
  // (the canvas's 640x360).
  const server = await startServer(["--source", "whip", "--ingest-token", TOKEN, "--size", "320x240"]);
  const pubBrowser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  const viewBrowser = await launchBrowser();
  try {
    const view = await viewBrowser.context.newPage();
    await view.goto(server.url + "/");
    const why0 = context(server);
    const waiting0 = await waitView(view, showsWaiting, 15000, "waiting picture before any publisher", why0);
    assert.equal(`${waiting0.width}x${waiting0.height}`, "320x240", `the waiting picture is at --size before a publisher came (${describe(waiting0)})`);
    assert.equal(exactSlate(waiting0, "before any publisher"), "", "the waiting picture's colour");
    // It is live (5 fps): its own barcode moves on.
    await sleep(700);
    const waiting0b = await probe(view);
    assert.ok(waiting0.code && waiting0b?.code && waiting0b.code.frame > waiting0.code.frame,
      `the waiting picture's barcode moves on (${JSON.stringify(waiting0.code)} -> ${JSON.stringify(waiting0b?.code)})`);

    // The publisher comes: the viewer switches to its picture without reconnecting.
    const pub = await openPublisher(pubBrowser.context, server.url);
    const why = context(server, pub);
    await waitPublisher(pub, "publishing", 20000, why);
    const publishingAt = Date.now();
    const on1 = await waitView(view, showsCanvas, 10000, "publisher's picture after it started", why);
    await assertFollowsPublisher(view, pub, 1200, "viewer after the first start", why);

    // It leaves (Stop: DELETE): the waiting picture, at the publisher's last size.
    const stopAt = Date.now();
    await pub.click("#stop");
    await waitPublisher(pub, "idle", 5000, why);
    const off = await waitView(view, showsWaiting, 10000, "waiting picture after the publisher stopped", why);
    assert.equal(`${off.width}x${off.height}`, "640x360", `after a publisher, the waiting picture takes its last size (${describe(off)})`);
    const deleted = await pollPage(pub, () => window.publishStats.deleteStatus, 5000);
    assert.equal(deleted, 200, `Stop's DELETE was answered 200 (got ${deleted})`);
    // It stays: the waiting picture, still moving (its own barcode), a second later.
    await sleep(800);
    const offLater = await probe(view);
    assert.ok(showsWaiting(offLater), `the waiting picture stays while nobody publishes (${describe(offLater)})`);
    // Its exact colour is asserted at the end, so that a wrong one does not hide whether the
    // stream resumes.
    const colour = exactSlate(offLater, "after the publisher stopped, at the viewer that watched it");
    assert.ok(off.code && offLater.code && offLater.code.frame > off.code.frame,
      `the waiting picture is live: its barcode moves on (${JSON.stringify(off.code)} -> ${JSON.stringify(offLater.code)})`);

    // It comes back (Start on the same page): its picture again, same viewer session.
    const restartAt = Date.now();
    await pub.click("#start");
    await waitPublisher(pub, "publishing", 20000, why);
    const republishingAt = Date.now();
    const on2 = await waitView(view, showsCanvas, 10000, "publisher's picture after it started again", why);
    await assertFollowsPublisher(view, pub, 1200, "viewer after the publisher came back", why);

    console.log(`# viewer already watching: publisher connected -> its picture at the viewer ${on1.at - publishingAt} ms; ` +
      `Stop -> waiting picture ${off.at - stopAt} ms; Start -> publishing ${republishingAt - restartAt} ms -> ` +
      `its picture at the viewer ${on2.at - republishingAt} ms (${on2.at - restartAt} ms from the click); waiting picture: ${describe(off)}`);

    const v = await view.evaluate(() => ({ attempts: window.whepcast.attempts, connected: window.whepcast.connected }));
    assert.equal(v.attempts, 1, `the viewer page never reconnected (attempts ${v.attempts})`);
    assert.equal(v.connected, true, "the viewer page is connected");
    const s = await api(server);
    assert.equal(s.sessions.created, 1, `one viewer session was ever created: ${JSON.stringify(s.sessions)}`);
    assert.equal(s.sessions.active, 1, `that one session is still active: ${JSON.stringify(s.sessions)}`);
    assert.equal(s.streams[0].viewers, 1, `the stream has one viewer: ${s.streams[0].viewers}`);
    assert.equal(colour, "", "the waiting picture's colour after a publisher");
  } finally {
    await viewBrowser.close();
    await pubBrowser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});

test("the publisher's connection dies without a DELETE: waiting picture, then a new publisher is taken and viewers resume", async () => {
  const server = await startServer(["--source", "whip", "--ingest-token", TOKEN, "--size", "640x360"]);
  const pubBrowser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  const viewBrowser = await launchBrowser();
  try {
    const pub = await openPublisher(pubBrowser.context, server.url);
    const why = context(server, pub);
    await waitPublisher(pub, "publishing", 20000, why);
    const view = await viewBrowser.context.newPage();
    await view.goto(server.url + "/");
    await waitView(view, showsCanvas, 15000, "publisher's picture", why);

    // Crash the publisher's renderer: no DELETE, no DTLS close; its packets just stop.
    const cdp = await pubBrowser.context.newCDPSession(pub);
    const crashedAt = Date.now();
    // Not awaited: the call never answers (its page is gone).
    cdp.send("Page.crash").catch(() => {});
    const off = await waitView(view, showsWaiting, 20000, "waiting picture after the publisher's connection died", why);
    await sleep(300); // a later picture than the cut-over's first
    const colour = exactSlate(await probe(view), "after the publisher's connection died, at the viewer that watched it");
    const left = server.log().match(/publisher left after [\d.]+s \(([^)]*)\)/);
    console.log(`# publisher's connection died (renderer crashed) -> waiting picture at the viewer: ${off.at - crashedAt} ms ` +
      `(server: ${left ? left[0] : "no \"publisher left\" logged"})`);
    assert.ok(left, `the server logs that the publisher left${why()}`);
    assert.notEqual(left[1], "DELETE", `the publisher left by its connection dying, not by a DELETE: “${left[0]}”`);

    // The stream is free again: a fresh publish page is taken (not 409) and the viewer resumes.
    const pub2 = await openPublisher(pubBrowser.context, server.url);
    const why2 = context(server, pub2);
    const freeAt = Date.now();
    await waitPublisher(pub2, "publishing", 20000, why2);
    const on = await waitView(view, showsCanvas, 10000, "new publisher's picture", why2);
    await assertFollowsPublisher(view, pub2, 1200, "viewer of the new publisher", why2);
    console.log(`# new publish page -> its picture at the viewer: ${on.at - freeAt} ms`);
    const v = await view.evaluate(() => window.whepcast.attempts);
    assert.equal(v, 1, `the viewer page never reconnected (attempts ${v})`);
    const s = await api(server);
    assert.equal(s.sessions.created, 1, `one viewer session was ever created: ${JSON.stringify(s.sessions)}`);
    assert.equal(colour, "", "the waiting picture's colour after a publisher");
  } finally {
    await viewBrowser.close();
    await pubBrowser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});

test("a second publisher gets 409 naming the stream; a wrong or missing ingest token gets 401 and the token field", async () => {
  // A named stream: /publish/cam publishes to POST /whip/cam.
  const server = await startServer(["--stream", "cam=whip,size=640x360", "--ingest-token", TOKEN]);
  const browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  try {
    const first = await openPublisher(browser.context, server.url, { path: "/publish/cam" });
    const why = context(server, first);
    await waitPublisher(first, "publishing", 20000, why);
    const fs = await publisherState(first);
    assert.match(fs.stats.session || "", /\/whip\/session\//, `the first publisher has a session (${fs.stats.session})`);

    const second = await openPublisher(browser.context, server.url, { path: "/publish/cam" });
    const s2 = await waitPublisher(second, "failed", 15000, why);
    assert.equal(s2.stats.httpStatus, 409, `the second POST was answered 409 (got ${s2.stats.httpStatus})`);
    assert.ok(s2.errorShown, "#error is shown for the 409");
    assert.match(s2.error, /409/, `#error names the status: “${s2.error}”`);
    assert.match(s2.error, /\bcam\b/, `#error names the stream (cam): “${s2.error}”`);
    assert.equal(s2.tokenRowShown, false, "a 409 does not ask for the token");
    assert.equal((await publisherState(first)).state, "publishing", "the first publisher still publishes after the refused one");

    const wrong = await openPublisher(browser.context, server.url, { path: "/publish/cam", token: "not-the-token" });
    const s3 = await waitPublisher(wrong, "failed", 15000, why);
    assert.equal(s3.stats.httpStatus, 401, `a wrong token is answered 401 (got ${s3.stats.httpStatus})`);
    assert.ok(s3.errorShown, "#error is shown for the 401");
    assert.match(s3.error, /401/, `#error names the status: “${s3.error}”`);
    assert.ok(s3.tokenRowShown, "a 401 shows the token field");
    assert.equal(await wrong.evaluate(() => document.activeElement?.id), "token", "the token field has the focus");

    const none = await openPublisher(browser.context, server.url, { path: "/publish/cam", token: null });
    const s4 = await waitPublisher(none, "failed", 15000, why);
    assert.equal(s4.stats.httpStatus, 401, `no token is answered 401 (got ${s4.stats.httpStatus})`);
    assert.match(s4.error, /401/, `#error names the status: “${s4.error}”`);
    assert.ok(s4.tokenRowShown, "a 401 without a token shows the token field");

    // Neither refusal took the stream: the first publisher stops, the one that typed the
    // right token into the field publishes.
    await first.click("#stop");
    await waitPublisher(first, "idle", 5000, why);
    await none.fill("#token", TOKEN);
    await none.click("#start");
    const s5 = await waitPublisher(none, "publishing", 20000, context(server, none));
    assert.equal(s5.stats.httpStatus, 201, `the typed token was taken (POST ${s5.stats.httpStatus})`);
    assert.equal(s5.errorShown, false, `#error is hidden once publishing (“${s5.error}”)`);
  } finally {
    await browser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM");
  }
});
