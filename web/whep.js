// A WHEP client (RFC 9725 as WHEP follows it), with no DOM access: ask an endpoint for its ICE
// servers (OPTIONS, Link rel="ice-server"), POST an SDP offer without waiting for candidates,
// trickle them with PATCH (RFC 8840 fragments, If-Match), restart ICE with PATCH, end with
// DELETE. WHIP resources speak the same protocol, so a publish page can use WhepSession with a
// sendonly peer connection and a WHIP endpoint as is.

/** A request answered with an unexpected status; `status` and `body` say what the server said. */
export class HttpStatusError extends Error {
  constructor(method, url, status, body) {
    super(`server said ${status}: ${String(body).trim()}`);
    this.method = method;
    this.url = url;
    this.status = status;
    this.body = body;
  }
}

// ---- ICE servers from Link headers (RFC 9725 section 4.6, RFC 8288) ----

/**
 * Parses a Link header value (several links comma-joined, quoted parameters) into
 * [{ url, params: { rel, username, ... } }].
 */
export function parseLinks(value) {
  const links = [];
  if (!value) return links;
  const re = /\s*<([^>]*)>/y;
  let i = 0;
  while (i < value.length) {
    re.lastIndex = i;
    const lm = re.exec(value);
    if (!lm) { // not a link here: skip to the next comma outside quotes
      const next = value.indexOf(",", i);
      if (next < 0) break;
      i = next + 1;
      continue;
    }
    i = re.lastIndex;
    const link = { url: lm[1].trim(), params: {} };
    for (;;) {
      while (value[i] === " " || value[i] === "\t") i++;
      if (i >= value.length) break;
      if (value[i] === ",") { i++; break; }
      if (value[i] !== ";") { i++; continue; }
      i++;
      while (value[i] === " " || value[i] === "\t") i++;
      let key = "";
      while (i < value.length && !"=;, \t".includes(value[i])) key += value[i++];
      while (value[i] === " " || value[i] === "\t") i++;
      let val = "";
      if (value[i] === "=") {
        i++;
        while (value[i] === " " || value[i] === "\t") i++;
        if (value[i] === '"') {
          i++;
          while (i < value.length && value[i] !== '"') {
            if (value[i] === "\\" && i + 1 < value.length) i++;
            val += value[i++];
          }
          i++;
        } else {
          while (i < value.length && !";,".includes(value[i])) val += value[i++];
          val = val.trim();
        }
      }
      if (key) link.params[key.toLowerCase()] = val;
    }
    links.push(link);
  }
  return links;
}

/** RTCIceServer entries from the links with rel="ice-server"; TURN entries need credentials. */
export function iceServersFrom(linkHeader) {
  const servers = [];
  for (const { url, params: p } of parseLinks(linkHeader)) {
    if (!(p.rel || "").toLowerCase().split(/\s+/).includes("ice-server")) continue;
    if (!/^(stuns?|turns?):/i.test(url)) continue;
    const s = { urls: url };
    if (p.username !== undefined) s.username = p.username;
    if (p.credential !== undefined) s.credential = p.credential;
    if (p["credential-type"] && p["credential-type"] !== "password") continue; // oauth: unsupported
    if (/^turns?:/i.test(url) && (s.username === undefined || s.credential === undefined)) continue;
    servers.push(s);
  }
  return servers;
}

/** The turn:/turns: URLs among RTCIceServer entries. */
export const turnUrls = (servers) => servers.flatMap((s) => [].concat(s.urls)).filter((u) => /^turns?:/i.test(u));

/** The ICE servers an endpoint announces to OPTIONS; throws when it does not answer 2xx. */
export async function askIceServers(endpoint, headers = {}) {
  const res = await fetch(endpoint, { method: "OPTIONS", headers, cache: "no-store" });
  if (!res.ok) throw new Error("OPTIONS " + endpoint + " said " + res.status);
  return iceServersFrom(res.headers.get("Link"));
}

// ---- SDP fragments (RFC 8840) ----

const attr = (sdp, name) => (sdp.match(new RegExp(`^a=${name}:(.*?)\\r?$`, "m")) || [])[1];

/** The m= line (port 9) and mid of each media section of `sdp`. */
export function mediaSections(sdp) {
  return sdp.split(/\r?\n(?=m=)/).slice(1).map((sec) => ({
    mline: sec.split(/\r?\n/)[0].replace(/^(m=\S+ )\d+/, "$19"),
    mid: (sec.match(/^a=mid:(.*?)\r?$/m) || [])[1],
  }));
}

