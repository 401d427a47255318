/*
 * MediaMill player beacon: heartbeats and player events for one playback session.
 *
 *   <script src="https://api.example.com/v0/player/beacon.js"></script>
 *   <script>
 *     const session = await MediaMillBeacon.createSession({
 *       apiBase: "https://api.example.com", apiKey: "<playback key>",
 *       assetId: "<sha256>", deviceId: "<a stable id of this device>",
 *     });
 *     const hls = new Hls();
 *     const beacon = MediaMillBeacon.attach({
 *       apiBase: "https://api.example.com", apiKey: "<playback key>",
 *       session, video, hls,            // or dash: a dash.js MediaPlayer; or neither
 *       autoplay: true,                 // startup counts from here, not from a click
 *     });
 *     hls.loadSource(session.hlsUrl); hls.attachMedia(video);
 *   </script>
 *
 * Attach before the source loads: `viewStart.startupMs` is the time from the play
 * request (attach() itself with `autoplay`, or `requestedAt`, a performance.now()
 * time) to the first frame playing.
 *
 * It sends a heartbeat every `session.heartbeatIntervalS`, the events of the media
 * element and of hls.js or dash.js (viewStart with startupMs, playing, pause, seek,
 * rebufferStart/End, renditionChange, error, ended) in batches numbered so that a
 * retried batch is stored once, switches the source to the fresh URLs a heartbeat
 * returns (keeping the position), sends what is queued when the page is hidden, and
 * on `pagehide` (not into the back-forward cache) ends the session with
 * navigator.sendBeacon (which cannot send headers: the publishable key rides in the
 * URL). Plain ES2017, no build step, no dependencies.
 */
