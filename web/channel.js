// The "whepcast" data channel next to the video (src/whep/datachannel.rs lists its messages):
// the server sends each frame's capture time with its RTP timestamp and answers clock pings;
// from them this module keeps the clock offset (server minus this page) and the latency of
// the frames this page presents. Chat and audience messages go to the `on` callbacks.

/**
 * Unix milliseconds with sub-millisecond resolution, on the same clock as the frames'
 * presentation times (performance.now()), so clock offset and latency never mix clocks.
 */
export const wallNow = () => performance.timeOrigin + performance.now();

/**
 * When a frame reaches the screen (Unix ms): the compositor's expected display time, the
 * closest this page can get to the glass. Never before the frame was handed to the compositor
 * (presentationTime): under load, headless Chromium's expectedDisplayTime can name a vsync
 * that had passed already.
 */
export function shownAt(meta, now) {
  const expected = meta?.expectedDisplayTime || 0, presented = meta?.presentationTime || 0;
  return performance.timeOrigin + (Math.max(expected, presented) || now);
}

/**
 * Opens the channel on `pc` and keeps `state` up to date (dcState, dcLatencyMs,
 * dcLatencySamples, clockOffsetMs, clockRttMs, rttDcMs, viewerName, session, viewers,
 * chatErrors, link). `on`: hello(msg), viewers(count), chat(from, text), error(text), closed(),
 * link({ rendition, index, renditions, estimateBps, ... }).
 * Returns { frame(meta, now), send(obj) -> bool, close() }.
 */
export function openChannel(pc, state, on) {
  // RTP timestamp -> capture time (server's Unix ms) of the latest frames.
  const captured = new Map();
  const pings = new Map();
  const clockSamples = [];
  let pingTimer = null, pingId = 0, live = true;
  state.dcLatencySamples = [];
  state.dcLatencyMs = state.clockOffsetMs = state.clockRttMs = state.rttDcMs = null;
  const ch = pc.createDataChannel("whepcast", { ordered: true });
  state.dcState = "connecting";

  function ping() {
    const id = ++pingId;
    const t = wallNow();
    pings.set(id, t);
    if (pings.size > 50) pings.delete(pings.keys().next().value);
    ch.send(JSON.stringify({ type: "ping", id, t }));
  }

  ch.onopen = () => {
    if (!live) return;
    state.dcState = "open";
    const openedAt = performance.now();
    // A few quick pings first: the clock offset is only as good as the least delayed round
    // trip, and the first ones, sent while the video starts, are often delayed one way.
    let quick = 5;
    const tick = () => {
      if (ch.readyState !== "open") return;
      ping();
      const next = quick-- > 0 ? 100 : performance.now() - openedAt < 5000 ? 1000 : 5000;
      pingTimer = setTimeout(tick, next);
    };
    tick();
  };
  ch.onclose = () => {
    if (!live) return;
    state.dcState = "closed";
    on.closed?.();
  };
  ch.onmessage = (ev) => {
    if (!live || typeof ev.data !== "string") return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    onMessage(msg);
  };

  function onMessage(msg) {
    switch (msg.type) {
      case "frame":
        captured.set(msg.rtp >>> 0, msg.captured_ms);
        if (captured.size > 300) captured.delete(captured.keys().next().value);
        break;
      case "pong": {
        const sent = pings.get(msg.id);
        if (sent === undefined || typeof msg.server_ms !== "number") break;
        pings.delete(msg.id);
        const rtt = wallNow() - sent;
        state.rttDcMs = Math.round(rtt * 10) / 10;
        // NTP-style: the server read its clock about half a round trip after we sent. The
        // sample with the lowest round trip of the last 20 is the least disturbed by queueing.
        clockSamples.push({ rtt, offset: msg.server_ms - (sent + rtt / 2) });
        if (clockSamples.length > 20) clockSamples.shift();
        const best = clockSamples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
        state.clockOffsetMs = Math.round(best.offset * 10) / 10;
        // The offset is uncertain by up to half the best round trip.
        state.clockRttMs = Math.round(best.rtt * 10) / 10;
        updateLatency();
        break;
      }
      case "hello":
        state.viewerName = msg.name || null;
        state.session = msg.session;
        if (typeof msg.viewers === "number") state.viewers = msg.viewers;
        on.hello?.(msg);
        break;
      case "link":
        // The server's view of this viewer: its rendition, the choices, the link estimate.
        state.link = {
          rendition: msg.rendition ?? null, index: msg.index ?? 0,
          renditions: Array.isArray(msg.renditions) ? msg.renditions.map(String) : [],
          estimator: msg.estimator ?? null, estimateBps: Number(msg.estimate_bps) || 0,
          arrivingBps: Number(msg.arriving_bps) || 0, provenBps: Number(msg.proven_bps) || 0,
          loss: Number(msg.loss) || 0, rttMs: typeof msg.rtt_ms === "number" ? msg.rtt_ms : null,
          switches: Number(msg.switches) || 0,
        };
        on.link?.(state.link);
        break;
      case "viewers":
        state.viewers = msg.count;
        on.viewers?.(msg.count);
        break;
      case "chat":
        on.chat?.(String(msg.from ?? "?"), String(msg.text ?? ""));
        break;
      case "error":
        state.chatErrors.push(String(msg.text ?? ""));
        on.error?.(String(msg.text ?? "error"));
        break;
    }
  }

  // Samples are kept on this page's clock (shown minus captured, uncorrected) and the best
  // clock offset is applied when reporting, so a better offset found later corrects them all.
  function updateLatency() {
    const xs = state.dcLatencySamples;
    if (state.clockOffsetMs === null || xs.length === 0) return;
    const recent = xs.slice(-30).sort((a, b) => a - b);
    const latency = recent[recent.length >> 1] + state.clockOffsetMs;
    state.dcLatencyMs = latency > -1000 && latency < 60000 ? Math.round(latency) : null;
  }

  return {
    /**
     * A frame was presented (requestVideoFrameCallback's `now` and metadata): its latency is
     * when it was shown (this page's clock, moved to the server's by the offset) minus when
     * the server captured it.
     */
    frame(meta, now) {
      if (!live || !meta || meta.rtpTimestamp === undefined) return;
      const cap = captured.get(meta.rtpTimestamp >>> 0);
      if (cap === undefined) return;
      const xs = state.dcLatencySamples;
      xs.push(Math.round((shownAt(meta, now) - cap) * 10) / 10);
      if (xs.length > 300) xs.shift();
      updateLatency();
    },
    /** Sends `obj` as JSON; false when the channel is not open. */
    send(obj) {
      if (!live || ch.readyState !== "open") return false;
      ch.send(JSON.stringify(obj));
      return true;
    },
    close() {
      live = false;
      clearTimeout(pingTimer);
      ch.onclose = ch.onmessage = ch.onopen = null;
      ch.close();
      state.dcState = "none";
    },
  };
}
