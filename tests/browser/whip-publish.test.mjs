// `whepcast publish` (WHIP, RFC 9725) against real receivers: headless Chromium as the WHIP
// endpoint's peer (whip-receiver.mjs), and Janus with simple-whip-server (janus.mjs), watched
// through Janus by Chromium. Also `serve --publish`: local WHEP viewers and a WHIP endpoint fed
// by the same encode.
//
// Needs root inside `unshare -n` for the Janus tests (janus.mjs adds a veth); scripts/test.sh
// runs every browser test so, as does
//   cd tests/browser && unshare -n sh -c 'ip link set lo up && node --test whip-publish.test.mjs'
//
// What each test prints (# lines) are measurements: the time from an endpoint restart to the
// first frame of the new session, and the bit rate Janus forwards with and without its REMB cap.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { WHEPCAST, startServer, launchBrowser, waitInPage } from "./harness.mjs";
import { launchReceiverBrowser, startReceiver, until } from "./whip-receiver.mjs";
import { startJanus, watchThroughJanus } from "./janus.mjs";

const TOKEN = "pub-s3cret-token";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `whepcast publish URL ...args`; `stop(signal)` resolves to its exit code (null if a
 * signal killed it). The log is WHEPCAST_LOG (default whepcast=debug), for failure messages.
 */
function startPublish(url, args = [], env = {}) {
  const child = spawn(WHEPCAST, ["publish", url, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, WHEPCAST_LOG: process.env.WHEPCAST_LOG || "whepcast=debug", ...env },
  });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
  const reap = () => { if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL"); };
  process.once("exit", reap);
  exited.then(() => process.removeListener("exit", reap));
  return {
    child, exited,
    log: () => log,
    tail: (n = 6000) => log.slice(-n),
    running: () => child.exitCode === null && child.signalCode === null,
    /** Sends `signal`; resolves to the exit code, or throws if it is still running after `ms`. */
    async stop(signal = "SIGTERM", ms = 10000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const r = await Promise.race([exited, sleep(ms).then(() => null)]);
      if (!r) {
        child.kill("SIGKILL");
        await exited;
        throw new Error(`whepcast publish still running ${ms} ms after ${signal}:\n${log.slice(-6000)}`);
      }
      return r.code;
    },
    /** SIGKILL if still running (cleanup after a failure). */
    async kill() { if (child.exitCode === null && child.signalCode === null) { child.kill("SIGKILL"); await exited; } },
  };
}

/**
 * Samples `read()` (the pattern's frame number, or null) every 100 ms for `ms`; returns the
 * frame numbers read, in order.
 */
async function sampleFrames(read, ms = 2000) {
  const frames = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const f = await read();
    if (f !== null && f !== undefined) frames.push(f);
    await sleep(100);
  }
  return frames;
}

/** Asserts that `frames` (sampled over `ms` at `fps`) only go forward, about `fps` a second. */
function assertAdvancing(frames, fps, ms, where) {
  assert.ok(frames.length >= 8, `${where}: only ${frames.length} barcode readings in ${ms} ms: [${frames.join(" ")}]`);
  for (let i = 1; i < frames.length; i++) {
    assert.ok(frames[i] >= frames[i - 1], `${where}: frame number went back ${frames[i - 1]} -> ${frames[i]}: [${frames.join(" ")}]`);
  }
  const advanced = frames[frames.length - 1] - frames[0];
  const expected = fps * ms / 1000;
  assert.ok(advanced >= expected * 0.5, `${where}: frame numbers advanced ${advanced} in ~${ms} ms (expected ~${expected}): [${frames.join(" ")}]`);
  assert.ok(advanced <= expected * 1.5, `${where}: frame numbers advanced ${advanced} in ~${ms} ms, more than ${fps} fps: [${frames.join(" ")}]`);
}

/** Context for a failure message: the receiver's requests and whepcast's log. */
function context(rx, pub) {
  const reqs = rx.requests.map((r) => `${new Date(r.time).toISOString().slice(11, 23)} ${r.method} ${r.path} -> ${r.status}`).join("\n");
  return `\nreceiver requests:\n${reqs}\nwhepcast log (tail):\n${pub ? pub.tail() : "-"}`;
}

