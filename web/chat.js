// The chat panel: shown while the server's data channel is up; lines are text only, never
// markup. Open or folded (remembered in localStorage).

/**
 * Wires the panel (#chat, #chat-toggle, #chat-body, #chat-log, #chat-input) to `state`
 * (viewerName, viewers, chat). `send(text)` sends a line and returns false when it could not.
 * Returns { show(on), update(), line(from, text, cls) }.
 */
export function chatPanel(state, send) {
  const panel = document.getElementById("chat");
  const toggle = document.getElementById("chat-toggle");
  const body = document.getElementById("chat-body");
  const log = document.getElementById("chat-log");
  const input = document.getElementById("chat-input");
  let open = localStorage.getItem("whepcast-chat") !== "closed";

  function update() {
    body.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = (open ? "▾ " : "▸ ") + "chat" +
      (state.viewerName ? " as " + state.viewerName : "") +
      (state.viewers !== null ? ` — ${state.viewers} watching` : "");
  }

  function line(from, text, cls) {
    if (from !== null) {
      state.chat.push({ from, text });
      if (state.chat.length > 200) state.chat.shift();
    }
    const div = document.createElement("div");
    if (cls) div.className = cls;
    if (from !== null) {
      const who = document.createElement("span");
      who.className = "from";
      who.textContent = from + ": ";
      div.append(who);
    } else {
      div.append("⚠ ");
    }
    div.append(document.createTextNode(text));
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(div);
    while (log.childElementCount > 50) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  toggle.addEventListener("click", () => {
    open = !open;
    localStorage.setItem("whepcast-chat", open ? "open" : "closed");
    update();
    // Not on touch screens: focusing there would pop up the keyboard over the picture.
    if (open && matchMedia("(pointer: fine)").matches) input.focus();
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || ev.isComposing) return;
    ev.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    if (!send(text)) { line(null, "not connected, message not sent", "err"); return; }
    input.value = "";
  });

  return {
    show(on) { panel.hidden = !on; update(); },
    update,
    line,
  };
}
