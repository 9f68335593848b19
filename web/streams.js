// The stream picker: the streams on this server with live viewer counts (GET /api/streams),
// each a link to /view/NAME, in a panel the controls bar's streams button folds and unfolds.

/**
 * Keeps #streams filled every 2 s (and whenever `refresh()` of the returned object is called). `current` is the stream this page plays (null: the default,
 * the first). `headers()` gives the request headers (the token). The panel starts open on wide
 * screens and folded on narrow ones, where it would push the chat off the screen.
 */
export function streamPicker(state, current, headers) {
  const list = document.getElementById("streams");
  const toggle = document.getElementById("streams-toggle");
  let open = !matchMedia("(max-width: 700px)").matches;
  let count = 0;

  function update() {
    list.hidden = !open || count === 0;
    toggle.hidden = count === 0;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.querySelector(".count").textContent = String(count);
  }
  toggle.addEventListener("click", () => { open = !open; update(); });

  async function refresh() {
    const res = await fetch("/api/streams", { cache: "no-store", headers: headers() });
    if (!res.ok) return;
    const { streams } = await res.json();
    state.streams = streams.map((s) => ({ name: s.name, viewers: s.viewers, state: s.state }));
    list.replaceChildren(...streams.map((s, i) => {
      // The whole row is the link: a large target on a touch screen.
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = "/view/" + encodeURIComponent(s.name);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = s.name;
      const about = document.createElement("span");
      about.className = "about";
      about.textContent = ` — ${s.width}×${s.height}, ${s.viewers} watching`;
      a.append(name, about);
      if (s.state === "ended") {
        const e = document.createElement("span");
        e.className = "ended";
        e.textContent = " (ended)";
        a.append(e);
      }
      if (s.name === current || (current === null && i === 0)) {
        li.className = "current";
        a.setAttribute("aria-current", "page");
      }
      li.append(a);
      return li;
    }));
    count = streams.length;
    update();
  }

  const soon = () => refresh().catch(() => {});
  update();
  soon();
  setInterval(soon, 2000);
  return { refresh: soon };
}
