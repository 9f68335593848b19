// The controls bar: play/pause, the stats panel (its button, or a tap on the picture),
// fullscreen of the whole player and picture-in-picture. Buttons a browser cannot honour
// stay hidden. (The streams button belongs to streams.js; the quality menu's place is kept.)

export function controls() {
  const player = document.getElementById("player");
  const video = document.getElementById("video");
  const stats = document.getElementById("overlay");

  // ---- play / pause (a browser that refused autoplay leaves the video paused: one tap) ----
  const play = document.getElementById("play");
  const showPlayState = () => {
    player.classList.toggle("paused", video.paused);
    const label = video.paused ? "play" : "pause";
    play.setAttribute("aria-label", label);
    play.title = label;
  };
  play.addEventListener("click", () => {
    if (video.paused) video.play().catch(() => {});
    else video.pause();
  });
  for (const ev of ["play", "pause", "playing", "emptied"]) video.addEventListener(ev, showPlayState);
  showPlayState();

  // ---- stats panel: shown unless folded away (remembered) ----
  const statsToggle = document.getElementById("stats-toggle");
  let statsOn = localStorage.getItem("whepcast-stats") !== "hidden";
  const showStats = () => {
    stats.hidden = !statsOn;
    statsToggle.setAttribute("aria-pressed", String(statsOn));
  };
  const toggleStats = () => {
    statsOn = !statsOn;
    localStorage.setItem("whepcast-stats", statsOn ? "shown" : "hidden");
    showStats();
  };
  statsToggle.addEventListener("click", toggleStats);
  video.addEventListener("click", toggleStats); // a tap on the picture
  showStats();

  // ---- fullscreen: the player (picture, stats, panels, controls), or on iPhone the video alone ----
  const fullscreen = document.getElementById("fullscreen");
  const fsEnabled = document.fullscreenEnabled || document.webkitFullscreenEnabled || false;
  // iPhone Safari has no element fullscreen at all (no document.fullscreenEnabled), only its
  // own fullscreen video player.
  const videoOnly = !("fullscreenEnabled" in document) && !("webkitFullscreenEnabled" in document)
    && typeof video.webkitEnterFullscreen === "function";
  fullscreen.hidden = !(fsEnabled || videoOnly);
  const fsElement = () => document.fullscreenElement || document.webkitFullscreenElement || null;
  const showFullscreen = () => {
    const on = fsElement() !== null;
    player.classList.toggle("fullscreen", on);
    const label = on ? "exit fullscreen" : "fullscreen";
    fullscreen.setAttribute("aria-label", label);
    fullscreen.title = label;
  };
  fullscreen.addEventListener("click", () => {
    if (fsElement()) {
      (document.exitFullscreen || document.webkitExitFullscreen).call(document)?.catch?.(() => {});
    } else if (fsEnabled) {
      (player.requestFullscreen || player.webkitRequestFullscreen).call(player)?.catch?.(() => {});
    } else if (videoOnly) {
      video.webkitEnterFullscreen();
    }
  });
  document.addEventListener("fullscreenchange", showFullscreen);
  document.addEventListener("webkitfullscreenchange", showFullscreen);
  showFullscreen();

  // ---- picture-in-picture: once the video has a picture ----
  const pip = document.getElementById("pip");
  pip.hidden = !(document.pictureInPictureEnabled && !video.disablePictureInPicture);
  const showPip = () => {
    const on = document.pictureInPictureElement === video;
    pip.setAttribute("aria-pressed", String(on));
    pip.disabled = video.readyState < 1;
    const label = on ? "leave picture in picture" : "picture in picture";
    pip.setAttribute("aria-label", label);
    pip.title = label;
  };
  pip.addEventListener("click", () => {
    if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    else video.requestPictureInPicture().catch(() => {});
  });
  for (const ev of ["loadedmetadata", "emptied", "enterpictureinpicture", "leavepictureinpicture"]) {
    video.addEventListener(ev, showPip);
  }
  showPip();
}
