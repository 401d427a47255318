// Play a MediaMill asset in Debian's Chromium through a playback session, with the
// beacon script the API serves (GET /v0/player/beacon.js) reporting what plays.
//
//   node beacon.mjs hls|dash API_BASE API_KEY ASSET_ID --page-port PORT
//                   [--chromium /usr/bin/chromium] [--timeout-ms 60000] [--rate 2]
//
// The page is served by this script at http://127.0.0.1:PORT, another origin than the
// API's, so every call to the API is cross-origin with credentials, as from a
// customer's site (on loopback: Chromium's Local Network Access lets no public page
// reach the loopback addresses the API and the edge listen on in the tests). The player
// plays to the end at --rate, then the page is left (pagehide: the beacon ends the
// session with navigator.sendBeacon). Prints one JSON object: {ok, sessionId,
// currentTime, ended, errors, beaconErrors}.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import http from "node:http";

const require = createRequire(import.meta.url);
const [kind, apiBase, apiKey, assetId, ...rest] = process.argv.slice(2);
const option = (name, fallback) => {
  const at = rest.indexOf(name);
  return at >= 0 ? rest[at + 1] : fallback;
};
const pagePort = Number(option("--page-port", "0"));
const executablePath = option("--chromium", "/usr/bin/chromium");
const timeoutMs = Number(option("--timeout-ms", "60000"));
const rate = Number(option("--rate", "2"));
const scripts = {
  hls: require.resolve("hls.js/dist/hls.min.js"),
  dash: require.resolve("dashjs/dist/dash.all.min.js"),
};
if (!(kind in scripts) || !apiBase || !apiKey || !assetId || !pagePort) {
  console.error("usage: node beacon.mjs hls|dash API_BASE API_KEY ASSET_ID --page-port PORT");
  process.exit(2);
}
const pageHtml =
  '<!doctype html><video id="v" muted playsinline></video>' +
  `<script src="${apiBase}/v0/player/beacon.js"></script>`;
const server = http.createServer((_, res) => {
  res.writeHead(200, { "Content-Type": "text/html" });
  res.end(pageHtml);
});
await new Promise((resolve) => server.listen(pagePort, "127.0.0.1", resolve));

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  await page.goto(`http://127.0.0.1:${pagePort}/watch`);
  await page.addScriptTag({ path: scripts[kind] });
  const result = await page.evaluate(
    async ({ kind, apiBase, apiKey, assetId, timeoutMs, rate }) => {
      const video = document.getElementById("v");
      const errors = [];
      const beaconErrors = [];
      if (!window.MediaMillBeacon) return { ok: false, errors: ["no MediaMillBeacon"] };
      let session;
      try {
        session = await window.MediaMillBeacon.createSession({
          apiBase, apiKey, assetId, deviceId: `browser-${kind}`,
        });
      } catch (e) {
        return { ok: false, errors: [`createSession: ${e.message}`] };
      }
      const options = {
        apiBase, apiKey, session, video, autoplay: true, onError: (b) => beaconErrors.push(b),
      };
      let load;
      if (kind === "hls") {
        const hls = new window.Hls();
        hls.on(window.Hls.Events.ERROR, (_, d) => {
          if (d.fatal) errors.push(`hls.js: ${d.type} ${d.details}`);
        });
        options.hls = hls;
        video.autoplay = true;
        load = () => {
          hls.loadSource(session.hlsUrl);
          hls.attachMedia(video);
        };
      } else {
        const player = window.dashjs.MediaPlayer().create();
        player.on("error", (e) => errors.push(`dash.js: ${JSON.stringify(e.error || e)}`));
        options.dash = player;
        load = () => player.initialize(video, session.dashUrl, true);
      }
      session.firstHlsUrl = session.hlsUrl;
      session.firstDashUrl = session.dashUrl;
      window.__beacon = window.MediaMillBeacon.attach(options); // before the source loads
      load();
      video.muted = true;
      const deadline = performance.now() + timeoutMs;
      while (!video.ended && errors.length === 0 && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        if (video.paused && !video.ended && video.readyState >= 2) {
          video.playbackRate = rate;
          video.play().catch(() => {});
        } else if (video.playbackRate !== rate) {
          video.playbackRate = rate;
        }
      }
      await new Promise((r) => setTimeout(r, 500)); // the last batch
      const source = kind === "hls" ? options.hls.url : options.dash.getSource();
      return {
        ok: video.ended && errors.length === 0,
        sessionId: session.sessionId,
        refreshes: window.__beacon.refreshes,
        firstUrl: kind === "hls" ? session.firstHlsUrl : session.firstDashUrl,
        source,
        currentTime: video.currentTime,
        ended: video.ended,
        errors,
        beaconErrors,
      };
    },
    { kind, apiBase, apiKey, assetId, timeoutMs, rate },
  );
  await page.goto("about:blank"); // pagehide: the beacon ends the session
  await new Promise((r) => setTimeout(r, 500));
  result.errors = [...(result.errors || []), ...errors];
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
  server.close();
}
