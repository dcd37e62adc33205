"""Style and script inlined into WORK/reports/index.html (no CDN, no network, no library).

The gallery script reads ``window.FACESIFT_REJECTED`` (reports/rejected.js, loaded by a plain
``<script src>`` so the page also works from ``file://``) and renders one page of tiles at a time,
so 100k+ rejections cost one array scan per filter change, never 100k DOM nodes.
"""

CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#d9dee3; --bg:#f6f7f9; --card:#fff; --accent:#2f6db5; }
* { box-sizing: border-box; }
/* Korean names (AIHub keys, class folders) need a Hangul font: the CJK faces come before the generic family. */
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans CJK KR", "Noto Sans KR",
       "Apple SD Gothic Neo", "Malgun Gothic", "NanumGothic", "Noto Sans CJK JP", sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 18px 28px 8px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: var(--muted); }
main { padding: 0 28px 40px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px; margin: 14px 0; }
h2 { font-size: 16px; margin: 0 0 10px; }
table { border-collapse: collapse; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th:first-child, td:first-child, td.l { text-align: left; }
th { font-weight: 600; color: var(--muted); }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.reasons a { display: inline-block; margin: 0 10px 2px 0; white-space: nowrap; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin-bottom: 10px; }
.controls select, .controls input, .controls button { font: inherit; padding: 3px 6px; }
#gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(168px, 1fr)); gap: 10px; }
.tile { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 4px; background: #fafbfc; overflow: hidden; }
.tile.pair { grid-column: span 2; }
.pics { display: flex; gap: 6px; justify-content: center; }
.pic { position: relative; width: 160px; height: 160px; flex: none; }
.pic img, .tile .ph { display: block; width: 160px; height: 160px; object-fit: contain; background: #eef0f3; }
.pic svg { position: absolute; left: 0; top: 0; width: 160px; height: 160px; pointer-events: none; }
.pic svg rect { fill: none; stroke-width: 2px; }
.pic .b-text { stroke: #ff1f8f; }
.pic .b-face { stroke: #00c8ff; }
.pic .tag { position: absolute; left: 0; bottom: 0; font-size: 10px; padding: 0 4px; background: rgba(29,35,42,.75); color: #fff; }
.tile .ph { display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12px;
            text-align: center; border: 1px dashed #b8c0c8; }
.tile figcaption { font-size: 11px; line-height: 1.3; margin-top: 4px; overflow-wrap: anywhere; }
.tile figcaption .why { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; color: var(--muted); }
.tile figcaption b { font-weight: 600; }
.tile.failed { border-color: #d98c8c; }
.pager { display: flex; gap: 8px; align-items: center; margin: 10px 0; }
.muted { color: var(--muted); }
.warn { color: #8a4b00; background: #fff4e0; border: 1px solid #f0c987; border-radius: 4px; padding: 4px 8px; margin: 0 0 8px; }
.model img { max-width: 480px; border: 1px solid var(--line); }
"""

JS = r"""
(function () {
  "use strict";
  var D = window.FACESIFT_REJECTED || {stages: [], reasons: [], statuses: [], rows: []};
  // [key, stage index, reason index, status index, thumbnail path or "", hover text, evidence or 0]; evidence:
  // {size: [w, h] of the image boxes are in, boxes: [[x, y, w, h, "text"|"face"]], dup: [kept key, its thumbnail], d: detail}
  var rows = D.rows;
  var SVG = "http://www.w3.org/2000/svg";
  function el(id) { return document.getElementById(id); }
  var stageSel = el("f-stage"), reasonSel = el("f-reason"), keyBox = el("f-key"), sizeSel = el("f-size");
  var gallery = el("gallery"), info = el("g-info"), pageBox = el("g-page");
  var st = {stage: "", reason: "", q: "", page: 1, size: 100};
  var hits = [];

  function option(value, text) {
    var o = document.createElement("option");
    o.value = value; o.textContent = text; return o;
  }
  function fillStages() {
    var n = new Array(D.stages.length).fill(0);
    for (var i = 0; i < rows.length; i++) n[rows[i][1]]++;
    stageSel.replaceChildren(option("", "all stages (" + rows.length + ")"));
    D.stages.forEach(function (s, i) { if (n[i]) stageSel.appendChild(option(s, s + " (" + n[i] + ")")); });
  }
  function fillReasons() {
    var si = D.stages.indexOf(st.stage), n = new Array(D.reasons.length).fill(0), all = 0;
    for (var i = 0; i < rows.length; i++) if (si < 0 || rows[i][1] === si) { n[rows[i][2]]++; all++; }
    reasonSel.replaceChildren(option("", "all reasons (" + all + ")"));
    D.reasons.forEach(function (r, i) { if (n[i]) reasonSel.appendChild(option(r, r + " (" + n[i] + ")")); });
    if (st.reason && !n[D.reasons.indexOf(st.reason)]) st.reason = "";
    reasonSel.value = st.reason;
  }
  function filter() {
    var si = D.stages.indexOf(st.stage), ri = D.reasons.indexOf(st.reason), q = st.q.toLowerCase();
    hits = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if ((si < 0 || r[1] === si) && (ri < 0 || r[2] === ri) && (!q || r[0].toLowerCase().indexOf(q) >= 0)) hits.push(i);
    }
  }
  function url(path) { return "thumbs/" + path.split("/").map(encodeURIComponent).join("/"); }
  function picture(path, key, why, ev, tag) {
    var box = document.createElement("div");
    box.className = "pic";
    if (path) {
      var img = document.createElement("img");
      img.loading = "lazy"; img.decoding = "async"; img.alt = key; img.src = url(path);
      box.appendChild(img);
    } else {
      var ph = document.createElement("div");
      ph.className = "ph";
      ph.textContent = "no preview (" + why + ")";
      box.appendChild(ph);
    }
    if (path && ev && ev.size && ev.boxes) {  // the viewBox scales as object-fit: contain does
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 " + ev.size[0] + " " + ev.size[1]);
      svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
      ev.boxes.forEach(function (b) {
        var rect = document.createElementNS(SVG, "rect");
        rect.setAttribute("x", b[0]); rect.setAttribute("y", b[1]);
        rect.setAttribute("width", b[2]); rect.setAttribute("height", b[3]);
        rect.setAttribute("class", "b-" + b[4]);
        rect.setAttribute("vector-effect", "non-scaling-stroke");
        svg.appendChild(rect);
      });
      box.appendChild(svg);
    }
    if (tag) {
      var t = document.createElement("span");
      t.className = "tag"; t.textContent = tag;
      box.appendChild(t);
    }
    return box;
  }
  function tile(r) {
    var f = document.createElement("figure"), ev = r[6] || {}, reason = D.reasons[r[2]];
    f.className = "tile " + D.statuses[r[3]] + (ev.dup ? " pair" : "");
    f.title = r[5];
    var pics = document.createElement("div");
    pics.className = "pics";
    pics.appendChild(picture(r[4], r[0], reason, ev, ev.dup ? "not kept" : ""));
    if (ev.dup) pics.appendChild(picture(ev.dup[1], ev.dup[0], "kept", null, "kept"));
    var c = document.createElement("figcaption"), b = document.createElement("b");
    b.textContent = D.stages[r[1]] + " \u00b7 " + reason;
    c.appendChild(b);
    c.appendChild(document.createElement("br"));
    c.appendChild(document.createTextNode(r[0].split("/").pop()));  // the whole name, wrapped; the key is in the title
    if (ev.dup) {
      c.appendChild(document.createElement("br"));
      c.appendChild(document.createTextNode("kept: " + ev.dup[0].split("/").pop() + (ev.dupm ? " (" + ev.dupm.join(", ") + ")" : "")));
    } else if (ev.d) {
      var w = document.createElement("span");
      w.className = "why"; w.textContent = ev.d;
      c.appendChild(w);
    }
    f.appendChild(pics); f.appendChild(c);
    return f;
  }
  function pages() { return Math.max(1, Math.ceil(hits.length / st.size)); }
  function render() {
    st.page = Math.min(Math.max(1, st.page), pages());
    var start = (st.page - 1) * st.size, end = Math.min(hits.length, start + st.size);
    var frag = document.createDocumentFragment();
    for (var i = start; i < end; i++) frag.appendChild(tile(rows[hits[i]]));
    gallery.replaceChildren(frag);
    info.textContent = hits.length ? ("showing " + (start + 1) + "\u2013" + end + " of " + hits.length) : "nothing matches";
    pageBox.value = st.page; pageBox.max = pages();
    el("g-pages").textContent = "of " + pages();
    el("g-prev").disabled = st.page <= 1; el("g-next").disabled = st.page >= pages();
    var h = [];
    if (st.stage) h.push("stage=" + encodeURIComponent(st.stage));
    if (st.reason) h.push("reason=" + encodeURIComponent(st.reason));
    if (st.page > 1) h.push("page=" + st.page);
    var want = h.length ? "#" + h.join("&") : "";
    if (location.hash !== want) {
      try { history.replaceState(null, "", want || location.pathname + location.search); } catch (e) { /* some file:// pages */ }
    }
  }
  function update(resetPage) { if (resetPage) st.page = 1; filter(); render(); }
  function fromHash() {
    var p = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("="); if (i > 0) p[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1));
    });
    st.stage = D.stages.indexOf(p.stage) >= 0 ? p.stage : "";
    st.reason = p.reason || "";
    st.page = parseInt(p.page || "1", 10) || 1;
    stageSel.value = st.stage; fillReasons(); filter(); render();
  }
  stageSel.addEventListener("change", function () { st.stage = stageSel.value; st.reason = ""; fillReasons(); update(true); });
  reasonSel.addEventListener("change", function () { st.reason = reasonSel.value; update(true); });
  keyBox.addEventListener("input", function () { st.q = keyBox.value; update(true); });
  sizeSel.addEventListener("change", function () { st.size = parseInt(sizeSel.value, 10); update(true); });
  el("g-prev").addEventListener("click", function () { st.page--; render(); });
  el("g-next").addEventListener("click", function () { st.page++; render(); });
  pageBox.addEventListener("change", function () { st.page = parseInt(pageBox.value, 10) || 1; render(); });
  window.addEventListener("hashchange", fromHash);
  fillStages();
  fromHash();
})();
"""
