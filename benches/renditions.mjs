// What each rendition costs: the default pattern (1280x720, 30 fps, 2.5 Mbit/s) with its
// default ladder, watched by Chromium pages pinned to renditions (?rendition=WxH&insist=1).
// For each set of watched renditions it prints the pipeline's time per rendition (scaling and
// encoding, from /api/streams: % of one core) and the whole server's CPU (from /proc), so the
// cost of a lower rendition reads as the difference it makes. Prints figures, asserts nothing.
//
//     scripts/bench.sh renditions        # or: node benches/renditions.mjs [seconds]
import { readFileSync } from "node:fs";
import { startServer, launchBrowser, waitInPage } from "../tests/browser/harness.mjs";

const seconds = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) || 10);
const ticks = 100; // USER_HZ on Linux

/** The server process's CPU seconds so far (user + system). */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticks;
}

const api = async (url) => (await fetch(url + "/api/streams")).json();

async function measure(watched) {
  const server = await startServer(["--source", "pattern"]);
  const browser = await launchBrowser();
  try {
    for (const rendition of watched) {
      const page = await browser.context.newPage();
      await page.goto(`${server.url}/?rendition=${rendition}&insist=1`);
      await waitInPage(page, () => window.whepcast.framesDecoded > 30);
    }
    // Settle, then measure over `seconds`.
    await new Promise((r) => setTimeout(r, 2000));
    const before = await api(server.url);
    const cpu0 = cpuSeconds(server.child.pid);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const after = await api(server.url);
    const cpu1 = cpuSeconds(server.child.pid);
    const wall = (performance.now() - t0) / 1000;
    const per = after.streams[0].renditions.map((r, i) => {
      const busy = r.busy_seconds - before.streams[0].renditions[i].busy_seconds;
      const frames = r.frames_encoded - before.streams[0].renditions[i].frames_encoded;
      return { name: r.name, viewers: r.viewers, core: (busy / wall) * 100, fps: frames / wall };
    });
    return { watched, per, server: ((cpu1 - cpu0) / wall) * 100 };
  } finally {
    await browser.close();
    await server.stop();
  }
}

const sets = [["1280x720"], ["1280x720", "640x360"], ["1280x720", "320x180"], ["1280x720", "640x360", "320x180"]];
console.log(`whepcast ${process.env.WHEPCAST_BIN || "target/release/whepcast"}; default pattern with its default ladder; ${seconds} s per row\n`);
console.log("| renditions watched | 1280x720: % of a core (fps) | 640x360 | 320x180 | whole server, % of a core |");
console.log("|---|---|---|---|---|");
for (const set of sets) {
  const r = await measure(set);
  const cell = (p) => (p.fps > 1 ? `${p.core.toFixed(1)} % (${p.fps.toFixed(0)})` : "not encoded");
  console.log(`| ${set.join(" + ")} | ${r.per.map(cell).join(" | ")} | ${r.server.toFixed(1)} % |`);
}
