// The viewer page in real headless Chromium behind a shaped link (scripts/shape.sh: server --
// router -- viewer namespaces; the router limits the rate and drops UDP toward the viewer):
// whepcast must fit each viewer's stream to its link and keep the picture moving.
//
// Needs root (network namespaces); scripts/test.sh runs it inside `unshare -n`, as does
//   unshare -n sh -c 'ip link set lo up && cd tests/browser && node --test shaped.test.mjs'
//
// Bounds are well below what a quiet machine shows (benches/shaped.mjs prints the figures):
// frames per second over windows of several seconds, never how many seconds something took.
import { test } from "node:test";
import assert from "node:assert/strict";
import { waitInPage } from "./harness.mjs";
import {
  makeLink, startServerIn, launchBrowserIn, openPage, apiGet, watch, summarize, bestWindow, frameCounts,
} from "./shaped.mjs";

const TOP = "1280x720";
// Namespaces need root (scripts/test.sh runs the tests as root inside `unshare -n`).
const skip = process.getuid?.() !== 0 && "needs root for network namespaces (scripts/shape.sh)";
const size = (s) => `${s.frameWidth}x${s.frameHeight}`;
const trace = (series) => frameCounts(series).slice(1).join(" ");
const round1 = (x) => Math.round(x * 10) / 10;
/** The frame size at the start of a series and each second it changed: "1:320x180 9:640x360". */
const sizeTrace = (series) => series.filter((s, i) => s.frameWidth && (i === 0 || size(s) !== size(series[i - 1])))
  .map((s) => `${s.t}:${size(s)}`).join(" ");
/** One viewer_links entry, short: rendition index / estimate / queueing. */
const linkShort = (v) => (v ? `${v.rendition_index}/${Math.round(v.estimate_bps / 1000)}k/${Math.round(v.queueing_ms)}ms` : "-");

/**
 * A link (shaped as `rate`/`loss` before anything connects), a server with the default
 * pattern, and a Chromium on the viewer side; `fn({ link, server, browser })` runs with them
 * and everything is removed afterwards, whatever happens.
 */
async function onLink({ rate = "none", loss = 0 } = {}, fn) {
  const link = await makeLink();
  let server = null, browser = null;
  try {
    link.set(rate, loss, 300);
    server = await startServerIn(link, ["--source", "pattern"]);
    browser = await launchBrowserIn(link);
    return await fn({ link, server, browser });
  } finally {
    await browser?.close().catch(() => {});
    await server?.stop().catch(() => {});
    link.down();
  }
}

/** The page's own view of its link: what the data channel's last `link` message said. */
const pageLink = (page) => page.evaluate(() => window.whepcast.link);

/** This page's entry in /api/streams' viewer_links (matched by the data channel's session id). */
async function viewerLink(page) {
  const session = await waitInPage(page, () => window.whepcast.session);
  const api = await apiGet(page);
  const links = api.streams.flatMap((s) => s.viewer_links);
  return { mine: links.find((v) => v.session === session), all: links };
}

/** Opens the page and waits for its first frames, so the watch starts with playback. */
async function play(browser, url) {
  const page = await openPage(browser, url);
  await waitInPage(page, () => window.whepcast.framesDecoded > 0, null, 30000);
  return page;
}

/** What a diagnostic says about loads that were tried again (see openPage). */
function reloads(page) {
  return page.loadProblems.length ? `; page loaded again after: ${page.loadProblems.join("; ")}` : "";
}

test("a viewer behind 1 Mbit/s with 1 % loss plays smoothly", { timeout: 120000, skip }, async (t) => {
  await onLink({ rate: "1mbit", loss: 1 }, async ({ server, browser }) => {
    const page = await play(browser, server.url + "/");
    const series = await watch(page, 30);
    const s = summarize(series, 15, 30);
    const last = series[series.length - 1];
    const { mine } = await viewerLink(page);
    const stalled = Math.max(s.freezeSeconds, s.stalledSeconds);
    t.diagnostic(`last 15 s: ${round1(s.fps)} frames/s, freezes ${round1(s.freezeSeconds)} s, ${s.stalledSeconds} s without a frame, ` +
      `sizes ${s.sizes.join(",")}, lost ${round1(s.lossPercent)} %, ${Math.round(s.kbps)} kbit/s; at the end ${size(last)}; ` +
      `viewer_link ${JSON.stringify(mine)}; frames each second: ${trace(series)}; sizes ${sizeTrace(series)}${reloads(page)}`);
    assert.ok(s.fps >= 20, `${round1(s.fps)} frames/s over the last 15 s (want >= 20); each second: ${trace(series)}`);
    assert.ok(stalled <= 1.5, `stalled ${stalled} s over the last 15 s (want <= 1.5): freezes ${s.freezeSeconds} s, ${s.stalledSeconds} s without a frame`);
    assert.notEqual(size(last), TOP, `still at ${TOP} at the end behind 1 Mbit/s (viewer_link ${JSON.stringify(mine)})`);
    assert.ok(last.frameWidth > 0, "a frame size at the end");
  });
});

