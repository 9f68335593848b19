// The viewer page on every screen: at a phone's viewport (Chromium's mobile emulation: 390x844,
// 3x pixels, touch) and a desktop's (1280x800), with two streams served, no two text boxes of
// the page overlap, the video plays in view, and every control can be reached (and is a
// 44 px tap target); the stats fold by tap and by button, fullscreen and picture-in-picture
// work where the browser has them. Plus: the page's stylesheet and modules are served.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchBrowser, waitInPage } from "./harness.mjs";

const SCREENS = {
  phone: { viewport: { width: 390, height: 844 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true },
  desktop: { viewport: { width: 1280, height: 800 } },
  // The same phone turned sideways: the wide layout on a short screen.
  landscape: { viewport: { width: 844, height: 390 }, deviceScaleFactor: 3, isMobile: true, hasTouch: true },
};
const STREAMS = ["--stream", "a=pattern,size=320x240", "--stream", "b=pattern,size=320x240"];

// ---- run in the page ----

/**
 * The boxes of every visible element with text of its own and of every control, each clipped
 * by the ancestors that clip their overflow (a scrolled chat line is only its visible part);
 * then every pair that overlaps, unless one holds the other.
 */
function overlapsInPage() {
  const describe = (el) => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 3; e = e.parentElement) {
      parts.push(e.id ? "#" + e.id : e.tagName.toLowerCase() + [...e.classList].map((c) => "." + c).join(""));
      if (e.id) break;
    }
    return parts.reverse().join(" > ");
  };
  const ownText = (el) => [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  const isControl = (el) => el.matches("button, a[href], input, select, textarea");
  const visible = (el) => el.checkVisibility({ opacityProperty: true, visibilityProperty: true });
  const clip = (r, el) => {
    let { left, top, right, bottom } = r;
    for (let a = el.parentElement; a; a = a.parentElement) {
      const cs = getComputedStyle(a);
      if (cs.overflowX === "visible" && cs.overflowY === "visible") continue;
      const c = a.getBoundingClientRect();
      left = Math.max(left, c.left); top = Math.max(top, c.top);
      right = Math.min(right, c.right); bottom = Math.min(bottom, c.bottom);
    }
    return { left, top, right, bottom };
  };
  const boxes = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (!(ownText(el) || isControl(el)) || !visible(el)) continue;
    // An inline box that wraps has a rectangle per line; its bounding box would be too big.
    const rects = getComputedStyle(el).display === "inline" ? [...el.getClientRects()] : [el.getBoundingClientRect()];
    for (const r of rects) {
      const c = clip(r, el);
      if (c.right - c.left >= 1 && c.bottom - c.top >= 1) boxes.push({ el, name: describe(el), ...c });
    }
  }
  const fmt = (b) => `${b.name} [${Math.round(b.left)},${Math.round(b.top)} ${Math.round(b.right - b.left)}x${Math.round(b.bottom - b.top)}]`;
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      if (a.el === b.el || a.el.contains(b.el) || b.el.contains(a.el)) continue;
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 0.5 && h > 0.5) overlaps.push(`${fmt(a)} and ${fmt(b)} overlap by ${Math.round(w)}x${Math.round(h)}`);
    }
  }
  return { overlaps, names: [...new Set(boxes.map((b) => b.name))] };
}

/**
 * Every visible control (button, link, input): scrolled into view if it has to be, it lies
 * inside the viewport, the element at its centre is the control (nothing covers it), and it
 * is at least `min` px each way. Controls of the bar must be in view without scrolling.
 */
function reachInPage(min) {
  const visible = (el) => el.checkVisibility({ opacityProperty: true, visibilityProperty: true });
  const controls = [...document.querySelectorAll("button, a[href], input, select, textarea")].filter(visible);
  const problems = [], reached = [];
  scrollTo(0, 0);
  for (const el of controls) {
    const name = el.id ? "#" + el.id : `${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}"`;
    let r = el.getBoundingClientRect();
    const inView = (r) => r.left >= 0 && r.top >= 0 && r.right <= innerWidth + 0.5 && r.bottom <= innerHeight + 0.5;
    if (!inView(r)) {
      if (el.closest("#controls")) problems.push(`${name} (in the controls bar) is out of view without scrolling`);
      el.scrollIntoView({ block: "nearest", inline: "nearest" });
      r = el.getBoundingClientRect();
    }
    if (!inView(r)) problems.push(`${name} is not inside the viewport: ${JSON.stringify(r)}`);
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (!hit || !(hit === el || el.contains(hit))) {
      problems.push(`${name} is covered at its centre by ${hit ? hit.id || hit.tagName + "." + hit.className : "nothing"}`);
    }
    if (r.width < min - 0.5 || r.height < min - 0.5) problems.push(`${name} is ${r.width}x${r.height}, under ${min} px`);
    reached.push(name);
    scrollTo(0, 0);
  }
  return { problems, reached };
}

