// Time to first frame in Chromium: from the viewer page's POST to the first decoded frame
// presented (requestVideoFrameCallback), over repeated joins, for whepcast and (when it is
// installed) the GStreamer reference broadcaster, with the same page and the same browser.
//
//     scripts/bench.sh ttff          # or: node benches/ttff.mjs [joins]
//
// TURN mode (`--turn` or TTFF_TURN=1): a real coturn on loopback, announced by whepcast
// (--turn); the same page joins directly and relay-only (relay=1: every packet through the
// TURN server) in the same run, so the two rows compare the relay's cost alone.
//
//     scripts/bench.sh ttff 10 --turn    # or: node benches/ttff.mjs 10 --turn
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { startServer, launchBrowser, waitInPage, startTurn } from "../tests/browser/harness.mjs";

const argv = process.argv.slice(2);
const turnMode = argv.includes("--turn") || process.env.TTFF_TURN === "1";
const joins = Number(argv.find((a) => /^\d+$/.test(a)) || 10);
const gstScript = new URL("../../shared/peers/gst_whep.py", import.meta.url).pathname;

function startGst() {
  return new Promise((resolve, reject) => {
    const child = spawn("/usr/bin/python3", [gstScript, "--listen", "127.0.0.1:0", "--size", "1280x720", "--fps", "30", "--bitrate", "2500"],
      { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/(http:\/\/[\d.]+:\d+)\/whep/);
      if (m) resolve({ url: m[1], stop: () => new Promise((r) => { child.once("exit", r); child.kill("SIGTERM"); }) });
    });
    child.on("exit", (c) => reject(new Error("gst_whep exited " + c)));
  });
}

const breakdown = [];
let latencyRow = null;
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];

// Median time from the POST to each step, to show where the time goes.
const steps = turnMode
  ? ["answer", "relay-candidate", "ice-checking", "ice-connected", "pc-connected", "first-frame"]
  : ["answer", "ice-checking", "ice-connected", "pc-connected", "first-frame"];

// Column titles of the breakdown, per step.
const stepTitles = {
  "answer": "answer received", "relay-candidate": "relay candidate", "ice-checking": "ICE checking",
  "ice-connected": "ICE connected", "pc-connected": "DTLS connected", "first-frame": "first frame",
};

function printBreakdown(firstColumn) {
  console.log("\nMedian ms from the POST to each step:\n");
  console.log(`| ${firstColumn} | ` + steps.map((k) => stepTitles[k]).join(" | ") + " |");
  console.log("|---|" + steps.map(() => "---|").join(""));
  for (const row of breakdown) console.log(row);
}

async function measure(name, pageUrl, wantRelay = null) {
  const browser = await launchBrowser();
  const page = await browser.context.newPage();
  const samples = [];
  const marks = [];
  try {
    for (let i = 0; i < joins; i++) {
      await page.goto(pageUrl);
      const ms = await waitInPage(page, () => window.whepcast.ttffMs, null, 15000);
      samples.push(ms);
      marks.push(await page.evaluate(() => window.whepcast.marks));
      if (wantRelay !== null && i === 0) {
        // Make sure the row measures what it says: a relayed (or a direct) candidate pair.
        const type = await waitInPage(page, () => window.whepcast.localCandidateType, null, 5000);
        if ((type === "relay") !== wantRelay) throw new Error(`${name}: the page's candidate pair is ${type}`);
      }
      await page.goto("about:blank"); // pagehide sends DELETE
      await new Promise((r) => setTimeout(r, 700));
    }
  } finally {
    await browser.close();
  }
  const s = [...samples].sort((a, b) => a - b);
  console.log(`| ${name} | ${joins} | ${pct(s, 0.5)} | ${pct(s, 0.95)} | ${s[0]} | ${s[s.length - 1]} | ${samples.join(" ")} |`);
  breakdown.push(`| ${name} | ` + steps.map((k) => {
    const v = marks.map((m) => m[k]).filter((x) => x !== undefined).sort((a, b) => a - b);
    return v.length ? pct(v, 0.5) : "–";
  }).join(" | ") + " |");
}

console.log("| server | joins | median ms | p95 ms | min | max | samples |");
console.log("|---|---|---|---|---|---|---|");
if (turnMode) {
  const turn = await startTurn({ user: "u", pass: "p" });
  try {
    const wc = await startServer(["--size", "1280x720", "--fps", "30", "--bitrate", "2500k",
      "--turn", turn.url, "--turn-user", turn.user, "--turn-pass", turn.pass]);
    try {
      await measure("whepcast direct", wc.url + "/", false);
      await measure("whepcast relay=1 (coturn)", wc.url + "/?relay=1", true);
    } finally {
      await wc.stop();
    }
  } finally {
    await turn.stop();
  }
  printBreakdown("path");
  process.exit(0);
}
const wc = await startServer(["--size", "1280x720", "--fps", "30", "--bitrate", "2500k"]);
try {
  await measure("whepcast", wc.url + "/?datachannel=0");
  await measure("whepcast + data channel", wc.url + "/");
  // Glass-to-glass: the page reads the capture time the pattern draws into each frame.
  {
    const browser = await launchBrowser();
    const page = await browser.context.newPage();
    await page.goto(wc.url + "/");
    await waitInPage(page, () => window.whepcast.framesDecoded > 30);
    await page.evaluate(() => { window.whepcast.latencySamples.length = 0; });
    await page.waitForTimeout(10000);
    const xs = (await page.evaluate(() => window.whepcast.latencySamples)).sort((a, b) => a - b);
    latencyRow = `| barcode in the picture vs the page's clock | ${xs.length} | ${pct(xs, 0.5)} | ${pct(xs, 0.95)} |`;
    // What the page shows: data-channel capture times, corrected by the measured clock offset.
    const st = await page.evaluate(() => ({ xs: [...window.whepcast.dcLatencySamples], shown: window.whepcast.dcLatencyMs,
      offset: window.whepcast.clockOffsetMs, rtt: window.whepcast.rttDcMs }));
    // The page keeps samples on its own clock; the offset moves them to the server's.
    const ys = st.xs.map((x) => x + (st.offset ?? 0)).sort((a, b) => a - b);
    const ms = (v) => (v === undefined || v === null ? "–" : Math.round(v));
    latencyRow += `\n| data channel (what the overlay shows: ${ms(st.shown)} ms; clock offset ${st.offset?.toFixed(1)} ms, ping RTT ${st.rtt?.toFixed(1)} ms) | ${ys.length} | ${ms(pct(ys, 0.5))} | ${ms(pct(ys, 0.95))} |`;
    await browser.close();
  }
  if (existsSync(gstScript)) {
    const gst = await startGst();
    try {
      // The same page, pointed at the reference server's endpoint (it allows CORS).
      // Both without the page's data channel: the reference has none to offer.
      await measure("gst-webrtcbin", `${wc.url}/?datachannel=0&endpoint=${encodeURIComponent(gst.url + "/whep")}`);
    } finally {
      await gst.stop();
    }
  }
} finally {
  await wc.stop();
}
printBreakdown("server");
if (latencyRow) {
  console.log("\nGlass-to-glass latency, whepcast 1280x720 30 fps, ms (capture to presentation):\n");
  console.log("| measured by | samples | p50 | p95 |");
  console.log("|---|---|---|---|");
  console.log(latencyRow);
}
