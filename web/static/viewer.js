// The image viewer. Plain JavaScript, no build step, no CDN.
//
// A series opens progressively: one request gives the order of its images and the
// first image's attributes (/viewer/api/.../images), the first frame is drawn, and
// the remaining attributes arrive a page at a time while frames are fetched nearest
// the current slice first. Grayscale frames arrive raw (DICOMweb frames, decoded to
// little endian by the box), so window/level is a lookup table applied here and
// dragging stays instant on 16-bit data. JPEG baseline frames (ultrasound cine) are
// sent as stored and decoded by the browser; other colour images arrive rendered
// (PNG). State the tests read is kept in data-* attributes of each viewport element.
(function () {
  "use strict";

  var root = document.getElementById("viewer");
  if (!root) { return; }
  var STUDY = root.dataset.study;
  var NATIVE = "1.2.840.10008.1.2.1";
  var JPEG_BASELINE = "1.2.840.10008.1.2.4.50";
  var PRESETS = { lung: [1500, -600], bone: [2000, 500], soft: [400, 40], brain: [80, 40] };
  var PAGE = 50;          // image attributes per request after the first image
  var PARALLEL = 4;       // frame requests in flight per viewport
  var US_UNITS = { 0: "no units", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz", 6: "dB/s",
    7: "cm/s", 8: "cm²", 9: "cm²/s", 12: "degrees" };

  // ---------------------------------------------------------------- data access
  function HttpError(status, reason) { this.status = status; this.reason = reason; this.message = status + " " + reason; }
  HttpError.prototype = Object.create(Error.prototype);

  function failed(r) {
    return r.text().then(function (t) { throw new HttpError(r.status, (t || r.statusText || "").trim().slice(0, 300)); },
      function () { throw new HttpError(r.status, r.statusText); });
  }

  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/dicom+json, application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : failed(r); });
  }

  // What to tell a person when an image cannot be shown; the technical reason goes to the title attribute.
  function plainError(err) {
    var s = err && err.status;
    if (s === 404) { return "This image is no longer in the archive."; }
    if (s === 401 || s === 403) { return "Your session has ended: log in again to see this image."; }
    if (s === 503) { return "The server is busy. The image will load when you scroll back to it."; }
    if (s === 406 || s === 415 || (s >= 500 && s < 600) || (err && err.decode)) {
      return "This image cannot be displayed: its picture data could not be decoded. " +
        "Download the study to open it in the modality's own software.";
    }
    return "The image could not be loaded. Check the network connection and try again.";
  }

  // Cine rate from the image (PS3.3 C.7.6.5 Frame Time / Frame Time Vector, C.8.5.5 Cine Rate,
  // C.7.6.16 Recommended Display Frame Rate), in that order.
  function cineTiming(a) {
    if (a.frameTime > 0) { return { fps: 1000 / a.frameTime, source: "Frame Time" }; }
    var v = a.frameTimeVector;
    if (v && v.length > 1) {
      var sum = 0; for (var i = 1; i < v.length; i++) { sum += v[i]; }
      if (sum > 0) { return { fps: 1000 * (v.length - 1) / sum, vector: v, source: "Frame Time Vector" }; }
    }
    if (a.cineRate > 0) { return { fps: a.cineRate, source: "Cine Rate" }; }
    if (a.recommendedRate > 0) { return { fps: a.recommendedRate, source: "Recommended Display Frame Rate" }; }
    return { fps: 10, source: "none recorded (10 fps)" };
  }

  function imageInfo(a) {
    var timing = cineTiming(a);
    return {
      sop: a.sop, ts: a.ts || "", number: a.number || 0, modality: a.modality || "",
      rows: a.rows || 0, cols: a.cols || 0, bits: a.bits || 16, signed: !!a.signed, samples: a.samples || 1,
      photometric: a.photometric || "MONOCHROME2",
      slope: a.slope === null || a.slope === undefined ? 1 : a.slope, intercept: a.intercept || 0,
      wc: a.wc === null || a.wc === undefined ? NaN : a.wc, ww: a.ww === null || a.ww === undefined ? NaN : a.ww,
      pixelSpacing: a.pixelSpacing && a.pixelSpacing.length === 2 && a.pixelSpacing[0] > 0 ? a.pixelSpacing : null,
      imagerPixelSpacing: a.imagerPixelSpacing && a.imagerPixelSpacing.length === 2 && a.imagerPixelSpacing[0] > 0 ?
        a.imagerPixelSpacing : null,
      regions: a.regions || [], frames: a.frames || 1, timing: timing
    };
  }

  // Timings for bench/viewer_bench.py (performance marks cost nothing when nobody reads them).
  function mark(name) { if (window.performance && performance.mark) { performance.mark(name); } }

  function isGray(info) { return info.samples === 1 && info.photometric.indexOf("MONOCHROME") === 0; }

  // The body of the first part of a multipart/related response.
  function firstPart(buffer, contentType) {
    var m = /boundary="?([^";]+)"?/i.exec(contentType || "");
    var bytes = new Uint8Array(buffer);
    if (!m) { return bytes; }
    var start = indexOf(bytes, [13, 10, 13, 10], 0) + 4;
    var end = indexOf(bytes, strBytes("\r\n--" + m[1]), start);
    return bytes.subarray(start, end < 0 ? bytes.length : end);  // a view: grayPixels makes the one copy
  }

  function strBytes(s) { var a = []; for (var i = 0; i < s.length; i++) { a.push(s.charCodeAt(i)); } return a; }

  function indexOf(bytes, pattern, from) {
    outer: for (var i = from; i <= bytes.length - pattern.length; i++) {
      for (var j = 0; j < pattern.length; j++) { if (bytes[i + j] !== pattern[j]) { continue outer; } }
      return i;
    }
    return -1;
  }

  // One series: its image order, the attributes of each image (loaded a page at a time) and its stack
  // of frames (an item per frame of each image).
  function Series(studyUid, seriesUid) {
    this.study = studyUid; this.uid = seriesUid;
    this.images = []; this.bySop = {}; this.pages = {}; this.stack = [];
  }

  Series.prototype.url = function (offset, limit) {
    return "/viewer/api/studies/" + this.study + "/series/" + this.uid + "/images?offset=" + offset + "&limit=" + limit;
  };

  Series.prototype.accept = function (d) {
    var self = this;
    d.items.forEach(function (a) { var img = self.bySop[a.sop]; if (img) { img.info = imageInfo(a); } });
  };

  // Only the order and the first image's attributes: enough to draw the first image.
  Series.prototype.open = function () {
    var self = this;
    return getJSON(this.url(0, 1)).then(function (d) {
      d.order.forEach(function (o, i) {
        var img = { sop: o[0], position: i, info: null, items: [] };
        self.images.push(img); self.bySop[o[0]] = img;
        for (var f = 0; f < Math.max(1, o[1]); f++) {
          var item = { series: self, image: img, frame: f };
          img.items.push(item); self.stack.push(item);
        }
      });
      self.accept(d);
      return self;
    });
  };

  Series.prototype.info = function (img) {
    if (img.info) { return Promise.resolve(img.info); }
    var n = Math.floor(img.position / PAGE), self = this;
    if (!this.pages[n]) {
      this.pages[n] = getJSON(this.url(n * PAGE, PAGE)).then(function (d) { self.accept(d); },
        function (e) { delete self.pages[n]; throw e; });
    }
    return this.pages[n].then(function () {
      if (!img.info) { throw new HttpError(404, "no attributes for this image"); }
      return img.info;
    });
  };

  function frameUrl(item) {
    return "/dicomweb/studies/" + item.series.study + "/series/" + item.series.uid + "/instances/" + item.image.sop +
      "/frames/" + (item.frame + 1);
  }

  function fetchOk(url, accept) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: accept } }).then(function (r) {
      return r.ok ? r : failed(r);
    });
  }

  function bitmapOf(blob) {
    return createImageBitmap(blob).then(function (bitmap) { return { bitmap: bitmap }; },
      function () { var e = new Error("the browser could not decode the image"); e.decode = true; throw e; });
  }

  // A frame's pixels (grayscale) or bitmap (colour); item.ready holds it once loaded. The request goes
  // out at once when the image's attributes are known, so the first frame is asked for first.
  function loadFrame(item) {
    if (item.promise) { return item.promise; }
    var info = item.image.info;
    if (info && info.frames > 1 && (isGray(info) || storedJpeg(info))) {
      loadBatch(item, info);
    } else {
      settle(item, info ? fetchFrame(item, info) :
        item.series.info(item.image).then(function (info) { return fetchFrame(item, info); }));
    }
    return item.promise;
  }

  function settle(item, promise) {
    item.promise = promise;
    promise.then(function (frame) { item.ready = frame; }, function (err) { item.error = err; });
  }

  // JPEG baseline colour frames go as stored: no decoding or re-encoding on the box, the browser decodes.
  function storedJpeg(info) { return info.ts === JPEG_BASELINE && info.photometric.indexOf("YBR") === 0; }

  function frameAccept(info) {
    return storedJpeg(info) ? 'multipart/related; type="image/jpeg"; transfer-syntax=' + JPEG_BASELINE :
      'multipart/related; type="application/octet-stream"; transfer-syntax=' + NATIVE;
  }

  function decodePart(info, bytes) {
    return storedJpeg(info) ? bitmapOf(new Blob([bytes], { type: "image/jpeg" })) : grayPixels(info, bytes);
  }

  function fetchFrame(item, info) {
    if (isGray(info) || storedJpeg(info)) {
      return fetchOk(frameUrl(item), frameAccept(info)).then(function (r) {
        var type = r.headers.get("Content-Type");
        return r.arrayBuffer().then(function (buf) { return decodePart(info, firstPart(buf, type)); });
      });
    }
    return fetchOk(frameUrl(item) + "/rendered", "image/png").then(function (r) { return r.blob(); }).then(bitmapOf);
  }

  // Frames of a multi-frame image (a cine clip) ten to a request, each a part of one multipart response:
  // a 120-frame clip is 13 requests, not 120. The first frame comes alone, so it is drawn at once.
  var BATCH = 10;
  function loadBatch(item, info) {
    var first = item.frame === 0 ? 0 : Math.max(1, item.frame - (item.frame - 1) % BATCH);
    var last = item.frame === 0 ? 1 : Math.min(info.frames, first + BATCH);
    var batch = item.image.items.slice(first, last).filter(function (it) { return !it.promise; });
    var url = frameUrl(item).replace(/\/frames\/\d+$/, "/frames/") + batch.map(function (it) { return it.frame + 1; }).join(",");
    var parts = fetchOk(url, frameAccept(info)).then(function (r) {
      var type = r.headers.get("Content-Type");
      return r.arrayBuffer().then(function (buf) { return allParts(buf, type); });
    });
    batch.forEach(function (it, k) {
      settle(it, parts.then(function (list) {
        if (!list[k]) { throw new HttpError(502, "frame " + (it.frame + 1) + " missing from the response"); }
        return decodePart(info, list[k]);
      }));
    });
  }

  // Every part's body of a multipart/related response, in order.
  function allParts(buffer, contentType) {
    var m = /boundary="?([^";]+)"?/i.exec(contentType || "");
    var bytes = new Uint8Array(buffer);
    if (!m) { return [bytes]; }
    var delimiter = strBytes("\r\n--" + m[1]), out = [];
    var pos = indexOf(bytes, strBytes("--" + m[1]), 0);
    while (pos >= 0) {
      var start = indexOf(bytes, [13, 10, 13, 10], pos) + 4;
      if (start < 4) { break; }
      var end = indexOf(bytes, delimiter, start);
      if (end < 0) { break; }
      out.push(bytes.slice(start, end));
      pos = end + 2;
      if (bytes[end + delimiter.length] === 45 && bytes[end + delimiter.length + 1] === 45) { break; }  // "--": the last
    }
    return out;
  }

  function grayPixels(info, bytes) {
    var buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    var px;
    if (info.bits <= 8) { px = info.signed ? new Int8Array(buf) : new Uint8Array(buf); }
    else if (info.bits <= 16) { px = info.signed ? new Int16Array(buf, 0, buf.byteLength >> 1) : new Uint16Array(buf, 0, buf.byteLength >> 1); }
    else { px = info.signed ? new Int32Array(buf, 0, buf.byteLength >> 2) : new Uint32Array(buf, 0, buf.byteLength >> 2); }
    var min = Infinity, max = -Infinity;
    for (var i = 0; i < px.length; i++) { var v = px[i]; if (v < min) { min = v; } if (v > max) { max = v; } }
    if (!px.length) { min = 0; max = 0; }
    return { px: px, min: min, max: max };
  }

  // ---------------------------------------------------------------- measuring
  function regionAt(regions, p) {
    for (var i = 0; i < regions.length; i++) {
      var r = regions[i];
      if (p[0] >= r.x0 && p[0] <= r.x1 + 1 && p[1] >= r.y0 && p[1] <= r.y1 + 1) { return r; }
    }
    return null;
  }

  // A line's length in the best calibration the image has: the ultrasound region under it (in cm, as
  // the scanner's own calipers show), Pixel Spacing (mm), Imager Pixel Spacing (mm at the detector,
  // IHE's wording), and only when nothing calibrates the image, pixels.
  function measureLine(info, l) {
    var dx = l.b[0] - l.a[0], dy = l.b[1] - l.a[1];
    if (info.regions.length) {
      var ra = regionAt(info.regions, l.a), rb = regionAt(info.regions, l.b);
      if (ra && rb && ra !== rb) { return { text: "crosses two ultrasound regions: not measured", source: "ultrasound regions" }; }
      if ((ra || rb) && ra !== rb) { return { text: "runs outside the ultrasound region: not measured", source: "ultrasound region" }; }
      if (ra) {
        if (ra.unitsX === 3 && ra.unitsY === 3 && ra.dx > 0 && ra.dy > 0) {
          var cm = Math.sqrt(Math.pow(dx * ra.dx, 2) + Math.pow(dy * ra.dy, 2));
          return { text: cm.toFixed(2) + " cm", source: "ultrasound region" };
        }
        return { text: "not a distance: this region measures " + (US_UNITS[ra.unitsX] || "other units") + " across and " +
          (US_UNITS[ra.unitsY] || "other units") + " down", source: "ultrasound region" };
      }
      if (!info.pixelSpacing && !info.imagerPixelSpacing) {
        return { text: "outside the calibrated ultrasound regions: not measured", source: "ultrasound regions" };
      }
    }
    var ps = info.pixelSpacing || info.imagerPixelSpacing;
    if (ps) {  // [row spacing (down), column spacing (across)]
      var mm = Math.sqrt(Math.pow(dx * ps[1], 2) + Math.pow(dy * ps[0], 2));
      return info.pixelSpacing ? { text: mm.toFixed(1) + " mm", source: "Pixel Spacing" } :
        { text: mm.toFixed(1) + " mm at detector", source: "Imager Pixel Spacing" };
    }
    return { text: Math.sqrt(dx * dx + dy * dy).toFixed(0) + " px (no calibration)", source: "none" };
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
    this.generation = 0;
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
    this.generation++;
    this.stack = stack;
    this.title = title;
    this.lines = [];
    this.ov.br.textContent = "";
    this.index = 0;
    this.current = null;
    this.marked = false;
    this.shownSize = "";
    this.windowSet = false;
    this.setMessage(stack.length ? "Loading…" : "No images");
    this.el.dataset.count = String(stack.length);
    delete this.el.dataset.shown;
    this.show(0);
    // The rest only once the first image is drawn (or has failed): on a small box every request
    // made before then delays it.
    var self = this, generation = this.generation;
    function rest() { if (self.generation === generation) { self.prefetch(); } }
    if (stack.length) { loadFrame(stack[0]).then(rest, rest); }
  };

  Viewport.prototype.setMessage = function (text, detail) {
    this.msg.textContent = text;
    this.msg.title = detail || "";
    this.msg.classList.toggle("error", !!detail);
  };

  // Fetch frames nearest the current slice first, a few at a time, until the whole stack is loaded.
  // data-loaded counts frames settled (drawn-ready or failed), whoever asked for them.
  Viewport.prototype.prefetch = function () {
    var self = this, generation = this.generation, stack = this.stack, loaded = 0, watched = new Set();
    function noop() {}
    function watch(item) {
      if (watched.has(item)) { return; }
      watched.add(item);
      item.promise.then(noop, noop).then(function () {
        if (self.generation !== generation) { return; }
        self.el.dataset.loaded = String(++loaded);
        if (loaded === stack.length) { mark("pacs:series-loaded"); }
      });
    }
    function nearest() {
      for (var d = 0; d < stack.length; d++) {
        var up = stack[self.index + d], down = stack[self.index - d];
        if (up && !up.promise) { return up; }
        if (down && !down.promise) { return down; }
      }
      return null;
    }
    function pump() {
      if (self.generation !== generation) { return; }
      stack.forEach(function (it) { if (it.promise) { watch(it); } });  // also what show() asked for
      var item = nearest();
      if (!item) { return; }
      loadFrame(item);
      item.image.items.forEach(function (it) { if (it.promise) { watch(it); } });  // a batch of frames
      item.promise.then(noop, noop).then(pump);
    }
    self.el.dataset.loaded = "0";
    for (var k = 0; k < PARALLEL; k++) { pump(); }
  };

  Viewport.prototype.show = function (index) {
    if (!this.stack.length) { return; }
    index = Math.max(0, Math.min(this.stack.length - 1, index));
    this.index = index;
    this.el.dataset.index = String(index);
    var item = this.stack[index], self = this;
    if (item.ready) { this.display(item, item.ready); return; }  // at once: cine and scrolling stay in step
    if (!this.current) { this.setMessage("Loading…"); }
    loadFrame(item).then(function (frame) {
      if (self.stack[self.index] === item) { self.display(item, frame); }
    }, function (err) {
      if (self.stack[self.index] !== item) { return; }
      self.current = null;
      self.draw();
      self.setMessage(plainError(err), err.message);
      self.el.dataset.error = String(index);
    });
  };

  Viewport.prototype.display = function (item, frame) {
    var info = item.image.info;
    this.setMessage("");
    delete this.el.dataset.error;
    this.current = { item: item, frame: frame };
    if (!this.windowSet) { this.defaultWindow(); }
    this.paint();
    // A new image size (a series mixing 320x240 and 640x480 images) starts fitted, never cut off.
    var size = this.image.width + "x" + this.image.height;
    if (size !== this.shownSize) { this.shownSize = size; this.fit(); }
    this.draw();
    this.el.dataset.shown = String(this.index);
    if (!this.marked) { this.marked = true; mark("pacs:first-image"); }
    this.el.dataset.fps = info.timing.fps.toFixed(2);
    this.el.dataset.rateSource = info.timing.source;
  };

  Viewport.prototype.defaultWindow = function () {
    var c = this.current, info = c.item.image.info;
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

  var LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

  // Apply window/level (and invert) to the current frame into the native-size canvas.
  Viewport.prototype.paint = function () {
    var c = this.current;
    if (!c) { return; }
    var info = c.item.image.info, img = this.image;
    var w = info.cols || (c.frame.bitmap && c.frame.bitmap.width), h = info.rows || (c.frame.bitmap && c.frame.bitmap.height);
    if (img.width !== w || img.height !== h) { img.width = w; img.height = h; this.imageData = null; }
    var ctx = img.getContext("2d");
    if (c.frame.bitmap) {
      ctx.filter = this.view.invert ? "invert(1)" : "none";
      ctx.drawImage(c.frame.bitmap, 0, 0, img.width, img.height);
      ctx.filter = "none";
      return;
    }
    var f = c.frame, v = this.view, n = f.max - f.min + 1;
    // One RGBA word per stored value, so the pixel loop is a single lookup and store.
    var lut = new Uint32Array(n);
    var lo = v.wc - 0.5 - (v.ww - 1) / 2, width = Math.max(1, v.ww - 1);
    for (var i = 0; i < n; i++) {  // PS3.3 C.11.2.1.2 linear VOI function
      var x = (f.min + i) * info.slope + info.intercept;
      var y = x <= lo ? 0 : (x > lo + width ? 255 : ((x - (v.wc - 0.5)) / width + 0.5) * 255);
      var g = Math.round(v.invert ? 255 - y : y);
      lut[i] = LITTLE_ENDIAN ? (0xff000000 | (g << 16) | (g << 8) | g) >>> 0 : ((g << 24) | (g << 16) | (g << 8) | 0xff) >>> 0;
    }
    if (!this.imageData) { this.imageData = ctx.createImageData(img.width, img.height); }
    var out = new Uint32Array(this.imageData.data.buffer), px = f.px, min = f.min;
    var count = Math.min(px.length, out.length);
    for (var p = 0; p < count; p++) { out[p] = lut[px[p] - min]; }
    ctx.putImageData(this.imageData, 0, 0);
    this.el.dataset.ww = String(Math.round(v.ww));
    this.el.dataset.wc = String(Math.round(v.wc));
  };

  Viewport.prototype.fit = function () {
    var rect = this.el.getBoundingClientRect();
    if (!this.image.width || !rect.width) { return; }
    this.view.zoom = Math.min(rect.width / this.image.width, rect.height / this.image.height);
    this.view.x = (rect.width - this.image.width * this.view.zoom) / 2;
    this.view.y = (rect.height - this.image.height * this.view.zoom) / 2;
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

  Viewport.prototype.drawLine = function (ctx, l) {
    var a = this.toScreen(l.a), b = this.toScreen(l.b), m = measureLine(this.current.item.image.info, l);
    ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    ctx.fillStyle = "#ffd400"; ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(m.text, b[0] + 6, b[1] - 6);
    this.ov.br.textContent = m.text;
    this.ov.br.title = "Calibration: " + m.source;
    this.el.dataset.measureSource = m.source;
  };

  Viewport.prototype.overlays = function () {
    var c = this.current;
    if (!c) { this.ov.tl.textContent = ""; this.ov.tr.textContent = ""; this.ov.bl.textContent = ""; return; }
    var info = c.item.image.info, v = this.view;
    this.ov.tl.textContent = (this.title || "") + "\nImage " + (this.index + 1) + " / " + this.stack.length +
      (info.frames > 1 ? "\nFrame " + (c.item.frame + 1) + " / " + info.frames + "  " + info.timing.fps.toFixed(0) + " fps" : "");
    this.ov.tr.textContent = info.modality + "  " + this.image.width + " × " + this.image.height;
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
      if (!drag || !self.current) { return; }
      var rect = canvas.getBoundingClientRect(), x = ev.clientX - rect.left, y = ev.clientY - rect.top;
      var dx = x - drag.x, dy = y - drag.y, v = self.view;
      if (drag.tool === "wl" && self.current.frame.px) {
        var f = self.current.frame, info = self.current.item.image.info;
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
        scroll(self, ev.deltaY > 0 ? 1 : -1);
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

  // How long frame ``index`` stays on screen at 1x, in ms (Frame Time Vector when the image has one).
  Viewport.prototype.frameDuration = function (index) {
    var item = this.stack[index], info = item && item.image.info;
    if (!info) { return 100; }
    var v = info.timing.vector;
    if (v && v[item.frame + 1] > 0) { return v[item.frame + 1]; }
    return 1000 / info.timing.fps;
  };

  // Cine on the clip's own clock: time left over from one screen refresh carries into the next, so
  // the rate holds whatever the display's refresh rate; a frame not loaded yet holds the clock.
  Viewport.prototype.play = function (speed) {
    if (this.stack.length < 2) { return; }
    var self = this, last = null, due = 0, n = this.stack.length;
    this.stop();
    this.el.dataset.playing = "1";
    this.el.dataset.advanced = "0";
    var advanced = 0;
    function tick(now) {
      if (!self.playing) { return; }
      if (last !== null) { due += (now - last) * speed; }
      last = now;
      var index = self.index;
      for (var steps = 0; steps < n; steps++) {
        var d = self.frameDuration(index);
        if (due < d) { break; }
        var next = (index + 1) % n;
        if (!self.stack[next].ready) { due = d; break; }
        due -= d; index = next; advanced++;
      }
      if (index !== self.index) { self.show(index); self.el.dataset.advanced = String(advanced); }
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
  var App = { tool: "wl", ports: [], active: null, studies: {}, series: {}, linked: false };
  var portsEl = root.querySelector("[data-ports]");
  var strip = root.querySelector("[data-strip]");
  var picker = root.querySelector("[data-study-picker]");
  var pickerLabel = root.querySelector("[data-study-label]");
  var help = root.querySelector("[data-help]");

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

  // Scroll a viewport by ``delta`` images; with linked scrolling the other viewports follow by as many.
  function scroll(port, delta) {
    port.show(port.index + delta);
    if (App.linked) {
      App.ports.forEach(function (p) { if (p !== port && p.stack.length) { p.show(p.index + delta); } });
    }
  }

  function seriesFor(studyUid, uid) {
    var key = studyUid + "/" + uid;
    if (!App.series[key]) {
      App.series[key] = new Series(studyUid, uid).open().catch(function (e) { delete App.series[key]; throw e; });
    }
    return App.series[key];
  }

  function isoDate(d) { return d ? d.replace(/(\d{4})(\d{2})(\d{2})/, "$1-$2-$3") : ""; }

  // Words joined by a separator, leaving out the empty ones (no dangling "·").
  function joined(parts, sep) { return parts.filter(function (p) { return p !== null && p !== undefined && String(p).trim(); }).join(sep); }

  function openSeries(studyUid, series, port) {
    port = port || App.active;
    strip.querySelectorAll(".vthumb").forEach(function (t) { t.classList.toggle("active", t.dataset.series === series.uid); });
    var study = App.studies[studyUid];
    var title = joined([study && isoDate(study.date), joined([series.modality, series.number], " "), series.description], "  ");
    port.setMessage("Loading…");
    return seriesFor(studyUid, series.uid).then(function (s) { port.setStack(s.stack, title); }, function (err) {
      port.setMessage("This series could not be opened. " + plainError(err), err.message);
    });
  }

  function placeholder(thumb) {
    var ph = document.createElement("span");
    ph.className = "vthumb-none";
    ph.textContent = "No preview";
    thumb.replaceWith(ph);
  }

  function showStrip(studyUid) {
    var data = App.studies[studyUid];
    strip.innerHTML = "";
    data.series.forEach(function (se) {
      var b = document.createElement("button");
      b.className = "vthumb"; b.type = "button"; b.dataset.series = se.uid;
      var img = document.createElement("img");
      img.alt = ""; img.loading = "lazy";
      img.addEventListener("error", function () { placeholder(img); });
      img.src = "/dicomweb/studies/" + studyUid + "/series/" + se.uid + "/thumbnail";
      var label = document.createElement("span");
      label.textContent = joined([se.modality, se.number, se.description, "(" + se.count + ")"], " ");
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

  function studyLabel(s) {
    return joined([isoDate(s.date) || "(no date)", s.modalities.join(", "), s.description], " · ") +
      (s.uid === STUDY ? " (this study)" : "") + (s.offsite ? " (offsite)" : "");
  }

  function showTags() {
    var panel = root.querySelector("[data-tags]"), body = root.querySelector("[data-tag-rows]");
    if (panel.hidden || !App.active || !App.active.current) { return; }
    var sop = App.active.current.item.image.sop;
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
  var linkBtn = root.querySelector("[data-action=link]");
  function togglePlay() {
    var p = App.active;
    if (!p) { return; }
    if (p.playing) { p.stop(); playBtn.innerHTML = "&#9654; Play"; }
    else { p.play(Number(speedSel.value)); playBtn.innerHTML = "&#10074;&#10074; Pause"; }
  }
  function toggleHelp(show) {
    help.hidden = show === undefined ? !help.hidden : !show;
  }
  var actions = {
    invert: function (p) { p.view.invert = !p.view.invert; p.paint(); p.draw(); },
    fit: function (p) { p.fit(); },
    reset: function (p) { p.windowSet = false; p.lines = []; p.ov.br.textContent = ""; if (p.current) { p.defaultWindow(); p.paint(); } p.fit(); },
    clear: function (p) { p.lines = []; p.ov.br.textContent = ""; p.draw(); },
    play: togglePlay,
    help: function () { toggleHelp(); },
    link: function () {
      App.linked = !App.linked;
      linkBtn.classList.toggle("active", App.linked);
      linkBtn.setAttribute("aria-pressed", String(App.linked));
    },
    layout: function () {
      if (App.ports.length === 1) {
        portsEl.classList.add("two");
        var first = App.ports[0], second = addPort();
        if (first.stack.length) { second.setStack(first.stack, first.title); }
      } else {
        var extra = App.ports.pop(); extra.stop(); extra.generation++; extra.el.remove();
        portsEl.classList.remove("two"); activate(App.ports[0]);
      }
      linkBtn.hidden = App.ports.length < 2;
      App.ports.forEach(function (p) { p.fit(); });
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
    if (!p || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var keys = {
      ArrowDown: function () { scroll(p, 1); }, ArrowRight: function () { scroll(p, 1); },
      ArrowUp: function () { scroll(p, -1); }, ArrowLeft: function () { scroll(p, -1); },
      PageDown: function () { scroll(p, 10); }, PageUp: function () { scroll(p, -10); },
      Home: function () { scroll(p, -p.index); }, End: function () { scroll(p, p.stack.length - 1 - p.index); },
      " ": togglePlay, i: function () { actions.invert(p); }, f: function () { actions.fit(p); },
      r: function () { actions.reset(p); }, l: function () { if (App.ports.length > 1) { actions.link(); } },
      "?": function () { toggleHelp(); }, Escape: function () { toggleHelp(false); }
    };
    var toolKeys = { w: "wl", p: "pan", z: "zoom", m: "measure" };
    if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
    else if (toolKeys[ev.key]) { root.querySelector('[data-tool="' + toolKeys[ev.key] + '"]').click(); }
  });
  help.addEventListener("click", function (ev) { if (ev.target === help || ev.target.closest("[data-close]")) { toggleHelp(false); } });
  // keep the tag panel on the image being looked at
  setInterval(showTags, 500);

  // start: this study's series in the strip, the first (or the one in the URL) in the viewport
  addPort();
  getJSON("/viewer/api/studies/" + STUDY).then(function (d) {
    App.studies[STUDY] = { series: d.series, date: d.study.date, description: d.study.description };
    var wanted = (/series=([0-9.]+)/.exec(location.hash) || [])[1];
    var first = d.series.filter(function (s) { return s.uid === wanted; })[0] || d.series[0];
    if (first) { openSeries(STUDY, first); }  // before anything else, so the first image goes first
    showStrip(STUDY);
    d.studies.forEach(function (s) {
      if (!App.studies[s.uid]) { App.studies[s.uid] = { date: s.date, description: s.description }; }
      var o = document.createElement("option");
      o.value = s.uid;
      o.textContent = studyLabel(s);
      o.disabled = !!s.offsite;
      o.selected = s.uid === STUDY;
      picker.appendChild(o);
    });
    picker.title = pickerLabel.textContent = picker.options[picker.selectedIndex] ? picker.options[picker.selectedIndex].textContent : "";
  }, function (err) { App.active.setMessage("This study could not be opened. " + plainError(err), err.message); });
  picker.addEventListener("change", function () {
    var uid = picker.value;
    picker.title = pickerLabel.textContent = picker.options[picker.selectedIndex].textContent;
    loadStudy(uid).then(function () { showStrip(uid); });
  });
  window.pacsViewer = App;  // for tests and the curious
})();