/**
 * The trickle fragment for `candidates` (RTCIceCandidate or { candidate, sdpMid,
 * sdpMLineIndex }) of the offer `localSdp`: its credentials, then per media section its
 * candidates, and end-of-candidates when `ended`.
 */
export function candidateFragment(localSdp, candidates, ended) {
  const sections = mediaSections(localSdp);
  const byMid = new Map();
  for (const c of candidates) {
    const mid = c.sdpMid !== null && c.sdpMid !== undefined ? c.sdpMid : sections[c.sdpMLineIndex || 0]?.mid;
    if (!byMid.has(mid)) byMid.set(mid, []);
    byMid.get(mid).push(c.candidate);
  }
  if (!byMid.size && sections.length) byMid.set(sections[0].mid, []);
  let frag = `a=ice-ufrag:${attr(localSdp, "ice-ufrag")}\r\na=ice-pwd:${attr(localSdp, "ice-pwd")}\r\n`;
  for (const [mid, lines] of byMid) {
    const sec = sections.find((s) => s.mid === mid) || sections[0];
    frag += `${sec.mline}\r\na=mid:${mid}\r\n`;
    for (const l of lines) frag += "a=" + l.replace(/^a=/, "") + "\r\n";
    if (ended) frag += "a=end-of-candidates\r\n";
  }
  return frag;
}

/**
 * `remoteSdp` with the ICE credentials and candidates of `fragment` (the server's answer to an
 * ICE restart) in place of its own: every media section gets the new ufrag/pwd, and the
 * fragment's candidates (and end-of-candidates) at its end.
 */
export function applyRestartFragment(remoteSdp, fragment) {
  const ufrag = attr(fragment, "ice-ufrag"), pwd = attr(fragment, "ice-pwd");
  if (!ufrag || !pwd) throw new Error("the ICE restart answer has no ice-ufrag/ice-pwd: " + fragment.trim());
  const candidates = fragment.split(/\r?\n/).filter((l) => /^a=(candidate:|end-of-candidates)/.test(l));
  const [head, ...media] = remoteSdp.split(/\r?\n(?=m=)/);
  const fix = (part, isMedia) => {
    const lines = part.split(/\r?\n/).filter((l) => l !== "" && !/^a=(candidate:|end-of-candidates)/.test(l))
      .map((l) => l.replace(/^a=ice-ufrag:.*/, "a=ice-ufrag:" + ufrag).replace(/^a=ice-pwd:.*/, "a=ice-pwd:" + pwd));
    return (isMedia ? lines.concat(candidates) : lines).join("\r\n");
  };
  return [fix(head, false), ...media.map((m) => fix(m, true))].join("\r\n") + "\r\n";
}

// ---- a session ----

/**
 * One WHEP (or WHIP) session for the peer connection `pc`, whose transceivers and data
 * channels are added already. `start()` sends the offer and applies the answer; hand every
 * local candidate to `trickle()` (null once gathering ends); `restartIce()` restarts ICE on
 * the same session; `close()` ends it (DELETE).
 *
 * options.headers(): extra headers for every request (e.g. Authorization), asked each time.
 * options.on: callbacks, all optional: posted() just before the offer goes out,
 * answered(status) when the POST is answered, patched({ status, candidates, restart }) after
 * each PATCH (status is a number, or "error: ..." when the request failed).
 */
export class WhepSession {
  constructor(pc, endpoint, { headers = () => ({}), on = {} } = {}) {
    this.pc = pc;
    this.endpoint = endpoint;
    this.headers = headers;
    this.on = on;
    /** The session's URL (from Location), its ETag, and the ICE servers the answer announced. */
    this.url = null;
    this.etag = null;
    this.iceServers = [];
    this.closed = false;
    /** False once the server refused trickle (405/501): its loss, ICE still works. */
    this.trickles = true;
    this.pending = [];
    this.ended = false;
    this.endSent = false;
    this.timer = null;
    this.chain = Promise.resolve(); // PATCHes go one at a time, in order
  }

