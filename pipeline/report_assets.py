"""Style and script inlined into WORK/reports/index.html (no CDN, no network, no library).

The gallery script reads ``window.FACESIFT_REJECTED`` (reports/rejected.js, loaded by a plain
``<script src>`` so the page also works from ``file://``) and renders one page of tiles at a time,
so 100k+ rejections cost one array scan per filter change, never 100k DOM nodes.
"""

CSS = """
:root { --fg:#1d232a; --muted:#5b6670; --line:#d9dee3; --bg:#f6f7f9; --card:#fff; --accent:#2f6db5; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans KR", sans-serif;
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
.tile img, .tile .ph { display: block; width: 160px; height: 160px; object-fit: contain; margin: 0 auto; background: #eef0f3; }
.tile .ph { display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 12px;
            text-align: center; border: 1px dashed #b8c0c8; }
.tile figcaption { font-size: 11px; line-height: 1.3; margin-top: 4px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
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
  var rows = D.rows;  // [key, stage index, reason index, status index, thumbnail path or "", hover text]
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
  function tile(r) {
    var f = document.createElement("figure");
    f.className = "tile " + D.statuses[r[3]];
    f.title = r[5];
    var pic;
    if (r[4]) {
      pic = document.createElement("img");
      pic.loading = "lazy"; pic.decoding = "async"; pic.alt = r[0]; pic.src = url(r[4]);
    } else {
      pic = document.createElement("div");
      pic.className = "ph";
      pic.textContent = "no preview (" + D.reasons[r[2]] + ")";
    }
    pic.title = r[5];
    var c = document.createElement("figcaption"), b = document.createElement("b");
    b.textContent = D.stages[r[1]] + " \u00b7 " + D.reasons[r[2]];
    c.appendChild(b);
    c.appendChild(document.createElement("br"));
    var name = r[0].split("/").pop();  // AIHub names start with a long hash: keep the telling end
    c.appendChild(document.createTextNode(name.length > 34 ? "\u2026" + name.slice(-33) : name));
    f.appendChild(pic); f.appendChild(c);
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