test("Chromium as the WHIP receiver decodes the published pattern; SIGTERM deletes the session, exit 0", async () => {
  const browser = await launchReceiverBrowser();
  const rx = await startReceiver(browser, { token: TOKEN });
  const pub = startPublish(rx.url, ["--token", TOKEN, "--source", "pattern", "--size", "640x360", "--fps", "30", "--bitrate", "1000k"]);
  try {
    await rx.until(async () => (await rx.stats())?.framesDecoded >= 30, 20000, "30 decoded frames")
      .catch((e) => { throw new Error(e.message + context(rx, pub)); });
    const post = rx.requests.find((r) => r.method === "POST" && r.status === 201);
    assert.ok(post, "no POST was answered 201" + context(rx, pub));
    assert.equal(post.headers.authorization, `Bearer ${TOKEN}`, "the POST carries the Bearer token");
    assert.equal(post.headers["content-type"], "application/sdp", "the offer's Content-Type");
    assert.match(post.body, /^a=sendonly\r?$/m, "the offer is sendonly");

    const s = await rx.stats();
    assert.equal(s.mimeType, "video/H264", `codec: ${JSON.stringify(s)}`);
    assert.match(s.sdpFmtpLine || "", /packetization-mode=1/, `fmtp of the decoded codec: ${s.sdpFmtpLine}`);
    assert.equal(s.frameWidth, 640, "decoded frame width");
    assert.equal(s.frameHeight, 360, "decoded frame height");

    const frames = await sampleFrames(() => rx.frameCounter(), 2000);
    assertAdvancing(frames, 30, 2000, "receiver");

    const session = rx.current();
    assert.ok(session, "the receiver has a live session");
    const code = await pub.stop("SIGTERM");
    const del = rx.requests.find((r) => r.method === "DELETE" && r.path === session.location);
    assert.ok(del, `no DELETE of ${session.location} after SIGTERM` + context(rx, pub));
    assert.equal(del.headers.authorization, `Bearer ${TOKEN}`, "the DELETE carries the Bearer token");
    assert.equal(del.status, 200, "the DELETE was answered 200 (the session existed)");
    assert.ok(session.deleted, "the receiver recorded the session as deleted");
    assert.equal(code, 0, "whepcast publish exits 0 on SIGTERM\n" + pub.tail());
  } finally {
    await pub.kill();
    await rx.close();
    await browser.close();
  }
});

test("a PLI from the receiver brings a keyframe within 1 s (--keyint 60)", async () => {
  const browser = await launchReceiverBrowser();
  const rx = await startReceiver(browser, { token: TOKEN });
  const pub = startPublish(rx.url, ["--token", TOKEN, "--size", "640x360", "--fps", "30", "--keyint", "60"]);
  try {
    await rx.until(async () => (await rx.stats())?.framesDecoded >= 30, 20000, "30 decoded frames")
      .catch((e) => { throw new Error(e.message + context(rx, pub)); });
    // Installing the PLI transform is itself harmless, but give the session a quiet baseline:
    // with --keyint 60 no keyframe may come by itself for a while.
    const base = (await rx.stats()).keyFramesDecoded;
    await sleep(1500);
    const quiet = (await rx.stats()).keyFramesDecoded;
    assert.equal(quiet, base, `keyframes came without a PLI (${base} -> ${quiet}): the test cannot tell a PLI's keyframe from others`);

    const sentAt = Date.now();
    const pli = await rx.sendPli();
    assert.ok(pli !== null, "Chromium did not send a PLI (pliCount did not grow)");
    let after = null;
    const end = sentAt + 1000;
    while (Date.now() < end) {
      after = await rx.stats();
      if (after.keyFramesDecoded > quiet) break;
      await sleep(20);
    }
    const took = Date.now() - sentAt;
    assert.ok(after.keyFramesDecoded > quiet,
      `no keyframe decoded within 1 s of the PLI (keyFramesDecoded ${quiet} -> ${after.keyFramesDecoded}, pliCount ${after.pliCount})` + context(rx, pub));
    console.log(`# PLI -> keyframe decoded in ${took} ms`);
  } finally {
    await pub.kill();
    await rx.close();
    await browser.close();
  }
});

