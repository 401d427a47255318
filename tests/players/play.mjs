// Play HLS and DASH URLs in Debian's Chromium with the real players: hls.js (MSE) and
// dash.js, loaded from node_modules into a blank page, so every playlist, init and media
// segment is fetched cross-origin, as a web player does (the edge's CORS must allow it).
//
//   node play.mjs hls|dash URL [--chromium /usr/bin/chromium] [--timeout-ms 60000]
//
// Prints one JSON object: {ok, currentTime, duration, ended, videoWidth, videoHeight,
// videoFrames, audioBytes (decoded), audioTracks, errors}. The video plays muted at up to 8x until it ends.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const [kind, url, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const at = rest.indexOf(name);
  return at >= 0 ? rest[at + 1] : fallback;
};
const executablePath = option("--chromium", "/usr/bin/chromium");
const timeoutMs = Number(option("--timeout-ms", "60000"));
const scripts = {
  hls: require.resolve("hls.js/dist/hls.min.js"),
  dash: require.resolve("dashjs/dist/dash.all.min.js"),
};
if (!scripts[kind] || !url) {
  console.error("usage: node play.mjs hls|dash URL");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
  await page.setContent('<video id="v" muted playsinline></video>');
  await page.addScriptTag({ path: scripts[kind] });
  const result = await page.evaluate(
    async ({ kind, url, timeoutMs }) => {
      const video = document.getElementById("v");
      const errors = [];
      if (kind === "hls") {
        if (!window.Hls.isSupported()) return { ok: false, errors: ["hls.js: no MSE"] };
        const hls = new window.Hls();
        hls.on(window.Hls.Events.ERROR, (_, d) => {
          if (d.fatal) errors.push(`hls.js: ${d.type} ${d.details}`);
        });
        window.__tracks = () => hls.audioTracks.length;
        hls.loadSource(url);
        hls.attachMedia(video);
      } else {
        const player = window.dashjs.MediaPlayer().create();
        player.on("error", (e) => errors.push(`dash.js: ${JSON.stringify(e.error || e)}`));
        player.initialize(video, url, true);
        window.__tracks = () => player.getTracksFor("audio").length;
      }
      video.muted = true;
      video.playbackRate = 8;
      const deadline = performance.now() + timeoutMs;
      // No play() before the player has attached its MediaSource: a play() that a new
      // load interrupts can leave Chromium's element stuck at HAVE_METADATA. dash.js
      // starts playing by itself (autoPlay); hls.js once data is there.
      while (!video.ended && errors.length === 0 && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        if (video.paused && !video.ended && video.readyState >= 2) {
          video.playbackRate = 8;
          video.play().catch(() => {});
        }
      }
      return {
        ok: video.ended && errors.length === 0,
        currentTime: video.currentTime,
        duration: video.duration,
        ended: video.ended,
        videoWidth: video.videoWidth,
        videoHeight: video.videoHeight,
        videoFrames: video.getVideoPlaybackQuality().totalVideoFrames,
        audioBytes: video.webkitAudioDecodedByteCount,
        audioTracks: window.__tracks(),
        readyState: video.readyState,
        networkState: video.networkState,
        paused: video.paused,
        buffered: Array.from({ length: video.buffered.length }, (_, i) => [
          video.buffered.start(i),
          video.buffered.end(i),
        ]),
        errors,
      };
    },
    { kind, url, timeoutMs },
  );
  result.errors = [...errors, ...result.errors];
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
