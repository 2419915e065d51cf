// jiangtang's pages: what a little script adds to pages that work without it.
// - lecture pages: the countdown ticks;
// - the door's check-in page: the camera scans ticket QR codes (BarcodeDetector where the
//   browser has it) and typed codes are checked without a page load; the verdict shows at once;
// - the console's lecture page: the live dashboard and the questions, polled; sub-venues
//   asking back: accept a raised hand, watch and hear the site (WHEP), broadcast it, end it.
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
    var lastQuestions = null;
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
          // An encoder whose network dropped, long before its connection times out.
          var silent = s.input && s.input.silent_ms;
          if (silent >= 1000) row(w("silent"), Math.round(silent / 1000) + " s");
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
          lastQuestions = j.questions || [];
          renderQuestions();
        })
        .catch(function () { /* next time */ });
    };
    // The questions, a raised hand with its "accept" (or how its ask stands); drawn again
    // only when something changed, so a button is not replaced under the pointer.
    var drawnQuestions = "";
    var renderQuestions = function () {
      if (!list || !lastQuestions) return;
      var byQuestion = asks ? asks.byQuestion() : {};
      var key = JSON.stringify([lastQuestions, byQuestion]);
      if (key === drawnQuestions) return;
      drawnQuestions = key;
      list.textContent = "";
      if (!lastQuestions.length) {
        var li0 = document.createElement("li");
        text(li0, w("none"));
        list.appendChild(li0);
      }
      lastQuestions.forEach(function (q) {
        var li = document.createElement("li");
        var span = document.createElement("span");
        text(span, (q.kind === "hand" ? "✋ " : "") + (q.from ? q.from + ": " : "") + (q.text || "") + " (" + q.at + ")");
        li.appendChild(span);
        if (q.kind === "hand" && asks) {
          var st = byQuestion[q.id];
          if (st && st !== "ended") {
            var b0 = document.createElement("span");
            b0.className = "badge ask-" + st;
            text(b0, asks.word(st));
            li.appendChild(document.createTextNode(" "));
            li.appendChild(b0);
          } else {
            var b = document.createElement("button");
            b.type = "button";
            b.className = "ask-accept secondary";
            b.setAttribute("data-question", String(q.id));
            text(b, asks.word("accept"));
            b.addEventListener("click", function () {
              b.disabled = true;
              asks.accept(q.id).then(function () { b.disabled = false; });
            });
            li.appendChild(document.createTextNode(" "));
            li.appendChild(b);
          }
        }
        list.appendChild(li);
      });
    };
    var asks = document.querySelector(".asks[data-asks]") ? askBack(document.querySelector(".asks[data-asks]"), renderQuestions) : null;
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
    if (asks) {
      asks.refresh();
      window.setInterval(asks.refresh, 2000);
    }
  }

  // ---- console: sub-venues asking back ---------------------------------------------------
  // The lecture's asks (polled): each connected site's picture and sound play here over
  // WHEP (muted until the operator unmutes: a page may not start sound by itself), with
  // "broadcast", "stop broadcast" and "end". Everything from the relay is set as text.
  function askBack(box, changed) {
    var listEl = box.querySelector("ul.ask-list");
    var post = box.getAttribute("data-ask-post");
    var items = {};
    var current = { asks: [], on_air: null };
    var word = function (k) { return box.getAttribute("data-t-" + k.replace(/_/g, "-")) || k; };
    var noop = function () {};

    var send = function (url, body) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: body ? JSON.stringify(body) : "{}",
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          if (!r.ok) throw new Error(j.error || "HTTP " + r.status);
          return j;
        });
      });
    };
    var status = document.createElement("p");
    status.className = "status bad ask-status";
    box.insertBefore(status, listEl);
    var failed = function (e) {
      text(status, String(e.message || e));
    };

    // A path on this relay (the preview's address and its token come from the relay).
    var samePath = function (p) { return typeof p === "string" && /^\/(?!\/)/.test(p); };

    var stopPreview = function (it) {
      var pc = it.pc;
      it.pc = null;
      if (pc) pc.close();
      if (it.location) {
        fetch(it.location, { method: "DELETE", keepalive: true }).catch(noop);
        it.location = null;
      }
      it.video.srcObject = null;
    };

    var startPreview = function (it, a) {
      if (!samePath(a.preview) || typeof RTCPeerConnection !== "function") return;
      var pc = new RTCPeerConnection();
      it.pc = pc;
      it.location = null;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      var media = new MediaStream();
      pc.ontrack = function (e) {
        media.addTrack(e.track);
        it.video.srcObject = media;
        it.video.play().catch(noop);
      };
      var headers = { "Content-Type": "application/sdp" };
      if (a.preview_token) headers.Authorization = "Bearer " + a.preview_token;
      pc.createOffer()
        .then(function (o) { return pc.setLocalDescription(o); })
        .then(function () {
          return fetch(a.preview, { method: "POST", headers: headers, body: pc.localDescription.sdp });
        })
        .then(function (r) {
          return r.text().then(function (body) {
            if (r.status !== 201) {
              var m = body;
              try { m = JSON.parse(body).error || body; } catch (e) { /* not JSON */ }
              throw new Error("WHEP " + r.status + ": " + m);
            }
            var loc = r.headers.get("Location");
            loc = loc ? new URL(loc, window.location.href).href : null;
            if (it.pc !== pc) {
              if (loc) fetch(loc, { method: "DELETE", keepalive: true }).catch(noop);
              return null;
            }
            it.location = loc;
            return pc.setRemoteDescription({ type: "answer", sdp: body });
          });
        })
        .catch(function (e) {
          if (it.pc !== pc) return;
          stopPreview(it);
          it.retryAt = Date.now() + 3000;
          text(it.error, String(e.message || e));
        });
    };

    var act = function (it, action) {
      var buttons = it.li.querySelectorAll("button");
      for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
      text(it.error, "");
      return send(post + "/" + encodeURIComponent(it.id) + "/" + action)
        .catch(function (e) { text(it.error, String(e.message || e)); })
        .then(function () {
          for (var i = 0; i < buttons.length; i++) buttons[i].disabled = false;
          refresh();
        });
    };

    var button = function (parent, cls, label, onclick) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = cls;
      text(b, label);
      b.addEventListener("click", onclick);
      parent.appendChild(b);
      return b;
    };

    var make = function (a) {
      var it = { id: a.id, pc: null, location: null, retryAt: 0 };
      var li = document.createElement("li");
      li.className = "ask";
      li.setAttribute("data-ask-id", String(a.id));
      var head = document.createElement("p");
      it.from = document.createElement("strong");
      it.state = document.createElement("span");
      it.state.className = "badge";
      head.appendChild(it.from);
      head.appendChild(document.createTextNode(" "));
      head.appendChild(it.state);
      li.appendChild(head);
      var v = document.createElement("video");
      v.className = "ask-preview";
      v.autoplay = true;
      v.muted = true;
      v.playsInline = true;
      v.setAttribute("playsinline", "");
      v.setAttribute("data-ask-id", String(a.id));
      li.appendChild(v);
      it.video = v;
      var row = document.createElement("p");
      row.className = "ask-actions";
      it.unmute = button(row, "ask-unmute secondary", word("unmute"), function () {
        v.muted = !v.muted;
        if (!v.muted) v.play().catch(noop);
        text(it.unmute, v.muted ? word("unmute") : word("mute"));
      });
      it.broadcast = button(row, "ask-broadcast", word("broadcast"), function () { act(it, "broadcast"); });
      it.offair = button(row, "ask-offair secondary", word("off_air"), function () { act(it, "off_air"); });
      it.end = button(row, "ask-end danger", word("end"), function () { act(it, "end"); });
      li.appendChild(row);
      it.error = document.createElement("p");
      it.error.className = "status bad ask-error";
      li.appendChild(it.error);
      it.li = li;
      listEl.appendChild(li);
      items[a.id] = it;
      return it;
    };

    var update = function (it, a) {
      it.li.className = "ask ask-" + a.state;
      text(it.from, a.from || "#" + a.question);
      text(it.state, word(a.state) + (a.since ? " · " + String(a.since).slice(11, 19) : ""));
      var live = a.state === "connected" || a.state === "on_air";
      it.video.hidden = !live;
      it.unmute.hidden = !live;
      it.broadcast.hidden = a.state !== "connected";
      it.offair.hidden = a.state !== "on_air";
      it.end.hidden = a.state === "ended";
      var pcState = it.pc ? it.pc.connectionState : "";
      if (live && (!it.pc || pcState === "failed" || pcState === "closed") && Date.now() >= it.retryAt) {
        if (it.pc) stopPreview(it);
        startPreview(it, a);
      } else if (!live && it.pc) {
        stopPreview(it);
      }
    };

    var render = function (j) {
      current = j;
      var seen = {};
      (j.asks || []).forEach(function (a) {
        seen[a.id] = true;
        update(items[a.id] || make(a), a);
      });
      Object.keys(items).forEach(function (id) {
        if (seen[id]) return;
        stopPreview(items[id]);
        listEl.removeChild(items[id].li);
        delete items[id];
      });
      if (!(j.asks || []).length) {
        if (!listEl.querySelector("li.empty")) {
          var li0 = document.createElement("li");
          li0.className = "empty";
          text(li0, word("none"));
          listEl.appendChild(li0);
        }
      } else {
        var empty = listEl.querySelector("li.empty");
        if (empty) listEl.removeChild(empty);
      }
      changed();
    };

    var refresh = function () {
      return fetch(box.getAttribute("data-asks"), { cache: "no-store", credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) { if (j) render(j); })
        .catch(noop);
    };

    window.addEventListener("pagehide", function () {
      Object.keys(items).forEach(function (id) { stopPreview(items[id]); });
    });

    return {
      refresh: refresh,
      word: word,
      // How each raised hand's ask stands (question id → state).
      byQuestion: function () {
        var m = {};
        (current.asks || []).forEach(function (a) {
          if (m[a.question] === undefined || m[a.question] === "ended") m[a.question] = a.state;
        });
        return m;
      },
      accept: function (question) {
        return send(post, { question: question })
          .then(function () {
            text(status, "");
            return refresh();
          })
          .catch(failed);
      },
    };
  }
})();