test("the endpoint restarts mid-stream: whepcast publishes again, first new frame within 5 s", async () => {
  const browser = await launchReceiverBrowser();
  const rx = await startReceiver(browser, { token: TOKEN });
  const pub = startPublish(rx.url, ["--token", TOKEN, "--size", "640x360", "--fps", "30"]);
  try {
    await rx.until(async () => (await rx.stats())?.framesDecoded >= 30, 20000, "30 decoded frames")
      .catch((e) => { throw new Error(e.message + context(rx, pub)); });
    const old = rx.current();
    const lastFrame = await until(() => rx.frameCounter(), 5000, "a barcode before the restart");
    const requestsBefore = rx.requests.length;

    const restartedAt = Date.now();
    await rx.restart();
    let firstFrameAt = null, fresh = null;
    await until(async () => {
      const s = rx.current();
      if (!s || s.id === old.id) return false;
      const st = await rx.stats(s.id);
      if (st?.framesDecoded >= 1) { firstFrameAt ??= Date.now(); fresh = s; return true; }
      return false;
    }, 15000, "a new session decoding").catch((e) => { throw new Error(e.message + context(rx, pub)); });
    const ms = firstFrameAt - restartedAt;
    const since = rx.requests.slice(requestsBefore)
      .map((r) => `+${r.time - restartedAt} ms ${r.method} ${r.path} -> ${r.status}`).join(", ");
    console.log(`# endpoint restart -> first frame of the new session: ${ms} ms (requests since: ${since})`);
    assert.ok(ms < 5000, `the new session decoded its first frame ${ms} ms after the restart (limit 5000 ms)` + context(rx, pub));

    // The new session carries the live pattern, moving on from where the old one stopped.
    const frames = await sampleFrames(() => rx.frameCounter(fresh.id), 1500);
    assert.ok(frames.length > 0 && frames[0] > lastFrame, `new session's frames [${frames.join(" ")}] do not follow ${lastFrame}`);
    assertAdvancing(frames, 30, 1500, "receiver after restart");
    assert.equal(fresh.offer.includes("a=sendonly"), true, "the new session's offer is sendonly");
    assert.ok(pub.running(), "whepcast publish is still running");
    assert.equal(await pub.stop("SIGTERM"), 0, "exit 0 on SIGTERM\n" + pub.tail());
  } finally {
    await pub.kill();
    await rx.close();
    await browser.close();
  }
});

test("the path fails but the endpoint keeps the session: whepcast restarts ICE by PATCH and the same session plays on", async () => {
  const browser = await launchReceiverBrowser();
  const rx = await startReceiver(browser, { token: TOKEN });
  const pub = startPublish(rx.url, ["--token", TOKEN, "--size", "640x360", "--fps", "30"]);
  // Drops every UDP packet in this (test-only) network namespace: media and ICE, not HTTP.
  const rule = ["INPUT", "-p", "udp", "-j", "DROP"];
  let blocked = false;
  try {
    await rx.until(async () => (await rx.stats())?.framesDecoded >= 30, 20000, "30 decoded frames")
      .catch((e) => { throw new Error(e.message + context(rx, pub)); });
    const session = rx.current();
    const before = rx.requests.length;
    execFileSync("iptables", ["-I", ...rule]);
    blocked = true;
    const blockedAt = Date.now();
    const restart = await until(() => rx.requests.slice(before)
      .find((r) => r.method === "PATCH" && r.status === 200), 10000, "an ICE-restart PATCH answered 200")
      .catch((e) => { throw new Error(e.message + context(rx, pub)); });
    execFileSync("iptables", ["-D", ...rule]);
    blocked = false;
    console.log(`# path cut -> restart PATCH ${restart.time - blockedAt} ms later (If-Match ${restart.headers["if-match"]})`);
    assert.equal(restart.headers["if-match"], "*", "an ICE restart asks with If-Match: *");
    assert.match(restart.headers["authorization"] || "", /^Bearer /, "the PATCH carries the token");
    assert.match(restart.body, /a=ice-ufrag:/, "the PATCH carries new ICE credentials");

    // The same session goes on: frames move again, and no new POST was needed.
    const frames = await sampleFrames(() => rx.frameCounter(session.id), 3000);
    assertAdvancing(frames.slice(-10), 30, 1000, "the same session after the ICE restart");
    const posts = rx.requests.slice(before).filter((r) => r.method === "POST");
    assert.equal(posts.length, 0, `no new session: ${posts.map((r) => r.path).join(", ")}` + context(rx, pub));
    assert.equal(rx.current().id, session.id, "the endpoint's session is the same");
    assert.equal(await pub.stop("SIGTERM"), 0, "exit 0 on SIGTERM\n" + pub.tail());
  } finally {
    if (blocked) execFileSync("iptables", ["-D", ...rule]);
    await pub.kill();
    await rx.close();
    await browser.close();
  }
});

/**
 * Publishes into a fresh Janus (REMB cap `bitrate`, 0: none), watches through it, checks the
 * picture moves, and returns the bytes/s Janus forwards to the viewer over `measureMs` after
 * `settleMs` of playback. Stops everything (the publisher must exit 0).
 */
