// The quality menu: "auto" (the server follows this viewer's link) or one of the stream's
// renditions (still lowered by the server while the link cannot carry it). The renditions
// come from the data channel's `link` messages; a choice reconnects with ?rendition=.

/** Fills #quality-slot; `choose(value)` is called with "auto" or a rendition's name. */
export function qualityMenu(state, choose) {
  const slot = document.getElementById("quality-slot");
  const select = document.createElement("select");
  select.id = "quality";
  select.title = "quality";
  select.setAttribute("aria-label", "quality");
  slot.append(select);
  let shown = "";
  select.addEventListener("change", () => choose(select.value));
  return {
    /** Shows the stream's renditions (when there is a choice) with the current one marked. */
    update() {
      const link = state.link;
      const names = link?.renditions ?? [];
      slot.hidden = names.length < 2;
      const key = names.join(",") + "|" + (link?.rendition ?? "") + "|" + state.quality;
      if (key === shown) return;
      shown = key;
      select.replaceChildren();
      const auto = new Option(`auto${state.quality === "auto" && link?.rendition ? " · " + short(link.rendition) : ""}`, "auto");
      select.append(auto);
      for (const name of names) select.append(new Option(short(name), name.split("@")[0]));
      select.value = state.quality === "auto" ? "auto" : state.quality;
      if (select.value !== state.quality) select.value = "auto";
    },
  };
}

// "640x360@625k" -> "360p 625k"
function short(name) {
  const m = String(name).match(/^(\d+)x(\d+)@(\S+)$/);
  return m ? `${m[2]}p ${m[3]}` : String(name);
}