/** The video: on screen with an area, playing, the element at its centre. */
function videoInPage() {
  const v = document.getElementById("video");
  const r = v.getBoundingClientRect();
  const w = Math.min(r.right, innerWidth) - Math.max(r.left, 0), h = Math.min(r.bottom, innerHeight) - Math.max(r.top, 0);
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return {
    onScreen: w > 0 && h > 0 ? Math.round(w * h) : 0, width: r.width, height: r.height, top: r.top,
    atCentre: hit === v, playing: !v.paused && v.readyState >= 2 && v.videoWidth > 0,
    autoplay: v.autoplay, muted: v.muted && v.hasAttribute("muted"), playsinline: v.playsInline,
  };
}

/** Whether the stats panel is shown (and its button says so) is `want`. */
const statsAre = (want) => (document.getElementById("overlay").checkVisibility()
  && document.getElementById("stats-toggle").getAttribute("aria-pressed") === "true") === want;

// ---- the checks, for one screen ----

async function checkLayout(page, screen, when) {
  const { overlaps, names } = await page.evaluate(overlapsInPage);
  assert.deepEqual(overlaps, [], `${screen}${when}: text boxes overlap`);
  // Not vacuous: the status, the stats, the streams, the chat and the bar's buttons were seen.
  for (const want of ["#status", "#overlay > span.stat", "#stats-toggle", "#chat-toggle", "#chat-input", "#play"]) {
    assert.ok(names.includes(want), `${screen}${when}: ${want} not among the boxes compared: ${names.join(", ")}`);
  }
  assert.ok(names.some((n) => n.startsWith("#streams")), `${screen}${when}: no stream in the boxes: ${names.join(", ")}`);

  const video = await page.evaluate(videoInPage);
  assert.ok(video.onScreen > 0 && video.playing, `${screen}${when}: the video is not visible and playing: ${JSON.stringify(video)}`);
  assert.ok(video.atCentre, `${screen}${when}: something covers the centre of the video`);
  assert.ok(video.autoplay && video.muted && video.playsinline, `${screen}: video needs autoplay muted playsinline: ${JSON.stringify(video)}`);

  const { problems, reached } = await page.evaluate(reachInPage, 44);
  assert.deepEqual(problems, [], `${screen}${when}: controls that cannot be reached`);
  for (const want of ["#play", "#streams-toggle", "#stats-toggle", "#chat-toggle", "#chat-input"]) {
    assert.ok(reached.includes(want), `${screen}${when}: ${want} not reached: ${reached.join(", ")}`);
  }
  assert.equal(reached.filter((n) => n.startsWith("a ")).length, 2, `${screen}${when}: both stream links reached: ${reached.join(", ")}`);
  return video;
}

async function onScreen(screen) {
  const server = await startServer(STREAMS);
  const browser = await launchBrowser({ context: SCREENS[screen] });
  const touch = !!SCREENS[screen].hasTouch;
  const press = (page, sel) => (touch ? page.tap(sel) : page.click(sel));
  const errors = [];
  try {
    const page = await browser.context.newPage();
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(server.url + "/");
    // Playing, the chat up, both streams listed.
    await waitInPage(page, () => window.whepcast.framesDecoded >= 10 && window.whepcast.dcState === "open"
      && !document.getElementById("chat").hidden && window.whepcast.streams?.length === 2
      && document.querySelectorAll("#streams li").length === 2, null, 30000);
    // Every panel open: the stream list starts folded on narrow screens.
    if (await page.evaluate(() => document.getElementById("streams").hidden)) await press(page, "#streams-toggle");
    await waitInPage(page, () => !document.getElementById("streams").hidden);
    // A few chat lines, so the chat panel has text in it.
    for (const line of ["hello from a phone", "a longer line that has to wrap on a narrow screen, or the panel would need to be wide"]) {
      await page.fill("#chat-input", line);
      await page.press("#chat-input", "Enter");
    }
    await waitInPage(page, () => window.whepcast.chat.length >= 2);
    await page.evaluate(() => document.activeElement?.blur());
    await waitInPage(page, () => /fps/.test(document.getElementById("overlay").textContent));
    await page.screenshot({ path: `/tmp/whepcast-layout-${screen}.png` });

    const video = await checkLayout(page, screen, "");
    if (screen === "phone") {
      assert.equal(Math.round(video.width), 390, "the video spans the phone's width");
      assert.ok(video.top >= 0 && video.height >= 150, `the video is in view and large enough: ${JSON.stringify(video)}`);
    }

    // The stats fold: by a tap on the picture, and by their button.
    assert.ok(await page.evaluate(statsAre, true), "the stats are shown at first");
    for (const [what, sel] of [["a tap on the picture", "#video"], ["the stats button", "#stats-toggle"]]) {
      await press(page, sel);
      assert.ok(await waitInPage(page, statsAre, false, 3000).catch(() => false), `${screen}: ${what} did not hide the stats`);
      await press(page, sel);
      assert.ok(await waitInPage(page, statsAre, true, 3000).catch(() => false), `${screen}: ${what} did not show the stats again`);
    }

    // The quality menu's place is in the controls bar (empty until renditions exist).
    assert.ok(await page.evaluate(() => !!document.querySelector("#controls #quality-slot")), "no place for the quality menu in the controls bar");

    // Fullscreen: the whole player, with the same guarantees; or no button at all.
    const fullscreen = await page.evaluate(() => document.fullscreenEnabled);
    if (fullscreen) {
      await press(page, "#fullscreen");
      assert.ok(await waitInPage(page, () => document.fullscreenElement?.id === "player", null, 5000).catch(() => false),
        `${screen}: the fullscreen button did not make the player fullscreen`);
      await page.waitForTimeout(300); // let the layout settle at the new size
      await checkLayout(page, screen, " (fullscreen)");
      await press(page, "#fullscreen");
      assert.ok(await waitInPage(page, () => document.fullscreenElement === null, null, 5000).catch(() => false),
        `${screen}: the fullscreen button did not leave fullscreen`);
    } else {
      assert.equal(await page.evaluate(() => document.getElementById("fullscreen").hidden), true, "a fullscreen button without fullscreen");
    }
    // Picture-in-picture of the video, or no button.
    const pip = await page.evaluate(() => document.pictureInPictureEnabled);
    if (pip) {
      await press(page, "#pip");
      assert.ok(await waitInPage(page, () => document.pictureInPictureElement?.id === "video", null, 5000).catch(() => false),
        `${screen}: the picture-in-picture button did not put the video in picture-in-picture`);
      await press(page, "#pip");
      assert.ok(await waitInPage(page, () => document.pictureInPictureElement === null, null, 5000).catch(() => false),
        `${screen}: the picture-in-picture button did not bring the video back`);
    } else {
      assert.equal(await page.evaluate(() => document.getElementById("pip").hidden), true, "a picture-in-picture button without PiP");
    }

    // The other stream, picked from the list by touch (or click).
    await press(page, "#streams li:nth-child(2) a");
    await page.waitForURL("**/view/b");
    const s = await waitInPage(page, () => window.whepcast.framesDecoded >= 10 && window.whepcast, null, 30000);
    assert.equal(s.endpoint, "/whep/b");
    assert.deepEqual(errors, [], "uncaught errors in the page");
    return { fullscreen, pip };
  } catch (e) {
    e.message += "\n--- whepcast log ---\n" + server.log().slice(-3000);
    throw e;
  } finally {
    await browser.close();
    await server.stop();
  }
}

