// Interop: a third-party WHEP client, the npm `whip-whep` package's WHEPClient (Medooze), runs
// in real Chromium on a page served from the whepcast origin and plays the stream. It sends its
// offer without candidates and trickles them with PATCH, and restarts ICE with a PATCH
// (If-Match: "*") whose 200 answer carries the server's new credentials.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { startServer, launchBrowser, waitInPage, metric } from "./harness.mjs";

const whepJs = readFileSync(createRequire(import.meta.url).resolve("whip-whep/whep.js"), "utf8");

// The test page: the library's own client, a bare RTCPeerConnection, frames counted as
// Chromium presents them (requestVideoFrameCallback), so only decoded video counts.
const PAGE = `<!doctype html>
<meta charset="utf-8">
<video id="v" autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from "./whep.js";
const t = window.t = { frames: 0, viewing: false, error: null, offer: null };
const v = document.getElementById("v");
const pc = window.pc = new RTCPeerConnection();
pc.addTransceiver("video", { direction: "recvonly" });
pc.ontrack = (e) => { v.srcObject = e.streams[0] || new MediaStream([e.track]); v.play().catch(() => {}); };
const count = () => { t.frames++; v.requestVideoFrameCallback(count); };
v.requestVideoFrameCallback(count);
const client = window.client = new WHEPClient();
client.onOffer = (sdp) => { t.offer = sdp; return sdp; };
try {
  // An absolute URL: the library resolves the Location header against it.
  await client.view(pc, new URL("/whep", location.href).href);
  t.viewing = true;
} catch (e) {
  t.error = String(e && e.stack || e);
}
</script>`;

const ufragOf = (sdp) => (sdp.match(/a=ice-ufrag:(\S+)/) || [])[1];

test("whip-whep's WHEPClient plays the stream, trickles its candidates and restarts ICE", async () => {
  const server = await startServer(["--size", "640x360", "--fps", "30"]);
  // Host candidates on loopback, so the client has candidates to trickle (see launchBrowser).
  const browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
  try {
    const { context } = browser;
    await context.route(server.url + "/__test/*", (route) => {
      const path = new URL(route.request().url()).pathname;
      if (path === "/__test/index.html") return route.fulfill({ contentType: "text/html; charset=utf-8", body: PAGE });
      if (path === "/__test/whep.js") return route.fulfill({ contentType: "text/javascript", body: whepJs });
      return route.fulfill({ status: 404, body: "not here" });
    });
    const page = await context.newPage();
    const patches = []; // every PATCH the client sent: { headers, body, status, responseBody }
    page.on("response", (res) => {
      const req = res.request();
      if (req.method() !== "PATCH") return;
      const entry = { headers: req.headers(), body: req.postData(), status: res.status() };
      patches.push(entry);
      entry.text = res.text().then((t) => { entry.responseBody = t; }, () => { entry.responseBody = null; });
    });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(server.url + "/__test/index.html");
    assert.equal(new URL(page.url()).origin, server.url, "the page is on the whepcast origin");

    const played = await waitInPage(page, () => (window.t.frames >= 30 || window.t.error) && window.t, null, 30000);
    assert.equal(played.error, null, "view() failed in the page");
    assert.ok(played.frames >= 30, `${played.frames} frames presented`);
    assert.doesNotMatch(played.offer, /a=candidate:/, "the client's offer carries no candidates (they are trickled)");

    // The client trickled: the server took every PATCH (204) and counted the candidates.
    const deadline = Date.now() + 20000;
    while (!patches.some((p) => p.status === 204 && /a=candidate:/.test(p.body || "")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const trickles = patches.slice();
    assert.ok(trickles.length > 0, "the client sent no PATCH");
    await Promise.all(trickles.map((p) => p.text));
    for (const p of trickles) {
      assert.equal(p.headers["content-type"], "application/trickle-ice-sdpfrag");
      assert.equal(p.status, 204, `trickle PATCH answered ${p.status}: ${p.responseBody}\n${p.body}\nserver log:\n${server.log()}`);
    }
    assert.ok(trickles.some((p) => /a=candidate:/.test(p.body)), "no PATCH carried a candidate");
    const counted = await metric(server.url, "whepcast_trickle_candidates_total");
    if (counted === null) {
      console.log("# note: /metrics has no whepcast_trickle_candidates_total; relied on the 204 PATCH answers");
    } else {
      assert.ok(counted > 0, `whepcast_trickle_candidates_total is ${counted}`);
    }

    // ICE restart: a PATCH with new credentials and If-Match: "*", answered 200 with the
    // server's new fragment; the client puts the new ufrag into the remote description.
    const before = await page.evaluate(() => ({ ufrag: window.pc.remoteDescription.sdp, frames: window.t.frames }));
    const oldUfrag = ufragOf(before.ufrag);
    const restart = await page.evaluate(async () => {
      try { await window.client.restart(); return { ok: true }; } catch (e) { return { ok: false, error: String(e && e.stack || e) }; }
    });
    const restartPatch = patches.find((p) => p.headers["if-match"] === "*");
    assert.ok(restartPatch, "the client sent no restart PATCH (If-Match: *)");
    await restartPatch.text;
    assert.equal(restartPatch.status, 200, `ICE restart PATCH answered ${restartPatch.status}: ${restartPatch.responseBody}\nserver log:\n${server.log()}`);
    const restartCandidates = (restartPatch.responseBody || "").match(/^a=candidate:.*$/gm) || [];
    assert.ok(restart.ok, "restart() failed in the page: " + restart.error + (restartCandidates.length > 1
      ? `\nThe restart fragment has ${restartCandidates.length} candidate lines; whip-whep 1.2.0 joins them with ","` +
        " (candidates.join()) into invalid SDP, so it only works with one (rtcp-mux: component 1 only):\n" + restartCandidates.join("\n")
      : ""));
    assert.match(restartPatch.responseBody || "", /a=ice-ufrag:/, "the restart answer carries the server's ufrag");
    const after = await page.evaluate(() => window.pc.remoteDescription.sdp);
    const newUfrag = ufragOf(after);
    assert.ok(newUfrag && newUfrag !== oldUfrag, `remote ufrag ${oldUfrag} -> ${newUfrag}: not restarted`);
    assert.equal(newUfrag, ufragOf(restartPatch.responseBody));

    // The picture keeps coming over the restarted ICE session.
    const more = await waitInPage(page, (n) => window.t.frames >= n + 30 && window.t, before.frames, 30000);
    assert.ok(more.frames >= before.frames + 30);
    const state = await page.evaluate(() => ({ ice: window.pc.iceConnectionState, conn: window.pc.connectionState }));
    assert.ok(["connected", "completed"].includes(state.ice), `ICE ${state.ice} after the restart`);
    assert.deepEqual(errors, [], "uncaught errors in the page");
  } finally {
    await browser.close();
    await server.stop();
  }
});