(function (global) {
  "use strict";

  var MAX_BATCH = 100;
  var EVENT_FLUSH_MS = 2000;
  var SWAP_TIMEOUT_MS = 10000;

  function trimBase(apiBase) {
    return String(apiBase || "").replace(/\/+$/, "");
  }

  function headersFor(apiKey, extra) {
    var headers = { "X-API-Key": apiKey, "Content-Type": "application/json" };
    for (var name in extra || {}) headers[name] = extra[name];
    return headers;
  }

  /** POST /v0/assets/{assetId}/playback-sessions; resolves to the session JSON. */
  function createSession(options) {
    var extra = { "X-Device-Id": options.deviceId };
    if (options.trackingToken) extra["X-MediaMill-Tracking"] = options.trackingToken;
    return fetch(
      trimBase(options.apiBase) + "/v0/assets/" + encodeURIComponent(options.assetId) +
        "/playback-sessions",
      { method: "POST", credentials: "include", headers: headersFor(options.apiKey, extra) }
    ).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          var error = new Error((body && body.message) || "HTTP " + response.status);
          error.body = body;
          error.status = response.status;
          throw error;
        }
        return body;
      });
    });
  }

  function position(video) {
    var t = video.currentTime;
    return isFinite(t) && t >= 0 ? t : 0;
  }

  function Beacon(options) {
    this.apiBase = trimBase(options.apiBase);
    this.apiKey = options.apiKey;
    this.session = options.session;
    this.sessionId = options.session.sessionId;
    this.video = options.video;
    this.hls = options.hls || null;
    this.dash = options.dash || null;
    this.onRefreshedUrls = options.onRefreshedUrls || null;
    this.onError = options.onError || function () {};
    this.intervalMs = Math.max(1, Number(options.session.heartbeatIntervalS) || 30) * 1000;
    // Numbers unique to this attach (microseconds of the clock at its start): events and
    // heartbeats of a session attached again (a remount, a restored page) never reuse
    // a number, which the server would take for a retry and store once.
    this.seq = Date.now() * 1000;
    this.beatSeq = this.seq;  // heartbeats are numbered apart from events
    this.queue = [];
    this.sending = null;
    this.started = false;
    this.attachedAt = performance.now();
    var autoplay = options.autoplay !== undefined ? options.autoplay : this.video.autoplay;
    this.playRequestedAt = options.requestedAt !== undefined ? options.requestedAt
      : autoplay || !this.video.paused ? this.attachedAt : null;
    this.rebuffering = false;
    this.seeking = false;
    this.lastPosition = 0;
    this.swapping = false;
    this.refreshes = 0;
    this.stopped = false;
    this.listeners = [];
    this._listen();
    var self = this;
    this.timer = setInterval(function () { self.heartbeat(); }, this.intervalMs);
    this.eventTimer = setInterval(function () { self.flushEvents(); }, EVENT_FLUSH_MS);
  }

  Beacon.prototype._on = function (target, name, handler) {
    target.addEventListener(name, handler);
    this.listeners.push([target, name, handler]);
  };

  Beacon.prototype._listen = function () {
    var self = this;
    var video = this.video;
    this._on(video, "play", function () {
      if (self.playRequestedAt === null) self.playRequestedAt = performance.now();
    });
    this._on(video, "playing", function () {
      if (self.swapping) return;
      if (!self.started) {
        self.started = true;
        var from = self.playRequestedAt !== null ? self.playRequestedAt : self.attachedAt;
        var started = { startupMs: Math.round(performance.now() - from) };
        if (self.hls) started.protocol = "hls";
        else if (self.dash) started.protocol = "dash";
        self.event("viewStart", started);
        self.heartbeat();
      }
      if (self.rebuffering) {
        self.rebuffering = false;
        self.event("rebufferEnd", {});
      }
      self.event("playing", {});
    });
    this._on(video, "pause", function () {
      if (!self.swapping && !video.ended) self.event("pause", {});
    });
    this._on(video, "timeupdate", function () {
      if (!self.seeking && !self.swapping) self.lastPosition = position(video);
    });
    this._on(video, "seeking", function () {
      if (self.swapping) return;
      self.seeking = true;
      self.event("seek", { from: self.lastPosition, to: position(video) });
    });
    this._on(video, "seeked", function () {
      self.seeking = false;
      self.lastPosition = position(video);
    });
    this._on(video, "waiting", function () {
      if (self.started && !self.seeking && !self.swapping && !self.rebuffering) {
        self.rebuffering = true;
        self.event("rebufferStart", {});
      }
    });
    this._on(video, "ended", function () {
      self.event("ended", {});
      self.heartbeat();
      self.flushEvents();
    });
    this._on(video, "error", function () {
      var error = video.error;
      self.event("error", {
        code: "MEDIA_ERR_" + (error ? error.code : 0),
        message: (error && error.message) || "",
      });
    });
    if (this.hls && global.Hls) {
      var Hls = global.Hls;
      var onLevel = function (_, data) {
        var level = self.hls.levels && self.hls.levels[data.level];
        if (level) self.renditionChange(level.bitrate, level.height);
      };
      var onHlsError = function (_, data) {
        if (data.fatal) self.event("error", { code: "hls:" + data.type, message: String(data.details) });
      };
      this.hls.on(Hls.Events.LEVEL_SWITCHED, onLevel);
      this.hls.on(Hls.Events.ERROR, onHlsError);
      this.listeners.push([{ removeEventListener: function () {
        self.hls.off(Hls.Events.LEVEL_SWITCHED, onLevel);
        self.hls.off(Hls.Events.ERROR, onHlsError);
      } }, "", null]);
    }
    if (this.dash) {
      var onQuality = function (e) {
        var kind = e.mediaType;
        var hasVideo = self.dash.getBitrateInfoListFor("video").length > 0;
        if (kind !== (hasVideo ? "video" : "audio")) return;
        var info = self.dash.getBitrateInfoListFor(kind)[e.newQuality];
        if (info) self.renditionChange(info.bitrate, info.height || null);
      };
      var onDashError = function (e) {
        var error = e.error || {};
        self.event("error", { code: "dash:" + (error.code || "error"), message: String(error.message || "") });
      };
      this.dash.on("qualityChangeRendered", onQuality);
      this.dash.on("error", onDashError);
      this.listeners.push([{ removeEventListener: function () {
        self.dash.off("qualityChangeRendered", onQuality);
        self.dash.off("error", onDashError);
      } }, "", null]);
    }
    this._on(global, "pagehide", function (e) {
      // Into the back-forward cache: the page may come back and play on; send what is
      // queued, end nothing.
      if (e.persisted) self._send(false);
      else self.end(true);
    });
    this._on(document, "visibilitychange", function () {
      // Mobile browsers often kill a hidden page without a pagehide.
      if (document.visibilityState === "hidden") self._send(false);
    });
  };

  Beacon.prototype.renditionChange = function (bitrate, height) {
    var fields = { bitrate: Math.max(0, Math.round(bitrate || 0)) };
    if (height) fields.height = height;
    this.event("renditionChange", fields);
  };

  /** Queue one event; sent with the next batch (at once for the ones that matter). */
  Beacon.prototype.event = function (type, fields) {
    if (this.stopped) return;
    var event = { seq: this.seq++, type: type, timestamp: new Date().toISOString() };
    event.positionSeconds = position(this.video);
    for (var name in fields) event[name] = fields[name];
    this.queue.push(event);
    if (type === "viewStart" || type === "error" || type === "ended" || this.queue.length >= MAX_BATCH) {
      this.flushEvents();
    }
  };

  Beacon.prototype._post = function (path, body) {
    return fetch(this.apiBase + "/v0/playback-sessions/" + this.sessionId + path, {
      method: "POST",
      credentials: "include",
      keepalive: true,
      headers: headersFor(this.apiKey),
      body: JSON.stringify(body),
    });
  };

  /** Send the queued events; a failed batch stays queued and goes again, same seqs. */
  Beacon.prototype.flushEvents = function () {
    if (this.sending || this.queue.length === 0 || this.stopped) return this.sending;
    var self = this;
    var batch = this.queue.slice(0, MAX_BATCH);
    this.sending = this._post("/events", { events: batch })
      .then(function (response) {
        if (response.ok || (response.status >= 400 && response.status < 500 && response.status !== 429)) {
          // Taken, or refused for good (retrying the same batch cannot help).
          self.queue.splice(0, batch.length);
          if (!response.ok) response.json().then(self.onError, function () {});
        }
      })
      .catch(function () {})
      .then(function () {
        self.sending = null;
        if (self.queue.length >= MAX_BATCH) self.flushEvents();
      });
    return this.sending;
  };

  Beacon.prototype.heartbeat = function () {
    if (this.stopped) return Promise.resolve(null);
    var self = this;
    var body = {
      positionSeconds: position(this.video),
      isPaused: this.video.paused,
      seq: this.beatSeq++,
    };
    return this._post("/heartbeat", body)
      .then(function (response) {
        return response.json().then(function (answer) {
          if (!response.ok) {
            self.onError(answer);
            if (response.status === 409 || response.status === 404) self.stop();
            return null;
          }
          if (answer.refreshedUrls) self.refresh(answer.refreshedUrls);
          return answer;
        });
      })
      .catch(function () { return null; });
  };

  /** Play on from the fresh URLs, where the player is now. */
  Beacon.prototype.refresh = function (urls) {
    this.session.hlsUrl = urls.hlsUrl;
    this.session.dashUrl = urls.dashUrl;
    this.session.expiresAt = urls.expiresAt;
    this.session.tokenRefreshBefore = urls.tokenRefreshBefore;
    this.refreshes += 1;
    if (this.onRefreshedUrls) {
      this.onRefreshedUrls(urls);
      return;
    }
    var video = this.video;
    var at = position(video);
    var wasPlaying = !video.paused;
    var self = this;
    this.swapping = true;
    var finished = false;
    var done = function () {
      if (finished) return;
      finished = true;
      self.swapping = false;
      if (wasPlaying) video.play().catch(function () {});
    };
    // A new source that never becomes playable must not silence the events for good.
    setTimeout(done, SWAP_TIMEOUT_MS);
    if (this.dash) {
      this.dash.attachSource(urls.dashUrl, at);
      video.addEventListener("canplay", done, { once: true });
    } else if (this.hls) {
      // hls.js starts a new source at config.startPosition: here, not at 0.
      this.hls.config.startPosition = at;
      this.hls.once(global.Hls.Events.MANIFEST_PARSED, function () {
        video.addEventListener("canplay", done, { once: true });
      });
      this.hls.loadSource(urls.hlsUrl);
    } else {
      video.addEventListener("loadedmetadata", function () {
        video.addEventListener("seeked", done, { once: true });
        video.currentTime = at;
      }, { once: true });
      video.src = urls.hlsUrl;
    }
  };

  /** Send what is queued and the position with sendBeacon (it outlives the page),
   * ending the session when `end`. */
  Beacon.prototype._send = function (end) {
    if (this.stopped) return;
    var body = JSON.stringify({
      events: this.queue.slice(0, MAX_BATCH),
      positionSeconds: position(this.video),
      isPaused: this.video.paused,
      end: end,
    });
    var url = this.apiBase + "/v0/playback-sessions/" + this.sessionId +
      "/beacon?apiKey=" + encodeURIComponent(this.apiKey);
    var sent = navigator.sendBeacon
      ? navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))
      : false;
    if (!sent) {
      fetch(url, { method: "POST", body: body, keepalive: true, headers: { "Content-Type": "text/plain" } })
        .catch(function () {});
    }
    this.queue = this.queue.slice(MAX_BATCH);
  };

  /** End the session (the beacon does it on pagehide) and stop. */
  Beacon.prototype.end = function () {
    if (this.stopped) return;
    this._send(true);
    this.queue = [];
    this.stop();
  };

  /** Stop sending (without ending the session). */
  Beacon.prototype.stop = function () {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.eventTimer);
    this.listeners.forEach(function (l) { l[0].removeEventListener(l[1], l[2]); });
    this.listeners = [];
  };

  global.MediaMillBeacon = {
    createSession: createSession,
    attach: function (options) { return new Beacon(options); },
  };
})(typeof window !== "undefined" ? window : this);
