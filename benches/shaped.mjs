// Playback over a constrained link: whepcast's default pattern (1280x720, 30 fps) to one headless
// Chromium through a router that limits the rate and drops 1 % of UDP, server->viewer
// (scripts/shape.sh; tests/browser/shaped.mjs). Prints figures, passes nothing, fails nothing.
// Needs root (network namespaces); runs the same inside `unshare -n`.
//
//     node benches/shaped.mjs                  # every link, 35 s each, then the "drop" scenario
//     node benches/shaped.mjs --quick          # unshaped and 1mbit:1, 20 s; drop 8+12+12 s
//     node benches/shaped.mjs --links 1mbit:1,drop --seconds 30 --bin target/debug/whepcast
//     node benches/shaped.mjs --ref            # also the GStreamer reference (../shared/peers)
//
// Options (or environment): --links LIST (SHAPED_LINKS): comma-separated, each "unshaped",
// RATE:LOSS[:QUEUE_MS] (tc rate, loss %, queue default 300 ms) or "drop"; --seconds N
// (SHAPED_SECONDS) watched per link; --drop A,B,C (SHAPED_DROP): seconds unshaped, at 1mbit 1 %,
// lifted; --bin PATH (WHEPCAST_BIN); --ref (SHAPED_REF=1).
//
// Per link: frames/s shown (presented by the page, requestVideoFrameCallback) and freeze
// seconds (Chromium's totalFreezesDuration, which only counts a freeze once a frame ends it,
// so "stalled" also counts the seconds with no frame at all) over the last 15 s; "settled":
// seconds from opening the page to the start of the first 5 s in which every second showed
// >= 25 frames; the frame sizes seen; packets lost %, NACKs and PLIs sent, kbit/s received,
// all over the last 15 s. The reference has no data channel, so its rows use the same page
// without one (?datachannel=0), served by an idle whepcast.
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { makeLink, startServerIn, spawnIn, launchBrowserIn, watch, summarize, settledAfter, frameCounts } from "../tests/browser/shaped.mjs";

const argv = process.argv.slice(2);
const opt = (name, env, dflt) => {
  const i = argv.indexOf("--" + name);
  return i >= 0 ? argv[i + 1] : (process.env[env] ?? dflt);
};
const quick = argv.includes("--quick");
const bin = resolve(opt("bin", "WHEPCAST_BIN", new URL("../target/release/whepcast", import.meta.url).pathname));
const links = opt("links", "SHAPED_LINKS", quick ? "unshaped,1mbit:1,drop" : "unshaped,3mbit:1,1mbit:1,500kbit:1,drop").split(",");
const seconds = Number(opt("seconds", "SHAPED_SECONDS", quick ? 20 : 35));
const [dropBefore, dropFor, dropAfter] = opt("drop", "SHAPED_DROP", quick ? "8,12,12" : "15,20,25").split(",").map(Number);
const withRef = argv.includes("--ref") || process.env.SHAPED_REF === "1";
const gstScript = new URL("../../shared/peers/gst_whep.py", import.meta.url).pathname;
const tail = Math.min(15, Math.floor(seconds / 2)); // the steady-state window

if (!existsSync(bin)) throw new Error(`no whepcast binary at ${bin} (--bin or WHEPCAST_BIN)`);
const round = (x, d = 0) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const seen = (x) => (x === null ? "never" : x + " s");

// One server per row: the whepcast pattern, or the reference with an idle whepcast serving the page.
async function startRow(link, server) {
  if (server === "whepcast") {
    const wc = await startServerIn(link, ["--source", "pattern"], { bin });
    return { page: wc.url + "/", stop: () => wc.stop() };
  }
  const wc = await startServerIn(link, ["--source", "pattern"], { bin });
  const gst = await spawnIn(link, "/usr/bin/python3", [gstScript, "--listen", `${link.serverIp}:0`,
    "--size", "1280x720", "--fps", "30", "--bitrate", "2500"], /(http:\/\/[\d.]+:\d+)\/whep/);
  return {
    page: `${wc.url}/?datachannel=0&endpoint=${encodeURIComponent(gst.url + "/whep")}`,
    stop: async () => { await gst.stop(); await wc.stop(); },
  };
}

