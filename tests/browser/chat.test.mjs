// The viewer page's data channel: per-frame capture times give a latency figure, and a chat
// between viewers of a stream, shown as text only (never markup), with the server's errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, waitInPage } from "./harness.mjs";

const ready = () => window.whepcast.dcState === "open" && window.whepcast.viewerName
  && !document.getElementById("chat").hidden && window.whepcast.framesDecoded >= 10 && window.whepcast;

test("chat between two viewers is text only; data-channel latency is plausible; long lines are refused", async () => {
  const server = await startServer(["--size", "640x360", "--fps", "30"]);
  const browser = await launchBrowser();
  try {
    const a = await browser.context.newPage();
    const b = await browser.context.newPage();
    const dialogs = [];
    for (const p of [a, b]) p.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    await a.goto(server.url + "/");
    await b.goto(server.url + "/");
    const sa = await waitInPage(a, ready, null, 30000);
    const sb = await waitInPage(b, ready, null, 30000);
    assert.match(sa.viewerName, /^viewer-[0-9a-f]{4}$/);
    assert.match(sb.viewerName, /^viewer-[0-9a-f]{4}$/);
    assert.notEqual(sa.viewerName, sb.viewerName);
    // Both know the audience: B from its hello, A from the announcement when B joined.
    for (const p of [a, b]) {
      await waitInPage(p, () => window.whepcast.viewers === 2, null, 15000);
      await waitInPage(p, () => document.getElementById("chat-toggle")?.textContent.includes("2 watching"), null, 5000);
    }

    // A types a line with markup in it and presses Enter.
    const text = "hi <script>alert(1)</script>";
    await a.locator("#chat-input").pressSequentially(text);
    await a.locator("#chat-input").press("Enter");
    const seen = (t) => window.whepcast.chat.find((c) => c.text === t) || null;
    const atB = await waitInPage(b, seen, text, 15000);
    assert.equal(atB.from, sa.viewerName, "B sees who wrote it");
    const atA = await waitInPage(a, seen, text, 15000);
    assert.equal(atA.from, sa.viewerName, "A sees its own line");
    assert.equal(await a.inputValue("#chat-input"), "", "the input is cleared after sending");
    for (const p of [a, b]) {
      const shown = await p.evaluate(() => ({
        text: document.getElementById("chat-log").textContent,
        scripts: document.querySelectorAll("#chat-log script").length,
        elements: [...document.querySelectorAll("#chat-log *")].map((e) => e.tagName),
        pageScripts: document.scripts.length,
      }));
      assert.ok(shown.text.includes("<script>alert(1)</script>"), "the markup shows as text: " + shown.text);
      assert.equal(shown.scripts, 0, "a script element was created in the chat panel");
      assert.ok(shown.elements.every((t) => t === "DIV" || t === "SPAN"), "unexpected elements: " + shown.elements);
      assert.equal(shown.pageScripts, 1, "only the page's own script");
    }
    assert.deepEqual(dialogs, [], "a dialog opened: the markup ran");

    // Latency from the data channel's capture times: present and plausible on loopback.
    for (const p of [a, b]) {
      const s = await waitInPage(p, () => window.whepcast.dcLatencyMs !== null && window.whepcast.clockOffsetMs !== null
        && window.whepcast.rttDcMs !== null && window.whepcast, null, 20000);
      // Not before capture, give or take the clock offset's uncertainty (half the best ping).
      const slack = s.clockRttMs / 2 + 1;
      assert.ok(s.dcLatencyMs >= -slack && s.dcLatencyMs < 1000,
        `data-channel latency ${s.dcLatencyMs} ms (clock offset uncertain by ${slack} ms)`);
      await waitInPage(p, () => /latency \d+ ms/.test(document.getElementById("overlay").textContent), null, 5000);
    }

    // A line over 280 characters: the server refuses it, the sender's panel says so, B sees nothing.
    const long = "x".repeat(281);
    await a.fill("#chat-input", long);
    await a.press("#chat-input", "Enter");
    const err = await waitInPage(a, () => window.whepcast.chatErrors.length > 0
      && document.querySelector("#chat-log .err")?.textContent, null, 15000);
    assert.ok(err.length > 2, "the error is shown: " + err);
    const errors = await a.evaluate(() => window.whepcast.chatErrors);
    assert.ok(errors.length >= 1 && errors[0].length > 0);
    await b.waitForTimeout(500);
    assert.equal(await b.evaluate((t) => window.whepcast.chat.some((c) => c.text === t), long), false,
      "the refused line reached the other viewer");
    assert.equal(await b.evaluate(() => window.whepcast.chatErrors.length), 0, "the error went to the sender only");
  } catch (e) {
    e.message += "\n--- whepcast log ---\n" + server.log();
    throw e;
  } finally {
    await browser.close();
    await server.stop();
  }
});
