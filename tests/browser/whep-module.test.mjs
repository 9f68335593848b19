// The viewer page's WHEP client on its own (web/whep.js, served as /assets/whep.js), as another
// page (a publish page, say) would use it: on a bare test page it plays the stream, trickles
// its candidates, restarts ICE on the same session, and ends the session with DELETE, also
// when closed before its offer was answered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, waitInPage, metric } from "./harness.mjs";

const PAGE = `<!doctype html>
<meta charset="utf-8">
<video id="v" autoplay muted playsinline></video>
<script type="module">
import { WhepSession, askIceServers } from "/assets/whep.js";
const t = window.t = { frames: 0, started: null, error: null, patches: [] };
const v = document.getElementById("v");
const pc = window.pc = new RTCPeerConnection({ iceServers: await askIceServers("/whep") });
pc.addTransceiver("video", { direction: "recvonly" });
pc.ontrack = (e) => { v.srcObject = e.streams[0]; v.play().catch(() => {}); };
const count = () => { t.frames++; v.requestVideoFrameCallback(count); };
v.requestVideoFrameCallback(count);
const session = window.session = new WhepSession(pc, "/whep", { on: { patched: (p) => t.patches.push(p) } });
pc.onicecandidate = (e) => session.trickle(e.candidate);
try { t.started = await session.start(); } catch (e) { t.error = String(e && e.stack || e); }
</script>`;

const ufragOf = (sdp) => (sdp.match(/a=ice-ufrag:(\S+)/) || [])[1];

/** Polls `fn` (here, not in the page) until it returns something truthy or `ms` pass. */
async function until(fn, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}
const active = async (url) => metric(url, "whepcast_sessions_active");

test("whep.js alone: plays, trickles, restarts ICE on the session, ends it with DELETE", async () => {
  const server = await startServer(["--size", "320x240", "--fps", "30"]);
  // Host candidates on loopback, so there are candidates to trickle (see launchBrowser).
  const browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  try {
    await browser.context.route(server.url + "/__test/page.html",
      (route) => route.fulfill({ contentType: "text/html; charset=utf-8", body: PAGE }));
    const page = await browser.context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    const requests = []; // { method, headers, status, etag }
    page.on("response", (res) => {
      const req = res.request();
      if (!["POST", "PATCH", "DELETE"].includes(req.method())) return;
      requests.push({ method: req.method(), headers: req.headers(), status: res.status(), etag: res.headers()["etag"] });
    });
    await page.goto(server.url + "/__test/page.html");
    const t = await waitInPage(page, () => (window.t.error || window.t.frames >= 30) && window.t, null, 30000);
    assert.equal(t.error, null);
    assert.equal(t.started, true);
    // Trickled: PATCHes answered 204, with candidates in them, under the POST's ETag.
    const trickled = await waitInPage(page, () => window.t.patches.some((p) => p.status === 204 && p.candidates > 0)
      && window.t.patches, null, 10000);
    assert.ok(trickled.every((p) => p.status === 204), JSON.stringify(trickled));
    const post = requests.find((r) => r.method === "POST");
    assert.equal(post.status, 201);
    assert.ok(requests.filter((r) => r.method === "PATCH").every((r) => r.headers["if-match"] === post.etag),
      "trickle PATCHes carry If-Match: the session's ETag");

    // ICE restart: new credentials both ways, the picture keeps coming, the same session.
    const before = await page.evaluate(() => ({ remote: window.pc.remoteDescription.sdp, local: window.pc.localDescription.sdp, frames: window.t.frames }));
    const restart = await page.evaluate(() => window.session.restartIce().then(() => null, (e) => String(e)));
    assert.equal(restart, null, "restartIce failed");
    const restartPatch = requests.find((r) => r.method === "PATCH" && r.status === 200);
    assert.ok(restartPatch, "no PATCH answered 200: " + JSON.stringify(requests.map((r) => [r.method, r.status])));
    assert.equal(restartPatch.headers["if-match"], post.etag, "the restart names the session's ETag");
    const after = await page.evaluate(() => ({ remote: window.pc.remoteDescription.sdp, local: window.pc.localDescription.sdp }));
    assert.notEqual(ufragOf(after.local), ufragOf(before.local), "our ufrag did not change");
    assert.notEqual(ufragOf(after.remote), ufragOf(before.remote), "the server's ufrag did not change");
    const more = await waitInPage(page, (n) => window.t.frames >= n + 30 && window.t, before.frames, 30000);
    assert.ok(more.frames >= before.frames + 30);
    const ice = await page.evaluate(() => window.pc.iceConnectionState);
    assert.ok(["connected", "completed"].includes(ice), `ICE ${ice} after the restart`);
    assert.ok((await metric(server.url, "whepcast_ice_restarts_total")) >= 1, "the server counted no ICE restart");
    assert.equal(await active(server.url), 1);

    // DELETE ends it.
    await page.evaluate(() => window.session.close());
    const deleted = await until(() => requests.find((r) => r.method === "DELETE"));
    assert.equal(deleted?.status, 200, "DELETE of the session");
    assert.equal(await until(async () => (await active(server.url)) === 0), true, "the session is still there");

    // Closed while its offer is out: the session the server made is deleted when the answer comes.
    const early = await page.evaluate(async () => {
      const { WhepSession } = await import("/assets/whep.js");
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      const s = new WhepSession(pc, "/whep", { on: { posted: () => queueMicrotask(() => s.close()) } });
      const started = await s.start();
      pc.close();
      return started;
    });
    assert.equal(early, false, "start() resolves false once closed");
    const second = await until(() => requests.filter((r) => r.method === "DELETE")[1]);
    assert.equal(second?.status, 200, "DELETE of the early-closed session");
    assert.equal(await until(async () => (await active(server.url)) === 0), true, "the early-closed session was not deleted");
    assert.deepEqual(errors, [], "uncaught errors in the page");
  } catch (e) {
    e.message += "\n--- whepcast log ---\n" + server.log().slice(-4000);
    throw e;
  } finally {
    await browser.close();
    await server.stop();
  }
});
