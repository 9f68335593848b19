// The cost of a WHIP hop: glass-to-glass latency in Chromium (the pattern's barcode carries
// its capture time) when the picture comes straight from `whepcast serve`, and when it goes
// `whepcast publish` -> `whepcast serve --source whip` (the relay) -> the viewer. Same page,
// same browser, same run; each path measured `rounds` times, alternating.
//
//     scripts/bench.sh chain         # or: node benches/chain.mjs [seconds] [rounds]
import { spawn } from "node:child_process";
import { startServer, launchBrowser, waitInPage, WHEPCAST } from "../tests/browser/harness.mjs";

const args = process.argv.slice(2).filter((a) => /^\d+$/.test(a)).map(Number);
const seconds = args[0] || 10;
const rounds = args[1] || 2;
const video = ["--size", "1280x720", "--fps", "30", "--bitrate", "2500k"];
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];

/** `whepcast publish URL ...` until stopped. */
function publish(url) {
  const child = spawn(WHEPCAST, ["publish", url, ...video], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => { log += d; });
  return {
    log: () => log,
    stop: () => new Promise((r) => { if (child.exitCode !== null) return r(); child.once("exit", r); child.kill("SIGTERM"); }),
  };
}

/** Barcode latency samples (ms) of the viewer page at `url`, over `seconds`. */
async function samples(browser, url) {
  const page = await browser.context.newPage();
  await page.goto(url);
  await waitInPage(page, () => window.whepcast && window.whepcast.framesDecoded > 60, undefined, 30000);
  await page.evaluate(() => { window.whepcast.latencySamples.length = 0; });
  await page.waitForTimeout(seconds * 1000);
  const xs = await page.evaluate(() => [...window.whepcast.latencySamples]);
  await page.close();
  return xs;
}

const results = { direct: [], relayed: [] };
const browser = await launchBrowser();
try {
  const direct = async () => {
    const server = await startServer(video);
    try { results.direct.push(...await samples(browser, server.url + "/?datachannel=0")); } finally { await server.stop(); }
  };
  const relayed = async () => {
    const relay = await startServer(["--source", "whip", "--size", "1280x720"]);
    const pub = publish(relay.url + "/whip");
    try {
      results.relayed.push(...await samples(browser, relay.url + "/?datachannel=0"));
    } finally {
      await pub.stop();
      await relay.stop();
    }
  };
  // Alternating which goes first, so neither always meets a fresh browser.
  for (let r = 0; r < rounds; r++) {
    if (r % 2 === 0) { await direct(); await relayed(); } else { await relayed(); await direct(); }
  }
} finally {
  await browser.close();
}
console.log(`\nGlass-to-glass latency, 1280x720 30 fps, ms (capture to presentation), ${rounds} x ${seconds} s each:\n`);
console.log("| path | samples | p50 | p95 |");
console.log("|---|---|---|---|");
for (const [name, label] of [["direct", "`serve` → Chromium"], ["relayed", "`publish` → `serve --source whip` → Chromium"]]) {
  const xs = results[name].sort((a, b) => a - b);
  console.log(`| ${label} | ${xs.length} | ${pct(xs, 0.5)} | ${pct(xs, 0.95)} |`);
}
const d = results.direct, v = results.relayed;
console.log(`\nThe hop adds ${pct(v, 0.5) - pct(d, 0.5)} ms at p50, ${pct(v, 0.95) - pct(d, 0.95)} ms at p95.`);
process.exit(0);
