// Reads the test pattern's barcode (src/source/pattern.rs Barcode) from the video: 72 blocks
// = 24-bit frame number, 40-bit capture time in Unix ms, 8-bit checksum. The time it was shown
// minus the capture time is the glass-to-glass latency (exact when server and viewer share a
// clock, as on one machine).

/**
 * A reader for `video`; read() returns the capture time (Unix ms mod 2^40) or null, decode()
 * { frame, ms } (frame number mod 2^24, capture time) or null.
 */
export function barcodeReader(video) {
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const reader = {
    read() {
      const d = reader.decode();
      return d ? d.ms : null;
    },
    decode() {
      const w = video.videoWidth, h = video.videoHeight;
      const bw = Math.floor(w / 76) & ~1, bh = Math.max(Math.floor(h / 40), 4) & ~1;
      if (bw < 2 || h < 4 * bh) return null;
      const left = Math.floor((w - bw * 72) / 2) & ~1, top = (h - Math.floor(bh * 3 / 2)) & ~1;
      canvas.width = w; canvas.height = bh;
      ctx.drawImage(video, 0, top, w, bh, 0, 0, w, bh);
      const px = ctx.getImageData(0, 0, w, bh).data;
      const bytes = new Uint8Array(9);
      for (let i = 0; i < 72; i++) {
        const cx = left + i * bw + (bw >> 1), cy = bh >> 1;
        let sum = 0, n = 0;
        for (let y = Math.max(cy - 1, 0); y <= cy + 1; y++) {
          for (let x = cx - (bw >> 2); x <= cx + (bw >> 2); x++) {
            const o = (y * w + x) * 4;
            sum += 16 + 0.257 * px[o] + 0.504 * px[o + 1] + 0.098 * px[o + 2]; n++;
          }
        }
        if (sum / n > 125) bytes[i >> 3] |= 1 << (7 - (i & 7));
      }
      let check = 0xa5;
      for (let i = 0; i < 8; i++) check = (check + bytes[i]) & 0xff;
      if (check !== bytes[8]) return null;
      let ms = 0;
      for (let i = 3; i < 8; i++) ms = ms * 256 + bytes[i];
      return { frame: (bytes[0] << 16) | (bytes[1] << 8) | bytes[2], ms };
    },
  };
  return reader;
}