async function throughJanus({ bitrate = 0, publishArgs, settleMs = 3000, measureMs = 4000, checkBarcode = true }) {
  const janus = await startJanus({ token: TOKEN, bitrate });
  let pub = null, browser = null, viewer = null;
  try {
    pub = startPublish(janus.whipUrl, ["--token", TOKEN, ...publishArgs]);
    browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
    viewer = await watchThroughJanus(browser, janus);
    const why = () => `\nwhepcast log (tail):\n${pub.tail(4000)}\nJanus log (tail):\n${janus.log().slice(-4000)}`;
    await viewer.waitFor((s) => s.framesDecoded >= 30, 30000).catch((e) => { throw new Error(e.message + why()); });
    if (checkBarcode) {
      const frames = await sampleFrames(() => viewer.frameCounter(), 2000);
      assertAdvancing(frames, 30, 2000, `viewer through Janus${bitrate ? ` (cap ${bitrate})` : ""}`);
    }
    await sleep(settleMs);
    const a = await viewer.stats();
    const t0 = Date.now();
    await sleep(measureMs);
    const b = await viewer.stats();
    const bps = (b.bytesReceived - a.bytesReceived) * 8 * 1000 / (Date.now() - t0);
    const fps = (b.framesDecoded - a.framesDecoded) * 1000 / (Date.now() - t0);
    const estimate = [...pub.log().matchAll(/publishing: link estimate .*/g)].map((m) => m[0]).pop() || "(none yet: whepcast logs it every 10 s)";
    assert.ok(fps >= 15, `only ${fps.toFixed(1)} fps through Janus while measuring` + why());
    assert.ok(pub.running(), "whepcast publish is still running" + why());
    const code = await pub.stop("SIGTERM");
    assert.equal(code, 0, "whepcast publish exits 0 on SIGTERM" + why());
    return { bps, fps, estimate, janusLog: janus.log(), pubLog: pub.log() };
  } finally {
    await viewer?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await pub?.kill();
    await janus.stop();
  }
}

test("through Janus: the published pattern plays; Janus's REMB cap slows the encoder", async () => {
  // 640x360: the pattern's twinkling motion band keeps OpenH264 (no frame skipping) at about
  // 576 kbit/s at 1280x720 30 fps whatever rate it aims at (`whepcast encode --bitrate 150k`
  // gives the same), so a 300 kbit/s cap could not show there. At 640x360 it spends about
  // 970 kbit/s of 1500k uncapped and meets 270k.
  const publishArgs = ["--size", "640x360", "--fps", "30", "--bitrate", "1500k"];
  const free = await throughJanus({ bitrate: 0, publishArgs });
  const capped = await throughJanus({ bitrate: 300000, publishArgs, checkBarcode: false });
  const kbps = (x) => Math.round(x / 1000);
  console.log(`# through Janus, --bitrate 1500k: no cap ${kbps(free.bps)} kbit/s (${free.fps.toFixed(1)} fps); ` +
    `REMB cap 300 kbit/s: ${kbps(capped.bps)} kbit/s (${capped.fps.toFixed(1)} fps)`);
  console.log(`#   last estimate logged, no cap: ${free.estimate}`);
  console.log(`#   last estimate logged, capped: ${capped.estimate}`);
  assert.ok(free.bps > 600000, `without a cap Janus forwarded only ${kbps(free.bps)} kbit/s of a 1500k publish: the comparison means nothing`);
  assert.ok(capped.bps < 450000, `with Janus's 300 kbit/s REMB cap it forwarded ${kbps(capped.bps)} kbit/s\nwhepcast log (tail):\n${capped.pubLog.slice(-4000)}`);
  assert.ok(capped.bps < free.bps * 0.5, `capped ${kbps(capped.bps)} kbit/s is not well below uncapped ${kbps(free.bps)} kbit/s`);
});