test("a viewer behind 500 kbit/s with 1 % loss still plays", { timeout: 120000, skip }, async (t) => {
  await onLink({ rate: "500kbit", loss: 1 }, async ({ server, browser }) => {
    const page = await play(browser, server.url + "/");
    const series = await watch(page, 30);
    const s = summarize(series, 15, 30);
    const { mine } = await viewerLink(page);
    t.diagnostic(`last 15 s: ${round1(s.fps)} frames/s, freezes ${round1(s.freezeSeconds)} s, ${s.stalledSeconds} s without a frame, ` +
      `sizes ${s.sizes.join(",")}, lost ${round1(s.lossPercent)} %, ${Math.round(s.kbps)} kbit/s; ` +
      `viewer_link ${JSON.stringify(mine)}; frames each second: ${trace(series)}; sizes ${sizeTrace(series)}${reloads(page)}`);
    assert.ok(s.fps >= 15, `${round1(s.fps)} frames/s over the last 15 s (want >= 15); each second: ${trace(series)}`);
  });
});

test("a link that drops (to 1 Mbit/s, 1 % loss) and comes back", { timeout: 150000, skip }, async (t) => {
  const before = 10, during = 15, after = 25, lifted = before + during;
  await onLink({}, async ({ link, server, browser }) => {
    const page = await play(browser, server.url + "/");
    const series = await watch(page, before + during + after, {
      onSample: (s) => {
        if (s.t === before) link.set("1mbit", 1, 300);
        if (s.t === lifted) link.set("none", 0);
      },
    });
    // Smooth again while the drop lasts: some 5 s inside its last 10 s.
    const smooth = bestWindow(series, lifted - 10, lifted, 5);
    const last = series[series.length - 1];
    const { mine } = await viewerLink(page);
    const where = await pageLink(page);
    const pre = summarize(series, before - 5, before), drop = summarize(series, before, lifted), post = summarize(series, lifted, lifted + after);
    t.diagnostic(`before ${round1(pre.fps)} frames/s ${pre.sizes.join(",")}; during ${round1(drop.fps)} frames/s ${drop.sizes.join(",")} ` +
      `(lost ${round1(drop.lossPercent)} %), best 5 s of its last 10 s ${round1(smooth.fps)} frames/s from second ${smooth.at}; ` +
      `after ${round1(post.fps)} frames/s ${post.sizes.join(",")}; at the end ${size(last)}, link message ${JSON.stringify(where)}; ` +
      `viewer_link ${JSON.stringify(mine)}; frames each second: ${trace(series)}; sizes ${sizeTrace(series)}${reloads(page)}`);
    assert.ok(smooth.fps >= 20, `best 5 s in the drop's last 10 s: ${round1(smooth.fps)} frames/s (want >= 20); each second: ${trace(series)}`);
    assert.equal(size(last), TOP, `back at ${TOP} ${after} s after the link came back (sizes after: ${post.sizes.join(",")}; viewer_link ${JSON.stringify(mine)})`);
  });
});

