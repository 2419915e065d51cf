// jiangtang's pages: what a little script adds to pages that work without it.
// - lecture pages: the countdown ticks;
// - the door's check-in page: the camera scans ticket QR codes (BarcodeDetector where the
//   browser has it) and typed codes are checked without a page load; the verdict shows at once;
// - the console's lecture page: the live dashboard and the questions, polled.
// Plain ES2017, no dependencies: it must run in WeChat's in-app browser and old phones.
(function () {
  "use strict";

  function text(el, s) {
    el.textContent = s;
  }

  // ---- countdown ------------------------------------------------------------------------
  var cd = document.querySelector(".countdown[data-start]");
  if (cd) {
    var start = Date.parse(cd.getAttribute("data-start"));
    var tick = function () {
      var left = Math.max(0, Math.round((start - Date.now()) / 1000));
      var d = Math.floor(left / 86400);
      var h = Math.floor((left % 86400) / 3600);
      var m = Math.floor((left % 3600) / 60);
      var s = left % 60;
      var two = function (n) { return (n < 10 ? "0" : "") + n; };
      var out = d > 0 ? d + " " + cd.getAttribute("data-d") + " " : "";
      out += two(h) + ":" + two(m) + ":" + two(s);
      text(cd, out);
      if (left === 0) {
        // Started: the page shows the player now.
        window.setTimeout(function () { window.location.reload(); }, 3000);
        return;
      }
      window.setTimeout(tick, 1000);
    };
    if (!isNaN(start)) tick();
  }

  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  // ---- check-in -------------------------------------------------------------------------
  var box = document.querySelector(".checkin[data-lecture]");
  if (box) {
    var lecture = box.getAttribute("data-lecture");
    var result = document.getElementById("result");
    var form = box.querySelector("form.code-form");
    var input = form.querySelector('input[name="code"]');
    var busy = false;
    var lastCode = "";
    var lastAt = 0;
    var show = function (outcome, name) {
      var words = box.getAttribute("data-r-" + outcome.replace(/_/g, "-")) || outcome;
      result.className = "result " + outcome;
      text(result, name ? words + " · " + name : words);
      box.setAttribute("data-last", outcome);
      if (navigator.vibrate) navigator.vibrate(outcome === "valid" ? 80 : [60, 60, 60]);
    };
    var check = function (code) {
      code = code.trim();
      if (!code || busy) return Promise.resolve();
      // The same QR held before the camera is checked once.
      if (code === lastCode && Date.now() - lastAt < 4000) return Promise.resolve();
      lastCode = code;
      lastAt = Date.now();
      busy = true;
      return fetch("/api/v1/lectures/" + lecture + "/checkins", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ code: code }),
      })
        .then(function (r) {
          return r.json().then(function (j) {
            if (!r.ok) throw new Error(j.error || String(r.status));
            show(j.result, j.name);
          });
        })
        .catch(function (e) {
          result.className = "result unknown";
          text(result, String(e.message || e));
        })
        .then(function () {
          busy = false;
        });
    };
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      check(input.value).then(function () {
        input.value = "";
        input.focus();
      });
    });
    var scanner = box.querySelector(".scanner");
    var video = scanner.querySelector("video");
    var scanButton = scanner.querySelector("button.scan");
    if ("BarcodeDetector" in window && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
      scanner.hidden = false;
      var detector = new window.BarcodeDetector({ formats: ["qr_code"] });
      var scanning = false;
      var loop = function () {
        if (!scanning) return;
        detector
          .detect(video)
          .then(function (codes) {
            if (codes.length) return check(codes[0].rawValue);
          })
          .catch(function () { /* a frame it could not read */ })
          .then(function () {
            window.setTimeout(loop, 250);
          });
      };
      scanButton.addEventListener("click", function () {
        navigator.mediaDevices
          .getUserMedia({ video: { facingMode: "environment" } })
          .then(function (stream) {
            video.srcObject = stream;
            return video.play();
          })
          .then(function () {
            scanning = true;
            scanButton.hidden = true;
            loop();
          })
          .catch(function () {
            scanner.hidden = true;
            result.className = "result";
            text(result, box.getAttribute("data-camera-unavailable"));
          });
      });
    }
  }

  // ---- console: live dashboard ---------------------------------------------------------
  var dash = document.querySelector(".dashboard[data-stream]");
  if (dash) {
    var stream = dash.getAttribute("data-stream");
    var stats = dash.querySelector(".stats");
    var state = dash.querySelector(".state");
    var list = document.querySelector("ul.questions");
    var w = function (k) { return dash.getAttribute("data-t-" + k) || k; };
    var row = function (k, v) {
      var dt = document.createElement("dt");
      text(dt, k);
      var dd = document.createElement("dd");
      text(dd, v);
      stats.appendChild(dt);
      stats.appendChild(dd);
    };
    var refresh = function () {
      // The state first (known for every lecture of the programme); the figures only
      // while something is published.
      fetch("/api/v1/streams/" + encodeURIComponent(stream) + "/state", { cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (st) {
          if (!st || !/^(live|reconnecting|starting|ended)$/.test(st.status)) return null;
          return fetch("/api/v1/streams/" + encodeURIComponent(stream), { cache: "no-store" }).then(function (r) {
            return r.ok ? r.json() : null;
          });
        })
        .then(function (s) {
          stats.textContent = "";
          if (!s || s.status === "scheduled" || s.status === "idle" || !s.tracks || !s.tracks.length) {
            text(state, w("not-live"));
            return;
          }
          text(state, s.status);
          (s.tracks || []).forEach(function (t) {
            var kbps = t.bitrate ? Math.round(t.bitrate / 1000) + " kbit/s" : "–";
            if (t.kind === "video") {
              row(w("bitrate") + " (video)", kbps + (t.width ? " · " + t.width + "×" + t.height : ""));
              row(w("fps"), t.fps ? String(t.fps) : "–");
            } else {
              var lv = t.level ? t.level.rms_db + " dB" : "–";
              row(w("levels") + " · " + (t.name || t.language), lv + " · " + kbps);
            }
          });
          var kf = s.input && s.input.keyframe_interval_s;
          row(w("keyframe"), kf ? kf.toFixed(1) + " s" : "–");
          var v = s.webrtc_viewers || {};
          var parts = Object.keys(v).map(function (k) { return "WebRTC " + k + ": " + v[k]; });
          parts.push("live channel: " + (s.live_channel || 0));
          row(w("viewers"), parts.join(" · "));
        })
        .catch(function () { /* next time */ });
      fetch(dash.getAttribute("data-questions"), { cache: "no-store", credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j || !list) return;
          list.textContent = "";
          var qs = j.questions || [];
          if (!qs.length) {
            var li0 = document.createElement("li");
            text(li0, w("none"));
            list.appendChild(li0);
          }
          qs.forEach(function (q) {
            var li = document.createElement("li");
            text(li, (q.kind === "hand" ? "✋ " : "") + (q.from ? q.from + ": " : "") + (q.text || "") + " (" + q.at + ")");
            list.appendChild(li);
          });
        })
        .catch(function () { /* next time */ });
    };
    var sites = document.querySelector("table.sites[data-sites]");
    var refreshSites = function () {
      if (!sites) return;
      fetch(sites.getAttribute("data-sites"), { cache: "no-store", credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          var body = sites.querySelector("tbody");
          body.textContent = "";
          (j.sites || []).forEach(function (x) {
            var tr = document.createElement("tr");
            tr.className = "site-" + x.status;
            var d = x.dialects || {};
            var link = x.link || {};
            var cells = [
              (x.name || x.code) + (x.town ? " · " + x.town : "") + (x.via ? " (" + x.via + ")" : ""),
              x.status + (x.status === "dropped" && x.last_seen ? " · " + x.last_seen.slice(11, 19) : ""),
              String(x.viewers || 0),
              Object.keys(d).map(function (k) { return k + " " + d[k]; }).join(", ") || (x.default_dialect || "–"),
              [link.kbps != null ? link.kbps + " kbit/s" : null,
               link.loss_pct != null ? link.loss_pct + " % loss" : null,
               link.rtt_ms != null ? link.rtt_ms + " ms" : null].filter(Boolean).join(" · ") || "–",
            ];
            cells.forEach(function (c) {
              var td = document.createElement("td");
              text(td, c);
              tr.appendChild(td);
            });
            body.appendChild(tr);
          });
        })
        .catch(function () { /* next time */ });
    };
    refresh();
    refreshSites();
    window.setInterval(refresh, 3000);
    window.setInterval(refreshSites, 3000);
  }
})();