  /** Sends the offer and applies the answer. Resolves false when closed meanwhile. */
  async start() {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    // No need to wait for our candidates: the server's answer carries its own, and ours follow
    // by PATCH (until then the server learns us as peer-reflexive from our checks).
    this.on.posted?.();
    const res = await fetch(this.endpoint, {
      method: "POST", headers: { "Content-Type": "application/sdp", ...this.headers() }, body: pc.localDescription.sdp,
    });
    const body = await res.text();
    this.on.answered?.(res.status);
    if (res.status !== 201) throw new HttpStatusError("POST", this.endpoint, res.status, body);
    const location = res.headers.get("Location");
    if (!location) throw new Error("the server answered the offer without a Location header");
    const url = new URL(location, new URL(this.endpoint, globalThis.location?.href)).href;
    this.iceServers = iceServersFrom(res.headers.get("Link"));
    if (this.closed) { // closed while the offer was out: free the session it created
      this.#delete(url);
      return false;
    }
    this.url = url;
    this.etag = res.headers.get("ETag");
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    this.#flushSoon();
    return true;
  }

  /** A local candidate to send (batched: candidates close together go in one PATCH); null = gathering ended. */
  trickle(candidate) {
    if (candidate && candidate.candidate) this.pending.push(candidate);
    else if (!candidate) this.ended = true;
    this.#flushSoon();
  }

  /**
   * ICE restart on the same session: new local credentials in a PATCH (If-Match: the ETag,
   * or "*"), the server's new credentials and candidates from its 200 answer. Candidates of
   * the new generation follow by trickle. Throws (HttpStatusError) when the server refuses.
   */
  restartIce() {
    if (!this.url || this.closed) return Promise.reject(new Error("no session to restart"));
    clearTimeout(this.timer);
    this.timer = null;
    this.pending = [];
    this.ended = this.endSent = false;
    const run = this.chain.then(async () => {
      const pc = this.pc;
      pc.restartIce();
      await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      const local = pc.localDescription.sdp;
      const frag = `a=ice-ufrag:${attr(local, "ice-ufrag")}\r\na=ice-pwd:${attr(local, "ice-pwd")}\r\n` +
        mediaSections(local).slice(0, 1).map((s) => `${s.mline}\r\na=mid:${s.mid}\r\n`).join("");
      const res = await fetch(this.url, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": this.etag || "*", ...this.headers() },
        body: frag,
      });
      const body = await res.text();
      this.on.patched?.({ status: res.status, candidates: 0, restart: true });
      if (res.status !== 200) throw new HttpStatusError("PATCH", this.url, res.status, body);
      if (res.headers.get("ETag")) this.etag = res.headers.get("ETag");
      await pc.setRemoteDescription({ type: "answer", sdp: applyRestartFragment(pc.remoteDescription.sdp, body) });
    });
    this.chain = run.catch(() => {});
    return run.then(() => this.#flushSoon());
  }

  /** Ends the session (DELETE; it completes even while the page unloads). */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.url) this.#delete(this.url);
    this.url = null;
    this.etag = null;
  }

  #delete(url) {
    fetch(url, { method: "DELETE", headers: this.headers(), keepalive: true }).catch(() => {});
  }

  #flushSoon() {
    if (!this.url || this.closed || !this.trickles || this.timer) return;
    if (!this.pending.length && !(this.ended && !this.endSent)) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.chain = this.chain.then(() => this.#sendCandidates()).catch(() => {});
    }, 30);
  }

  async #sendCandidates() {
    if (this.closed || !this.url || !this.trickles) return;
    const cands = this.pending.splice(0);
    const ended = this.ended && !this.endSent;
    if (!cands.length && !ended) return;
    const headers = { "Content-Type": "application/trickle-ice-sdpfrag", ...this.headers() };
    if (this.etag) headers["If-Match"] = this.etag;
    let res;
    try {
      res = await fetch(this.url, { method: "PATCH", headers, body: candidateFragment(this.pc.localDescription.sdp, cands, ended) });
    } catch (e) {
      if (!this.closed) this.on.patched?.({ status: "error: " + (e.message || e), candidates: 0, restart: false });
      return;
    }
    if (this.closed) return;
    if (res.ok) {
      if (ended) this.endSent = true;
      if (res.headers.get("ETag")) this.etag = res.headers.get("ETag");
    } else if (res.status === 405 || res.status === 501) {
      this.trickles = false;
    }
    this.on.patched?.({ status: res.status, candidates: res.ok ? cands.length : 0, restart: false });
    if (this.pending.length || (this.ended && !this.endSent && res.ok)) this.#flushSoon();
  }
}