test("two viewers, one shaped (1 Mbit/s, 1 % loss), one not", { timeout: 120000, skip }, async (t) => {
  await onLink({ rate: "1mbit", loss: 1 }, async ({ link, server, browser }) => {
    // The other Chromium runs beside the server: its path never crosses the router.
    const near = await launchBrowserIn(link, { namespace: link.serverNs });
    try {
      const [shapedPage, nearPage] = await Promise.all([play(browser, server.url + "/"), play(near, server.url + "/")]);
      const sessions = await Promise.all([shapedPage, nearPage].map((p) => waitInPage(p, () => window.whepcast.session)));
      // Both viewers' links as the server sees them, each second (rendition/estimate/queueing).
      const polls = [];
      const poll = () => polls.push(apiGet(nearPage).then((api) => {
        const links = api.streams.flatMap((s) => s.viewer_links);
        return sessions.map((id) => linkShort(links.find((v) => v.session === id)));
      }, (e) => [String(e), ""]));
      const [shaped, clear] = await Promise.all([watch(shapedPage, 25), watch(nearPage, 25, { onSample: poll })]);
      const seen = await Promise.all(polls);
      const c = summarize(clear, 15, 25), sh = summarize(shaped, 15, 25);
      const [clearLink, shapedLink] = [await viewerLink(nearPage), await viewerLink(shapedPage)];
      const lastClear = clear[clear.length - 1], lastShaped = shaped[shaped.length - 1];
      const history = (i) => seen.map((x) => x[i]).join(" ");
      t.diagnostic(`unshaped, last 10 s: ${round1(c.fps)} frames/s ${c.sizes.join(",")}, at the end ${size(lastClear)}, viewer_link ${JSON.stringify(clearLink.mine)}; ` +
        `frames each second: ${trace(clear)}; sizes ${sizeTrace(clear)}; each second (index/estimate/queueing): ${history(1)}${reloads(nearPage)}`);
      t.diagnostic(`shaped, last 10 s: ${round1(sh.fps)} frames/s ${sh.sizes.join(",")}, at the end ${size(lastShaped)}, viewer_link ${JSON.stringify(shapedLink.mine)}; ` +
        `frames each second: ${trace(shaped)}; sizes ${sizeTrace(shaped)}; each second (index/estimate/queueing): ${history(0)}${reloads(shapedPage)}`);
      assert.ok(clearLink.mine && shapedLink.mine, `both viewers in /api/streams: ${JSON.stringify(clearLink.all)}`);
      assert.ok(c.fps >= 25, `unshaped viewer: ${round1(c.fps)} frames/s over the last 10 s (want >= 25); each second: ${trace(clear)}`);
      assert.deepEqual(c.sizes, [TOP], `unshaped viewer's frame sizes over the last 10 s (sizes ${sizeTrace(clear)}; ` +
        `its index/estimate/queueing each second: ${history(1)})`);
      assert.equal(clearLink.mine.rendition_index, 0, `unshaped viewer's rendition_index (${JSON.stringify(clearLink.mine)})`);
      assert.ok(shapedLink.mine.rendition_index > 0, `shaped viewer on a lower rendition (${JSON.stringify(shapedLink.mine)})`);
      assert.notEqual(size(lastShaped), TOP, `shaped viewer's frames at the end`);
    } finally {
      await near.close().catch(() => {});
    }
  });
});

test("the quality menu and ?rendition= pick a rendition; an unknown one is refused", { timeout: 90000, skip }, async (t) => {
  await onLink({}, async ({ server, browser }) => {
    // ?rendition= on the page goes to the POST: the smallest rendition's frames.
    const page = await openPage(browser, server.url + "/?rendition=320x180");
    const small = await waitInPage(page, () => window.whepcast.framesDecoded >= 10 && window.whepcast.width > 0 && window.whepcast, null, 30000);
    assert.equal(`${small.width}x${small.height}`, "320x180", "frames with ?rendition=320x180");
    // The menu lists the renditions once the data channel's link message came; choosing the
    // top one reconnects asking for it.
    const attempts = small.attempts;
    await page.selectOption("select#quality", TOP, { timeout: 20000 });
    const big = await waitInPage(page, (top) => {
      const w = window.whepcast;
      return w.attempts > 0 && w.quality === top && `${w.width}x${w.height}` === top && w.framesDecoded >= 10 && w;
    }, TOP, 30000);
    assert.ok(big.attempts > attempts, `the choice reconnected (attempts ${attempts} -> ${big.attempts})`);
    assert.ok(big.link?.rendition?.startsWith(TOP + "@"), `link message says ${JSON.stringify(big.link)}`);
    // An unknown rendition: 400, naming the stream's renditions.
    const refused = await page.evaluate(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      const r = await fetch("/whep?rendition=999x999", { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
      pc.close();
      return { status: r.status, body: await r.text() };
    });
    t.diagnostic(`320x180 after ${small.framesDecoded} frames; menu -> ${big.width}x${big.height} (attempts ${attempts} -> ${big.attempts}); ` +
      `?rendition=999x999 -> ${refused.status} ${refused.body.trim()}${reloads(page)}`);
    assert.equal(refused.status, 400, `POST /whep?rendition=999x999: ${refused.status} ${refused.body}`);
    for (const r of ["1280x720", "640x360", "320x180"]) assert.ok(refused.body.includes(r), `the refusal names ${r}: ${refused.body}`);
  });
});