test("serve --publish: the WHIP receiver and a local viewer both play, one encoder for the top rendition", async () => {
  const rxBrowser = await launchReceiverBrowser();
  const rx = await startReceiver(rxBrowser, { token: TOKEN });
  const fps = 30;
  const server = await startServer(["--size", "640x360", "--fps", String(fps), "--publish", rx.url, "--publish-token", TOKEN]);
  const browser = await launchBrowser();
  try {
    const why = () => context(rx, null) + `\nserver log (tail):\n${server.log().slice(-4000)}`;
    await rx.until(async () => (await rx.stats())?.framesDecoded >= 30, 20000, "30 decoded frames at the WHIP receiver")
      .catch((e) => { throw new Error(e.message + why()); });
    const post = rx.requests.find((r) => r.method === "POST" && r.status === 201);
    assert.equal(post.headers.authorization, `Bearer ${TOKEN}`, "--publish-token is sent as the Bearer token");

    const page = await browser.context.newPage();
    await page.goto(server.url + "/");
    const state = await waitInPage(page, () => window.whepcast.framesDecoded >= 30 && window.whepcast);
    assert.equal(state.width, 640, "local viewer's width");
    assert.equal(state.height, 360, "local viewer's height");
    const rs = await rx.stats();
    assert.equal(rs.frameWidth, 640, "WHIP receiver's width");
    assert.equal(rs.mimeType, "video/H264");
    // Both still play: the receiver's barcode moves on.
    assertAdvancing(await sampleFrames(() => rx.frameCounter(), 1500), fps, 1500, "WHIP receiver with a local viewer");

    // One encode for both: the top rendition's (and the stream's) frames_encoded grow at
    // about --fps, not twice that, while the receiver and the viewer both take it.
    const api = async () => (await (await fetch(server.url + "/api/streams")).json());
    const a = await api();
    const t0 = Date.now();
    await sleep(3000);
    const b = await api();
    const secs = (Date.now() - t0) / 1000;
    assert.equal(b.streams.length, 1, "one stream");
    const stream = (x) => x.streams[0];
    const top = (x) => stream(x).renditions.find((r) => r.index === 0);
    const streamRate = (stream(b).frames_encoded - stream(a).frames_encoded) / secs;
    const topRate = (top(b).frames_encoded - top(a).frames_encoded) / secs;
    const rate = (r) => `${r.name ?? r.index} ${r.size}: ${r.frames_encoded} frames, ${r.viewers} viewers`;
    console.log(`# serve --publish: stream frames_encoded ${streamRate.toFixed(1)}/s, top rendition ${topRate.toFixed(1)}/s ` +
      `(--fps ${fps}); renditions: ${stream(b).renditions.map(rate).join("; ")}; viewers ${stream(b).viewers}`);
    for (const [what, r] of [["the stream's frames_encoded", streamRate], ["the top rendition's frames_encoded", topRate]]) {
      assert.ok(r >= fps * 0.7, `${what} grows at ${r.toFixed(1)}/s, well under --fps ${fps}`);
      assert.ok(r <= fps * 1.3, `${what} grows at ${r.toFixed(1)}/s: more than one encode per frame (--fps ${fps})`);
    }
    // The very same frames: a frame number both pictures showed carries the same capture
    // time (a second pipeline would draw that number at another moment).
    const collect = (page, fn, arg) => page.evaluate(async ([fnText, arg]) => {
      const read = new Function("arg", fnText);
      const seen = {};
      const end = performance.now() + 2000;
      while (performance.now() < end) {
        const d = await read(arg);
        if (d) seen[d.frame] = d.ms;
        await new Promise((r) => setTimeout(r, 8));
      }
      return seen;
    }, [fn, arg]);
    const [atViewer, atReceiver] = await Promise.all([
      collect(page, `return import("/assets/barcode.js").then(({ barcodeReader }) =>
        (window.__reader ??= barcodeReader(document.querySelector("video"))).decode());`),
      collect(rx.page, "return window.rx.barcode(arg);", rx.current().id),
    ]);
    const common = Object.keys(atViewer).filter((f) => f in atReceiver);
    console.log(`# serve --publish: ${Object.keys(atViewer).length} frames read at the viewer, ` +
      `${Object.keys(atReceiver).length} at the WHIP receiver, ${common.length} at both`);
    assert.ok(common.length >= 3, `only ${common.length} frame numbers read at both the viewer and the receiver`);
    for (const f of common) {
      assert.equal(atReceiver[f], atViewer[f], `frame ${f}: capture time ${atViewer[f]} at the viewer, ${atReceiver[f]} at the WHIP receiver`);
    }

    // The viewer and the WHIP receiver both receive the top rendition.
    const vs = await page.evaluate(() => window.whepcast);
    assert.equal(vs.width, 640, "the local viewer is on the top rendition");
    assert.equal((await rx.stats()).frameWidth, 640, "the WHIP receiver is on the top rendition");

    const session = rx.current();
    await browser.close();
    assert.equal(await server.stop(), 0, "server exits 0 on SIGTERM" + why());
    const del = rx.requests.find((r) => r.method === "DELETE" && r.path === session.location);
    assert.ok(del, "serve did not DELETE its publishing session on SIGTERM" + why());
    assert.equal(del.headers.authorization, `Bearer ${TOKEN}`, "the DELETE carries the --publish-token");
  } finally {
    await browser.close().catch(() => {});
    await server.stop();
    await rx.close();
    await rxBrowser.close();
  }
});