// Opens the page in a fresh browser and watches it for `secs` s; onSample may change the link.
async function play(link, server, secs, onSample) {
  const row = await startRow(link, server);
  const browser = await launchBrowserIn(link);
  try {
    const page = await browser.context.newPage();
    await page.goto(row.page);
    return await watch(page, secs, { onSample });
  } finally {
    await browser.close();
    await row.stop();
  }
}

const rows = [], dropRows = [], traces = [];
const trace = (label, series) => traces.push(`${label}: ${frameCounts(series).slice(1).join(" ")}`);

const link = await makeLink();
try {
  for (const server of withRef && existsSync(gstScript) ? ["whepcast", "gst-webrtcbin"] : ["whepcast"]) {
    for (const spec of links) {
      if (spec === "drop") {
        const total = dropBefore + dropFor + dropAfter;
        link.set("none", 0);
        const series = await play(link, server, total, (s) => {
          if (s.t === dropBefore) link.set("1mbit", 1, 300);
          if (s.t === dropBefore + dropFor) link.set("none", 0);
        });
        const lifted = dropBefore + dropFor;
        const before = summarize(series, Math.max(0, dropBefore - 5), dropBefore);
        const during = summarize(series, dropBefore, lifted);
        const after = summarize(series, lifted, total);
        // The top size: the largest seen before the drop; back when a second at that size shows >= 25 frames.
        const top = series.slice(1, dropBefore + 1).reduce((m, s) => (s.frameWidth * s.frameHeight > m.frameWidth * m.frameHeight ? s : m), series[0]);
        const counts = frameCounts(series);
        const full = series.slice(lifted + 1).find((s) => s.frameWidth === top.frameWidth && s.frameHeight === top.frameHeight && counts[s.t] >= 25);
        const smoothDuring = settledAfter(series, dropBefore);
        dropRows.push(`| ${server} | ${round(before.fps)} | ${round(during.fps)} (${during.stalledSeconds} s stalled, lost ${round(during.lossPercent, 1)} %) | ` +
          `${smoothDuring !== null && smoothDuring + 5 <= dropFor ? smoothDuring + " s" : "never"} | ${seen(settledAfter(series, lifted))} | ` +
          `${full ? full.t - lifted + " s" : "never"} (${top.frameWidth}x${top.frameHeight}) | ${round(after.fps)} |`);
        trace(`${server} drop (${dropBefore} s unshaped, ${dropFor} s 1mbit 1 %, ${dropAfter} s lifted)`, series);
        continue;
      }
      const [rate, loss = "0", queue = "300"] = spec === "unshaped" ? ["none"] : spec.split(":");
      link.set(rate, Number(loss), Number(queue));
      const series = await play(link, server, seconds);
      const s = summarize(series, seconds - tail, seconds);
      const label = spec === "unshaped" ? "unshaped" : `${rate}, ${loss} % loss, ${queue} ms queue`;
      rows.push(`| ${server} | ${label} | ${round(s.fps, 1)} | ${round(s.freezeSeconds, 1)} | ${s.stalledSeconds} | ${seen(settledAfter(series))} | ` +
        `${s.sizes.join(", ") || "–"} | ${round(s.lossPercent, 1)} | ${s.nacks} | ${s.plis} | ${round(s.kbps)} |`);
      trace(`${server} ${label}`, series);
    }
  }
} finally {
  link.down();
}

if (withRef && !existsSync(gstScript)) console.log(`(no reference: ${gstScript} is missing)\n`);
console.log(`whepcast ${bin}; pattern 1280x720 30 fps; one Chromium viewer per row, ${seconds} s; figures over the last ${tail} s.\n`);
if (rows.length) {
  console.log(`| server | link (server->viewer) | frames/s shown | freeze s | stalled s | settled (>= 25 fps for 5 s) | frame sizes | lost % | NACKs | PLIs | kbit/s |`);
  console.log("|---|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(r);
}
if (dropRows.length) {
  console.log(`\nDrop: ${dropBefore} s unshaped, ${dropFor} s at 1mbit 1 % loss (300 ms queue), ${dropAfter} s lifted.\n`);
  console.log("| server | frames/s before (last 5 s) | frames/s during | smooth again during the drop | smooth after lifting | top size after lifting | frames/s after |");
  console.log("|---|---|---|---|---|---|---|");
  for (const r of dropRows) console.log(r);
}
console.log("\nFrames shown in each second:\n");
for (const t of traces) console.log("    " + t);