test("phone (390x844, touch): no text boxes overlap, the video plays in view, every control can be reached", async (t) => {
  const { fullscreen, pip } = await onScreen("phone");
  t.diagnostic(`fullscreen ${fullscreen ? "tried" : "not available"}, picture-in-picture ${pip ? "tried" : "not available"}`);
});

test("desktop (1280x800): no text boxes overlap, the video plays in view, every control can be reached", async (t) => {
  const { fullscreen, pip } = await onScreen("desktop");
  t.diagnostic(`fullscreen ${fullscreen ? "tried" : "not available"}, picture-in-picture ${pip ? "tried" : "not available"}`);
});

test("phone turned sideways (844x390, touch): no text boxes overlap, the video plays in view, every control can be reached", async (t) => {
  const { fullscreen, pip } = await onScreen("landscape");
  t.diagnostic(`fullscreen ${fullscreen ? "tried" : "not available"}, picture-in-picture ${pip ? "tried" : "not available"}`);
});

test("the page's stylesheet and modules are served without a token, with their types; #token= plays", async () => {
  const server = await startServer(["--size", "320x240", "--token", "s3cret"]);
  try {
    const page = await (await fetch(server.url + "/")).text();
    const first = [...page.matchAll(/(?:href|src)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert.ok(first.some((p) => p.endsWith(".css")) && first.some((p) => p.endsWith(".js")), "the page links its stylesheet and script: " + first);
    // Every module the page loads, following imports.
    const seen = new Set(), todo = [...first];
    while (todo.length) {
      const path = todo.shift();
      if (seen.has(path)) continue;
      seen.add(path);
      const res = await fetch(server.url + path);
      assert.equal(res.status, 200, `${path}: ${res.status}`);
      const type = path.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8";
      assert.equal(res.headers.get("content-type"), type, path);
      assert.equal(res.headers.get("cache-control"), "no-cache", path);
      const body = await res.text();
      for (const m of body.matchAll(/^import .* from "\.\/([\w.-]+)";$/gm)) todo.push("/assets/" + m[1]);
    }
    assert.ok(seen.has("/assets/whep.js"), "the WHEP client is a module of its own: " + [...seen]);
    const whep = await (await fetch(server.url + "/assets/whep.js")).text();
    assert.doesNotMatch(whep, /\bdocument\b|\bwindow\b/, "whep.js touches the DOM");
    const missing = await fetch(server.url + "/assets/nope.js");
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /nothing here/);
    assert.equal((await fetch(server.url + "/api/streams")).status, 401, "the API still needs the token");

    const browser = await launchBrowser();
    try {
      const p = await browser.context.newPage();
      p.on("dialog", (d) => d.dismiss().catch(() => {}));
      await p.goto(server.url + "/#token=s3cret");
      await waitInPage(p, () => window.whepcast.framesDecoded >= 10, null, 30000);
      assert.match(await p.textContent("#status"), /^live/);
    } finally {
      await browser.close();
    }
  } finally {
    await server.stop();
  }
});
