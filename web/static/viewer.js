// The image viewer. Plain JavaScript, no build step, no CDN.
//
// Grayscale frames arrive raw (DICOMweb frames, decoded to little endian by the box),
// so window/level is a lookup table applied here and dragging stays instant on
// 16-bit data. Colour and palette images arrive rendered (PNG) by the box, which
// already handles RGB, YBR and palette conversion. State the tests read is kept in
// data-* attributes of each viewport element.
(function () {
  "use strict";

  var root = document.getElementById("viewer");
  if (!root) { return; }
  var STUDY = root.dataset.study;
  var NATIVE = "1.2.840.10008.1.2.1";
  var PRESETS = { lung: [1500, -600], bone: [2000, 500], soft: [400, 40], brain: [80, 40] };

  // ---------------------------------------------------------------- data access
  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/dicom+json, application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status + " " + url); } return r.json(); });
  }

  function tagValue(meta, tag, index) {
    var el = meta[tag];
    if (!el || !el.Value || el.Value.length <= (index || 0)) { return undefined; }
    var v = el.Value[index || 0];
    return typeof v === "object" && v !== null && "Alphabetic" in v ? v.Alphabetic : v;
  }

  function num(meta, tag, index, fallback) {
    var v = tagValue(meta, tag, index);
    var n = v === undefined ? NaN : Number(v);
    return isNaN(n) ? fallback : n;
  }

  function imageInfo(meta) {
    var spacing = meta["00280030"] ? "00280030" : (meta["00181164"] ? "00181164" : null);
    var frameTime = num(meta, "00181063", 0, 0);
    var fps = frameTime > 0 ? 1000 / frameTime : num(meta, "00082144", 0, num(meta, "00180040", 0, 10));
    return {
      sop: tagValue(meta, "00080018"),
      rows: num(meta, "00280010", 0, 0), cols: num(meta, "00280011", 0, 0),
      bits: num(meta, "00280100", 0, 16), signed: num(meta, "00280103", 0, 0) === 1,
      samples: num(meta, "00280002", 0, 1), photometric: String(tagValue(meta, "00280004") || "MONOCHROME2"),
      slope: num(meta, "00281053", 0, 1), intercept: num(meta, "00281052", 0, 0),
      wc: num(meta, "00281050", 0, NaN), ww: num(meta, "00281051", 0, NaN),
      rowSpacing: spacing ? num(meta, spacing, 0, 0) : 0, colSpacing: spacing ? num(meta, spacing, 1, 0) : 0,
      frames: num(meta, "00280008", 0, 1), fps: fps > 0 && fps < 200 ? fps : 10,
      number: num(meta, "00200013", 0, 0), modality: String(tagValue(meta, "00080060") || "")
    };
  }

  function isGray(info) { return info.samples === 1 && info.photometric.indexOf("MONOCHROME") === 0; }

  // The body of the first part of a multipart/related response.
  function firstPart(buffer, contentType) {
    var m = /boundary="?([^";]+)"?/i.exec(contentType || "");
    var bytes = new Uint8Array(buffer);
    if (!m) { return bytes; }
    var start = indexOf(bytes, [13, 10, 13, 10], 0) + 4;
    var end = indexOf(bytes, strBytes("\r\n--" + m[1]), start);
    return bytes.slice(start, end < 0 ? bytes.length : end);
  }

  function strBytes(s) { var a = []; for (var i = 0; i < s.length; i++) { a.push(s.charCodeAt(i)); } return a; }

  function indexOf(bytes, pattern, from) {
    outer: for (var i = from; i <= bytes.length - pattern.length; i++) {
      for (var j = 0; j < pattern.length; j++) { if (bytes[i + j] !== pattern[j]) { continue outer; } }
      return i;
    }
    return -1;
  }

  function frameUrl(item) {
    return "/dicomweb/studies/" + item.study + "/series/" + item.series + "/instances/" + item.info.sop +
      "/frames/" + (item.frame + 1);
  }

  function loadFrame(item) {
    if (item.promise) { return item.promise; }
    if (isGray(item.info)) {
      item.promise = fetch(frameUrl(item), {
        credentials: "same-origin",
        headers: { Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=' + NATIVE }
      }).then(function (r) {
        if (!r.ok) { throw new Error("frame " + r.status); }
        var type = r.headers.get("Content-Type");
        return r.arrayBuffer().then(function (buf) { return grayPixels(item.info, firstPart(buf, type)); });
      });
    } else {
      item.promise = fetch(frameUrl(item) + "/rendered", { credentials: "same-origin", headers: { Accept: "image/png" } })
        .then(function (r) { if (!r.ok) { throw new Error("rendered " + r.status); } return r.blob(); })
        .then(function (blob) { return createImageBitmap(blob); })
        .then(function (bitmap) { return { bitmap: bitmap }; });
    }
    return item.promise;
  }

  function grayPixels(info, bytes) {
    var buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    var px;
    if (info.bits <= 8) { px = info.signed ? new Int8Array(buf) : new Uint8Array(buf); }
    else if (info.bits <= 16) { px = info.signed ? new Int16Array(buf, 0, buf.byteLength >> 1) : new Uint16Array(buf, 0, buf.byteLength >> 1); }
    else { px = info.signed ? new Int32Array(buf, 0, buf.byteLength >> 2) : new Uint32Array(buf, 0, buf.byteLength >> 2); }
    var min = Infinity, max = -Infinity;
    for (var i = 0; i < px.length; i++) { var v = px[i]; if (v < min) { min = v; } if (v > max) { max = v; } }
    return { px: px, min: min, max: max };
  }

  // ---------------------------------------------------------------- a viewport
  function Viewport(container, onActivate) {
    var el = document.createElement("div");
    el.className = "vport";
    el.tabIndex = 0;
    el.innerHTML = '<canvas></canvas><div class="ov tl"></div><div class="ov tr"></div>' +
      '<div class="ov bl"></div><div class="ov br" data-measure-label></div><div class="msg">Choose a series</div>';
    container.appendChild(el);
    this.el = el;
    this.canvas = el.querySelector("canvas");
    this.ov = { tl: el.querySelector(".tl"), tr: el.querySelector(".tr"), bl: el.querySelector(".bl"), br: el.querySelector(".br") };
    this.msg = el.querySelector(".msg");
    this.stack = [];
    this.index = 0;
    this.image = document.createElement("canvas");  // the current frame at native size, after the LUT
    this.view = { zoom: 1, x: 0, y: 0, invert: false, wc: 0, ww: 1 };
    this.lines = [];
    this.playing = null;
    var self = this;
    el.addEventListener("pointerdown", function () { onActivate(self); });
    this.bindPointer();
    new ResizeObserver(function () { self.draw(); }).observe(el);
  }

  Viewport.prototype.setStack = function (stack, title) {
    this.stop();
    this.stack = stack;
    this.title = title;
    this.lines = [];
    this.index = 0;
    this.fitted = false;
    this.windowSet = false;
    this.msg.textContent = stack.length ? "Loading…" : "No images";
    this.el.dataset.count = String(stack.length);
    this.show(0);
    this.prefetch();
  };

  Viewport.prototype.prefetch = function () {
    // Load the rest of the stack a few at a time, so scrolling and cine are smooth.
    var stack = this.stack, next = 0;
    function pump() {
      if (next >= stack.length) { return; }
      var item = stack[next++];
      loadFrame(item).catch(function () {}).then(pump);
    }
    for (var k = 0; k < 4; k++) { pump(); }
  };

  Viewport.prototype.show = function (index) {
    if (!this.stack.length) { return; }
    index = Math.max(0, Math.min(this.stack.length - 1, index));
    this.index = index;
    this.el.dataset.index = String(index);
    var item = this.stack[index], self = this;
    loadFrame(item).then(function (frame) {
      if (self.stack[self.index] !== item) { return; }
      self.msg.textContent = "";
      self.current = { item: item, frame: frame };
      if (!self.windowSet) { self.defaultWindow(); }
      self.paint();
      if (!self.fitted) { self.fit(); }
      self.draw();
      self.el.dataset.shown = String(index);
    }).catch(function (err) { self.msg.textContent = "Cannot show this image (" + err.message + ")"; });
  };

  Viewport.prototype.defaultWindow = function () {
    var c = this.current, info = c.item.info;
    this.windowSet = true;
    if (!c.frame.px) { return; }
    if (!isNaN(info.wc) && !isNaN(info.ww) && info.ww > 0) {
      this.view.wc = info.wc; this.view.ww = info.ww;
    } else {
      var lo = c.frame.min * info.slope + info.intercept, hi = c.frame.max * info.slope + info.intercept;
      this.view.wc = (lo + hi) / 2; this.view.ww = Math.max(1, hi - lo);
    }
    this.view.invert = info.photometric === "MONOCHROME1";
  };

  Viewport.prototype.applyPreset = function (name) {
    if (name === "default") { this.windowSet = false; if (this.current) { this.defaultWindow(); } }
    else if (PRESETS[name]) { this.view.ww = PRESETS[name][0]; this.view.wc = PRESETS[name][1]; }
    this.paint(); this.draw();
  };

  // Apply window/level (and invert) to the current frame into the native-size canvas.
  Viewport.prototype.paint = function () {
    var c = this.current;
    if (!c) { return; }
    var info = c.item.info, img = this.image;
    img.width = info.cols || (c.frame.bitmap && c.frame.bitmap.width);
    img.height = info.rows || (c.frame.bitmap && c.frame.bitmap.height);
    var ctx = img.getContext("2d");
    if (c.frame.bitmap) {
      ctx.filter = this.view.invert ? "invert(1)" : "none";
      ctx.drawImage(c.frame.bitmap, 0, 0, img.width, img.height);
      ctx.filter = "none";
      return;
    }
    var f = c.frame, v = this.view, n = f.max - f.min + 1;
    var lut = new Uint8ClampedArray(n);
    var lo = v.wc - 0.5 - (v.ww - 1) / 2, width = Math.max(1, v.ww - 1);
    for (var i = 0; i < n; i++) {  // PS3.3 C.11.2.1.2 linear VOI function
      var x = (f.min + i) * info.slope + info.intercept;
      var y = x <= lo ? 0 : (x > lo + width ? 255 : ((x - (v.wc - 0.5)) / width + 0.5) * 255);
      lut[i] = v.invert ? 255 - y : y;
    }
    var data = ctx.createImageData(img.width, img.height), out = data.data, px = f.px, min = f.min;
    var count = Math.min(px.length, img.width * img.height);
    for (var p = 0, o = 0; p < count; p++, o += 4) {
      var g = lut[px[p] - min];
      out[o] = g; out[o + 1] = g; out[o + 2] = g; out[o + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    this.el.dataset.ww = String(Math.round(v.ww));
    this.el.dataset.wc = String(Math.round(v.wc));
  };

  Viewport.prototype.fit = function () {
    var rect = this.el.getBoundingClientRect();
    if (!this.image.width || !rect.width) { return; }
    this.view.zoom = Math.min(rect.width / this.image.width, rect.height / this.image.height);
    this.view.x = (rect.width - this.image.width * this.view.zoom) / 2;
    this.view.y = (rect.height - this.image.height * this.view.zoom) / 2;
    this.fitted = true;
    this.draw();
  };

  Viewport.prototype.draw = function () {
    var canvas = this.canvas, rect = this.el.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(rect.width * dpr) || canvas.height !== Math.round(rect.height * dpr)) {
      canvas.width = Math.round(rect.width * dpr); canvas.height = Math.round(rect.height * dpr);
    }
    var ctx = canvas.getContext("2d"), v = this.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!this.current) { this.overlays(); return; }
    ctx.setTransform(dpr * v.zoom, 0, 0, dpr * v.zoom, dpr * v.x, dpr * v.y);
    ctx.imageSmoothingEnabled = v.zoom < 3;
    ctx.drawImage(this.image, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    var self = this;
    this.lines.forEach(function (l) { self.drawLine(ctx, l); });
    this.el.dataset.zoom = v.zoom.toFixed(3);
    this.overlays();
  };

  Viewport.prototype.toScreen = function (p) { return [p[0] * this.view.zoom + this.view.x, p[1] * this.view.zoom + this.view.y]; };
  Viewport.prototype.toImage = function (x, y) { return [(x - this.view.x) / this.view.zoom, (y - this.view.y) / this.view.zoom]; };

  Viewport.prototype.distance = function (l) {
    var info = this.current.item.info, dx = l.b[0] - l.a[0], dy = l.b[1] - l.a[1];
    if (info.rowSpacing > 0 && info.colSpacing > 0) {
      var mm = Math.sqrt(Math.pow(dx * info.colSpacing, 2) + Math.pow(dy * info.rowSpacing, 2));
      return mm.toFixed(1) + " mm";
    }
    return Math.sqrt(dx * dx + dy * dy).toFixed(0) + " px (no calibration)";
  };

  Viewport.prototype.drawLine = function (ctx, l) {
    var a = this.toScreen(l.a), b = this.toScreen(l.b), label = this.distance(l);
    ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    ctx.fillStyle = "#ffd400"; ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(label, b[0] + 6, b[1] - 6);
    this.ov.br.textContent = label;
  };

  Viewport.prototype.overlays = function () {
    var c = this.current;
    if (!c) { this.ov.tl.textContent = ""; this.ov.tr.textContent = ""; this.ov.bl.textContent = ""; return; }
    var info = c.item.info, v = this.view;
    this.ov.tl.textContent = (this.title || "") + "\nImage " + (this.index + 1) + " / " + this.stack.length +
      (info.frames > 1 ? "\nFrame " + (c.item.frame + 1) + " / " + info.frames : "");
    this.ov.tr.textContent = info.modality + "  " + info.cols + " × " + info.rows;
    this.ov.bl.textContent = (c.frame.px ? "W " + Math.round(v.ww) + "  L " + Math.round(v.wc) + "\n" : "") +
      "Zoom " + Math.round(v.zoom * 100) + "%" + (v.invert ? "  inverted" : "");
    this.el.dataset.frame = String(c.item.frame);
  };

  Viewport.prototype.bindPointer = function () {
    var self = this, drag = null;
    var canvas = this.canvas;
    canvas.addEventListener("pointerdown", function (ev) {
      if (!self.current) { return; }
      canvas.setPointerCapture(ev.pointerId);
      var rect = canvas.getBoundingClientRect(), x = ev.clientX - rect.left, y = ev.clientY - rect.top;
      var tool = ev.button === 1 ? "pan" : (ev.button === 2 ? "zoom" : App.tool);
      drag = { tool: tool, x: x, y: y, view: Object.assign({}, self.view) };
      if (tool === "measure") { drag.line = { a: self.toImage(x, y), b: self.toImage(x, y) }; self.lines.push(drag.line); }
    });
    canvas.addEventListener("pointermove", function (ev) {
      if (!drag) { return; }
      var rect = canvas.getBoundingClientRect(), x = ev.clientX - rect.left, y = ev.clientY - rect.top;
      var dx = x - drag.x, dy = y - drag.y, v = self.view;
      if (drag.tool === "wl" && self.current.frame.px) {
        var f = self.current.frame, info = self.current.item.info;
        var range = Math.max(1, (f.max - f.min) * Math.abs(info.slope));
        var step = range / 512;  // the full range across about 500 screen pixels
        v.ww = Math.max(1, drag.view.ww + dx * step * 2);
        v.wc = drag.view.wc + dy * step;
        self.schedule(true);
      } else if (drag.tool === "pan") {
        v.x = drag.view.x + dx; v.y = drag.view.y + dy; self.schedule(false);
      } else if (drag.tool === "zoom") {
        self.zoomAt(drag.x, drag.y, drag.view.zoom * Math.pow(1.01, -dy), drag.view);
      } else if (drag.tool === "measure") {
        drag.line.b = self.toImage(x, y); self.schedule(false);
      }
    });
    function end() { drag = null; }
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var rect = canvas.getBoundingClientRect();
      if (ev.ctrlKey || self.stack.length <= 1) {
        self.zoomAt(ev.clientX - rect.left, ev.clientY - rect.top, self.view.zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15), self.view);
      } else {
        self.show(self.index + (ev.deltaY > 0 ? 1 : -1));
      }
    }, { passive: false });
  };

  Viewport.prototype.zoomAt = function (x, y, zoom, from) {
    zoom = Math.max(0.05, Math.min(40, zoom));
    var ix = (x - from.x) / from.zoom, iy = (y - from.y) / from.zoom;
    this.view.zoom = zoom; this.view.x = x - ix * zoom; this.view.y = y - iy * zoom;
    this.schedule(false);
  };

  // Coalesce redraws to one per animation frame while dragging.
  Viewport.prototype.schedule = function (repaint) {
    var self = this;
    this.needPaint = this.needPaint || repaint;
    if (this.pending) { return; }
    this.pending = requestAnimationFrame(function () {
      self.pending = null;
      if (self.needPaint) { self.paint(); self.needPaint = false; }
      self.draw();
    });
  };

  Viewport.prototype.play = function (speed) {
    if (this.stack.length < 2) { return; }
    var self = this, fps = this.stack[this.index].info.fps * speed, last = performance.now(), acc = 0;
    this.stop();
    this.el.dataset.playing = "1";
    function tick(now) {
      if (!self.playing) { return; }
      acc += now - last; last = now;
      if (acc >= 1000 / fps) {
        acc = 0;
        self.show((self.index + 1) % self.stack.length);
      }
      self.playing = requestAnimationFrame(tick);
    }
    this.playing = requestAnimationFrame(tick);
  };

  Viewport.prototype.stop = function () {
    if (this.playing) { cancelAnimationFrame(this.playing); }
    this.playing = null;
    this.el.dataset.playing = "0";
  };

  // ---------------------------------------------------------------- the page
  var App = { tool: "wl", ports: [], active: null, studies: {}, seriesCache: {} };
  var portsEl = root.querySelector("[data-ports]");
  var strip = root.querySelector("[data-strip]");
  var picker = root.querySelector("[data-study-picker]");

  function activate(port) {
    App.active = port;
    App.ports.forEach(function (p) { p.el.classList.toggle("active", p === port); });
  }

  function addPort() {
    var p = new Viewport(portsEl, activate);
    App.ports.push(p);
    activate(p);
    return p;
  }

  function stackFor(studyUid, series) {
    var key = studyUid + "/" + series.uid;
    if (App.seriesCache[key]) { return Promise.resolve(App.seriesCache[key]); }
    return getJSON("/dicomweb/studies/" + studyUid + "/series/" + series.uid + "/metadata").then(function (metas) {
      var infos = metas.map(imageInfo).sort(function (a, b) { return a.number - b.number; });
      var stack = [];
      infos.forEach(function (info) {
        for (var f = 0; f < Math.max(1, info.frames); f++) {
          stack.push({ study: studyUid, series: series.uid, info: info, frame: f });
        }
      });
      App.seriesCache[key] = stack;
      return stack;
    });
  }

  function openSeries(studyUid, series, port) {
    port = port || App.active;
    strip.querySelectorAll(".vthumb").forEach(function (t) { t.classList.toggle("active", t.dataset.series === series.uid); });
    var study = App.studies[studyUid];
    var title = (study && study.date ? study.date.replace(/(\d{4})(\d{2})(\d{2})/, "$1-$2-$3") + "  " : "") +
      (series.modality || "") + " " + (series.number === null || series.number === undefined ? "" : series.number) +
      (series.description ? "  " + series.description : "");
    return stackFor(studyUid, series).then(function (stack) { port.setStack(stack, title); });
  }

  function showStrip(studyUid) {
    var data = App.studies[studyUid];
    strip.innerHTML = "";
    data.series.forEach(function (se) {
      var b = document.createElement("button");
      b.className = "vthumb"; b.type = "button"; b.dataset.series = se.uid;
      var img = document.createElement("img");
      img.alt = ""; img.loading = "lazy";
      img.src = "/dicomweb/studies/" + studyUid + "/series/" + se.uid + "/thumbnail";
      var label = document.createElement("span");
      label.textContent = (se.modality || "") + " " + (se.number === null ? "" : se.number) + " " + (se.description || "") +
        " (" + se.instances.length + ")";
      b.appendChild(img); b.appendChild(label);
      b.addEventListener("click", function () { openSeries(studyUid, se); });
      strip.appendChild(b);
    });
  }

  function loadStudy(uid) {
    if (App.studies[uid] && App.studies[uid].series) { return Promise.resolve(App.studies[uid]); }
    return getJSON("/viewer/api/studies/" + uid).then(function (d) {
      App.studies[uid] = { series: d.series, date: d.study.date, description: d.study.description };
      return App.studies[uid];
    });
  }

  function showTags() {
    var panel = root.querySelector("[data-tags]"), body = root.querySelector("[data-tag-rows]");
    if (panel.hidden || !App.active || !App.active.current) { return; }
    var sop = App.active.current.item.info.sop;
    if (panel.dataset.sop === sop) { return; }
    panel.dataset.sop = sop;
    getJSON("/viewer/api/instances/" + sop + "/tags").then(function (d) {
      body.innerHTML = "";
      d.tags.forEach(function (t) {
        var tr = document.createElement("tr");
        [t.tag, "  ".repeat(t.depth) + t.name, t.vr, t.value].forEach(function (text) {
          var td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      filterTags();
    });
  }

  function filterTags() {
    var q = root.querySelector("[data-tag-filter]").value.toLowerCase();
    root.querySelectorAll("[data-tag-rows] tr").forEach(function (tr) {
      tr.hidden = q && tr.textContent.toLowerCase().indexOf(q) < 0;
    });
  }

  // toolbar
  root.querySelectorAll("[data-tool]").forEach(function (b) {
    b.addEventListener("click", function () {
      App.tool = b.dataset.tool;
      root.querySelectorAll("[data-tool]").forEach(function (o) { o.classList.toggle("active", o === b); });
    });
  });
  var speedSel = root.querySelector("[data-speed]");
  var playBtn = root.querySelector("[data-action=play]");
  function togglePlay() {
    var p = App.active;
    if (!p) { return; }
    if (p.playing) { p.stop(); playBtn.innerHTML = "&#9654; Play"; }
    else { p.play(Number(speedSel.value)); playBtn.innerHTML = "&#10074;&#10074; Pause"; }
  }
  var actions = {
    invert: function (p) { p.view.invert = !p.view.invert; p.paint(); p.draw(); },
    fit: function (p) { p.fit(); },
    reset: function (p) { p.windowSet = false; p.lines = []; p.ov.br.textContent = ""; if (p.current) { p.defaultWindow(); p.paint(); } p.fit(); },
    clear: function (p) { p.lines = []; p.ov.br.textContent = ""; p.draw(); },
    play: togglePlay,
    layout: function () {
      if (App.ports.length === 1) {
        portsEl.classList.add("two");
        var first = App.ports[0], second = addPort();
        if (first.stack.length) { second.setStack(first.stack, first.title); }
      } else {
        var extra = App.ports.pop(); extra.stop(); extra.el.remove();
        portsEl.classList.remove("two"); activate(App.ports[0]);
      }
      App.ports.forEach(function (p) { p.fitted = false; p.fit(); });
    },
    tags: function () {
      var panel = root.querySelector("[data-tags]");
      panel.hidden = !panel.hidden; panel.dataset.sop = "";
      showTags();
    }
  };
  root.querySelectorAll("[data-action]").forEach(function (b) {
    b.addEventListener("click", function () { if (App.active) { actions[b.dataset.action](App.active); } });
  });
  root.querySelector("[data-preset]").addEventListener("change", function (ev) {
    if (App.active && ev.target.value) { App.active.applyPreset(ev.target.value); }
    ev.target.value = "";
  });
  speedSel.addEventListener("change", function () { if (App.active && App.active.playing) { App.active.play(Number(speedSel.value)); } });
  root.querySelector("[data-tag-filter]").addEventListener("input", filterTags);
  document.addEventListener("keydown", function (ev) {
    var p = App.active;
    if (!p || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") { return; }
    var keys = {
      ArrowDown: function () { p.show(p.index + 1); }, ArrowRight: function () { p.show(p.index + 1); },
      ArrowUp: function () { p.show(p.index - 1); }, ArrowLeft: function () { p.show(p.index - 1); },
      PageDown: function () { p.show(p.index + 10); }, PageUp: function () { p.show(p.index - 10); },
      Home: function () { p.show(0); }, End: function () { p.show(p.stack.length - 1); },
      " ": togglePlay, i: function () { actions.invert(p); }, f: function () { actions.fit(p); },
      r: function () { actions.reset(p); }
    };
    var toolKeys = { w: "wl", p: "pan", z: "zoom", m: "measure" };
    if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
    else if (toolKeys[ev.key]) { root.querySelector('[data-tool="' + toolKeys[ev.key] + '"]').click(); }
  });
  // keep the tag panel on the image being looked at
  setInterval(showTags, 500);

  // start: this study's series in the strip, the first (or the one in the URL) in the viewport
  addPort();
  getJSON("/viewer/api/studies/" + STUDY).then(function (d) {
    App.studies[STUDY] = { series: d.series, date: d.study.date, description: d.study.description };
    d.studies.forEach(function (s) {
      if (!App.studies[s.uid]) { App.studies[s.uid] = { date: s.date, description: s.description }; }
      var o = document.createElement("option");
      o.value = s.uid;
      o.textContent = (s.date ? s.date.replace(/(\d{4})(\d{2})(\d{2})/, "$1-$2-$3") : "(no date)") + " " +
        s.modalities.join(",") + " " + (s.description || "") + (s.uid === STUDY ? " (this study)" : "");
      o.selected = s.uid === STUDY;
      picker.appendChild(o);
    });
    showStrip(STUDY);
    var wanted = (/series=([0-9.]+)/.exec(location.hash) || [])[1];
    var first = d.series.filter(function (s) { return s.uid === wanted; })[0] || d.series[0];
    if (first) { openSeries(STUDY, first); }
  });
  picker.addEventListener("change", function () {
    var uid = picker.value;
    loadStudy(uid).then(function () { showStrip(uid); });
  });
  window.pacsViewer = App;  // for tests and the curious
})();
