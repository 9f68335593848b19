// The numbers of the stats panel: read from the peer connection's getStats() into `state`,
// shown as one short item each so the panel wraps cleanly on any width.

/** Reads `pc`'s stats into `state` (framesDecoded, width, height, fps, kbps, packetsLost, rttMs, candidate types, checks). */
export async function collectStats(pc, state, prev) {
  const report = await pc.getStats();
  let rtt = null, pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      state.framesDecoded = s.framesDecoded || 0;
      state.width = s.frameWidth || 0;
      state.height = s.frameHeight || 0;
      state.fps = s.framesPerSecond || 0;
      state.packetsLost = s.packetsLost || 0;
      const now = s.timestamp;
      if (prev.at && now > prev.at) state.kbps = Math.round((s.bytesReceived - prev.bytes) * 8 / (now - prev.at));
      prev.bytes = s.bytesReceived;
      prev.at = now;
    }
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime * 1000;
  });
  if (!pair) report.forEach((s) => { if (!pair && s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
  if (pair) {
    if (pair.currentRoundTripTime !== undefined) rtt = pair.currentRoundTripTime * 1000;
    state.localCandidateType = report.get(pair.localCandidateId)?.candidateType ?? null;
    state.remoteCandidateType = report.get(pair.remoteCandidateId)?.candidateType ?? null;
    state.checks = { sent: pair.requestsSent ?? null, answered: pair.responsesReceived ?? null };
  }
  state.rttMs = rtt;
}

/** The panel's items, in order: resolution, rate, bit rate, loss, round trip, first frame, latency, relay. */
export function statItems(state) {
  const latency = state.dcLatencyMs !== null
    ? `latency ${state.dcLatencyMs} ms` + (state.latencyMs === null ? "" : ` (picture ${state.latencyMs} ms)`)
    : (state.latencyMs === null ? "" : `latency ${state.latencyMs} ms`);
  const link = state.link;
  const mbps = (bps) => (bps >= 1e6 ? (bps / 1e6).toFixed(1) + " Mbps" : Math.round(bps / 1e3) + " kbps");
  return [
    `${state.width}×${state.height}`,
    link?.rendition ? `rendition ${link.rendition}${state.quality && state.quality !== "auto" ? " (chosen)" : " (auto)"}` : "",
    // The estimate as far as arrivals bear it out (what the server moves up on).
    link?.provenBps ? `link ≈ ${mbps(link.provenBps)}` : "",
    `${Number(state.fps).toFixed(0)} fps`,
    `${state.kbps} kbps`,
    `lost ${state.packetsLost}`,
    `rtt ${state.rttMs === null ? "–" : state.rttMs.toFixed(1) + " ms"}`,
    `first frame ${state.ttffMs === null ? "–" : state.ttffMs + " ms"}`,
    latency,
    state.localCandidateType === "relay" ? "via TURN" : "",
  ];
}

/** Shows `items` in `panel`, one span each (reused between updates; empty ones removed). */
export function renderStats(panel, items) {
  const shown = items.filter(Boolean);
  while (panel.childElementCount > shown.length) panel.lastElementChild.remove();
  // Text nodes ("connecting…") go; items are spans separated by spaces so textContent reads well.
  for (const n of [...panel.childNodes]) if (n.nodeType !== Node.ELEMENT_NODE) n.remove();
  shown.forEach((text, i) => {
    let span = panel.children[i];
    if (!span) {
      span = document.createElement("span");
      span.className = "stat";
      panel.append(span);
    }
    if (span.textContent !== text + " ") span.textContent = text + " ";
  });
}
