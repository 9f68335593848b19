import { spawn } from "node:child_process";
import { launchBrowser } from "./harness.mjs";
import { startJanus, watchThroughJanus } from "./janus.mjs";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const bitrate = Number(process.argv[2] || 300000);
const size = process.argv[3] || "1280x720";
const janus = await startJanus({ token: "t", bitrate });
const child = spawn(process.env.WHEPCAST_BIN, ["publish", janus.whipUrl, "--token", "t", "--size", size, "--fps", "30", "--bitrate", process.env.RATE || "1500k"], { env: { ...process.env, WHEPCAST_LOG: "whepcast=debug" }, stdio: ["ignore", "pipe", "pipe"] });
let log = ""; child.stderr.on("data", (d) => log += d); child.stdout.on("data", (d) => log += d);
const browser = await launchBrowser({ args: ["--use-fake-ui-for-media-stream"] });
const viewer = await watchThroughJanus(browser, janus);
await viewer.waitFor((s) => s.framesDecoded >= 10, 30000);
let prev = await viewer.stats(), t = Date.now();
for (let i = 0; i < Number(process.env.SECS || 8); i++) {
  await sleep(1000);
  const s = await viewer.stats();
  const now = Date.now();
  console.log(`t=${i + 1}s ${Math.round((s.bytesReceived - prev.bytesReceived) * 8 / (now - t))} kbit/s fps ${((s.framesDecoded - prev.framesDecoded) * 1000 / (now - t)).toFixed(1)} key ${s.keyFramesDecoded}`);
  prev = s; t = now;
}
child.kill("SIGTERM");
await new Promise((r) => child.once("exit", r));
console.log(log.replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) => !/keyframe \d+ at/.test(l)).join("\n"));
await viewer.close(); await browser.close();
const jl = janus.log();
console.log(jl.split("\n").filter((l) => /REMB|remb|bitrate|Bitrate/i.test(l)).slice(0, 40).join("\n"));
await janus.stop();
