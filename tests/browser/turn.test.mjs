// TURN: a real coturn on loopback, announced by whepcast (--turn) in its Link headers; the
// viewer page with relay=1 may only use relayed candidates, so every packet goes through it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, waitInPage, startTurn, freePort, metric } from "./harness.mjs";

test("relay=1 plays through a real TURN server (coturn): relayed candidate pair, decoded video", async () => {
  const turn = await startTurn({ user: "u", pass: "p" });
  let server = null, browser = null;
  try {
    server = await startServer(["--size", "640x360", "--turn", turn.url, "--turn-user", "u", "--turn-pass", "p"]);
    // The endpoint announces the TURN server with its credentials.
    const options = await fetch(server.url + "/whep", { method: "OPTIONS" });
    const link = options.headers.get("link") || "";
    assert.ok(link.includes(`<${turn.url}>`) && /rel="?ice-server/.test(link) && /username="u"/.test(link),
      `OPTIONS /whep (${options.status}) Link: ${link}`);

    browser = await launchBrowser();
    const page = await browser.context.newPage();
    await page.goto(server.url + "/?relay=1");
    const state = await waitInPage(page,
      () => window.whepcast.framesDecoded >= 30 && window.whepcast.callbackFrames >= 30
        && window.whepcast.localCandidateType !== null && window.whepcast,
      null, 45000);
    assert.equal(state.relay, true);
    assert.equal(state.localCandidateType, "relay", "the selected candidate pair is not relayed");
    assert.equal(state.width, 640);
    assert.ok(state.iceServers.some((s) => s.urls === turn.url && s.username === "u" && s.credential === "p"),
      "the page took the TURN server from the Link header: " + JSON.stringify(state.iceServers));
    assert.match(await page.textContent("#status"), /^live/);
    // The page trickled its relayed candidate(s) to the session with PATCH.
    const trickle = await waitInPage(page, () => window.whepcast.trickled > 0 && window.whepcast, null, 10000);
    assert.equal(trickle.patchStatus, 204);
    const counted = await metric(server.url, "whepcast_trickle_candidates_total");
    assert.ok(counted === null || counted >= trickle.trickled, `whepcast_trickle_candidates_total ${counted}`);
  } catch (e) {
    e.message += `\n--- whepcast log ---\n${server ? server.log() : ""}\n--- coturn log (tail) ---\n${turn.log().slice(-3000)}`;
    throw e;
  } finally {
    if (browser) await browser.close();
    if (server) await server.stop();
    await turn.stop();
  }
});

test("relay=1 with no TURN server listening: the page says which TURN server failed, no video", async () => {
  const port = await freePort(); // nothing listens there
  const url = `turn:127.0.0.1:${port}`;
  const server = await startServer(["--size", "640x360", "--turn", url, "--turn-user", "u", "--turn-pass", "p"]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/?relay=1");
    const status = await waitInPage(page, (u) => {
      const text = document.getElementById("status").textContent;
      return text.includes("TURN") && text.includes(u) && text;
    }, url, 60000);
    assert.match(status, /--turn-user/, "the message says what to check: " + status);
    const state = await page.evaluate(() => window.whepcast);
    assert.ok(state.lastError.includes("TURN") && state.lastError.includes(url), "lastError: " + state.lastError);
    assert.equal(state.framesDecoded, 0);
    assert.equal(state.callbackFrames, 0);
    assert.equal(state.connected, false);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("relay=1 against a server without --turn: the page says the server announced no TURN server", async () => {
  const server = await startServer(["--size", "640x360"]);
  const browser = await launchBrowser();
  try {
    const page = await browser.context.newPage();
    await page.goto(server.url + "/?relay=1");
    const status = await waitInPage(page,
      () => /no TURN server/.test(document.getElementById("status").textContent) && document.getElementById("status").textContent,
      null, 20000);
    assert.match(status, /--turn/);
    assert.equal(await page.evaluate(() => window.whepcast.framesDecoded), 0);
  } finally {
    await browser.close();
    await server.stop();
  }
});
