// lymphcad review viewer: plain JavaScript + Canvas 2D, no build step, nothing from another origin.
// The int16 volume arrives once (LPS order: columns patient right -> left, rows anterior -> posterior,
// slices inferior -> superior); slices are windowed through a lookup table and reformatted here.
// Radiological convention: axial as stored; coronal and sagittal with superior up; sagittal anterior left.
"use strict";
(function () {
  const TOKEN = document.querySelector('meta[name="lymphcad-token"]').content;
  const PRESETS = { 1: [350, 40, "mediastinum"], 2: [400, 50, "abdomen"], 3: [1500, -600, "lung"], 4: [1800, 400, "bone"] };
  const LETTERS = { axial: ["R", "L", "A", "P"], coronal: ["R", "L", "S", "I"], sagittal: ["A", "P", "S", "I"] };
  const AXIS = { axial: 0, coronal: 1, sagittal: 2 };
  const COLORS = { accept: "#00e676", reject: "#9e9e9e", add: "#40c4ff", gt: "#ff4081" };
  const $ = (sel) => document.querySelector(sel);

  const S = {
    cohort: null, caseId: null, info: null, vol: null, cursor: [0, 0, 0],
    ww: 350, wl: 40, lut: new Uint32Array(65536), threshold: 0.5, current: null,
    undo: [], addMode: false, hover: "axial", panes: {}, loadSeq: 0, firstDrawAt: null, busy: false,
  };
  window.__lymphcad = S;

  // ---------------------------------------------------------------- server
  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Lymphcad-Token": TOKEN },
      body: JSON.stringify(body),
    };
    const res = await fetch(path, opts);
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return res.json();
  }

  async function fetchVolume(caseId, onProgress) {
    const res = await fetch(`/api/cases/${encodeURIComponent(caseId)}/volume`);
    if (!res.ok) {
      let detail = `HTTP ${res.status}`;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    const total = Number(res.headers.get("content-length")) || 0;
    let buf;
    if (total && res.body && res.body.getReader) {
      buf = new ArrayBuffer(total);
      const bytes = new Uint8Array(buf);
      const reader = res.body.getReader();
      let at = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes.set(value, at);
        at += value.length;
        onProgress(at / total);
      }
    } else {
      buf = await res.arrayBuffer();
    }
    const hlen = new DataView(buf).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, hlen)));
    const [nz, ny, nx] = header.shape_zyx;
    const data = new Int16Array(buf, 4 + hlen, nz * ny * nx);
    return { header, data, nz, ny, nx, sp: header.spacing_zyx, origin: header.origin_xyz };
  }

  // ---------------------------------------------------------------- windowing
  function buildLut() {
    const lo = S.wl - S.ww / 2, scale = 255 / Math.max(S.ww, 1), lut = S.lut;
    for (let i = 0; i < 65536; i++) {
      let g = (i - 32768 - lo) * scale + 0.5;
      g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
      lut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
  }

  // ---------------------------------------------------------------- plane geometry
  // dims: [rows, cols, row mm, col mm, number of slices]
  function planeDims(plane) {
    const v = S.vol, [sz, sy, sx] = v.sp;
    if (plane === "axial") return [v.ny, v.nx, sy, sx, v.nz];
    if (plane === "coronal") return [v.nz, v.nx, sz, sx, v.ny];
    return [v.nz, v.ny, sz, sy, v.nx];
  }
  function toRC(plane, zyx) {
    const top = S.vol.nz - 1 - zyx[0];
    if (plane === "axial") return [zyx[1], zyx[2]];
    if (plane === "coronal") return [top, zyx[2]];
    return [top, zyx[1]];
  }
  function fromRC(plane, r, c, slice) {
    const z = S.vol.nz - 1 - r;
    if (plane === "axial") return [slice, r, c];
    if (plane === "coronal") return [z, slice, c];
    return [z, c, slice];
  }
  function sliceOf(plane) {
    const n = planeDims(plane)[4];
    return Math.min(n - 1, Math.max(0, Math.round(S.cursor[AXIS[plane]])));
  }

  // ---------------------------------------------------------------- panes
  class Pane {
    constructor(el) {
      this.el = el;
      this.plane = el.dataset.plane;
      this.canvas = el.querySelector("canvas.view");
      this.bar = el.querySelector("canvas.bar");
      this.ctx = this.canvas.getContext("2d");
      this.zoom = 1; this.panX = 0; this.panY = 0;
      this.off = document.createElement("canvas");
      this.offCtx = this.off.getContext("2d");
      this.img = null; this.img32 = null;
      new ResizeObserver(() => { this.resize(); this.draw(); }).observe(el);
      this.bind();
    }
    resize() {
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr)), h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
      if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
      const bh = Math.max(1, Math.round(this.bar.clientHeight * dpr)), bw = Math.max(1, Math.round(this.bar.clientWidth * dpr));
      if (this.bar.width !== bw || this.bar.height !== bh) { this.bar.width = bw; this.bar.height = bh; }
    }
    ensureImage(rows, cols) {
      if (!this.img || this.img.width !== cols || this.img.height !== rows) {
        this.off.width = cols; this.off.height = rows;
        this.img = this.offCtx.createImageData(cols, rows);
        this.img32 = new Uint32Array(this.img.data.buffer);
      }
    }
    // fill the offscreen image with the windowed slice (the reformat happens here)
    render() {
      const v = S.vol, d = v.data, lut = S.lut, [rows, cols] = planeDims(this.plane);
      this.ensureImage(rows, cols);
      const out = this.img32, k = sliceOf(this.plane), nx = v.nx, nxy = v.nx * v.ny;
      if (this.plane === "axial") {
        const base = k * nxy;
        for (let p = 0; p < nxy; p++) out[p] = lut[d[base + p] + 32768];
      } else if (this.plane === "coronal") {
        for (let r = 0; r < rows; r++) {
          const base = (v.nz - 1 - r) * nxy + k * nx, o = r * cols;
          for (let c = 0; c < cols; c++) out[o + c] = lut[d[base + c] + 32768];
        }
      } else {
        for (let r = 0; r < rows; r++) {
          const base = (v.nz - 1 - r) * nxy + k, o = r * cols;
          for (let c = 0, s = base; c < cols; c++, s += nx) out[o + c] = lut[d[s] + 32768];
        }
      }
      this.offCtx.putImageData(this.img, 0, 0);
    }
    // screen transform: pixels per mm, and the screen position of the image's top-left corner
    frame() {
      const [rows, cols, rmm, cmm] = planeDims(this.plane), W = this.canvas.width, H = this.canvas.height;
      const s = Math.min(W / (cols * cmm), H / (rows * rmm)) * this.zoom;
      const x0 = (W - cols * cmm * s) / 2 + this.panX, y0 = (H - rows * rmm * s) / 2 + this.panY;
      return { s, x0, y0, rows, cols, rmm, cmm };
    }
    toScreen(zyx) {
      const f = this.frame(), [r, c] = toRC(this.plane, zyx);
      return [f.x0 + (c + 0.5) * f.cmm * f.s, f.y0 + (r + 0.5) * f.rmm * f.s];
    }
    fromScreen(px, py) {
      const f = this.frame();
      const c = (px - f.x0) / (f.cmm * f.s) - 0.5, r = (py - f.y0) / (f.rmm * f.s) - 0.5;
      return fromRC(this.plane, r, c, S.cursor[AXIS[this.plane]]);
    }
    draw() {
      const ctx = this.ctx, W = this.canvas.width, H = this.canvas.height;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, W, H);
      if (!S.vol) return;
      this.render();
      const f = this.frame();
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(this.off, f.x0, f.y0, f.cols * f.cmm * f.s, f.rows * f.rmm * f.s);
      this.drawOverlay(f);
      this.drawBar();
    }
    drawOverlay(f) {
      const ctx = this.ctx, dpr = window.devicePixelRatio || 1, W = this.canvas.width, H = this.canvas.height;
      const ax = AXIS[this.plane], spAx = S.vol.sp[ax], here = S.cursor[ax];
      // crosshair with a gap around its centre
      const [cx, cy] = this.toScreen(S.cursor), gap = 14 * dpr;
      ctx.strokeStyle = "rgba(120, 200, 255, 0.45)";
      ctx.lineWidth = 1 * dpr;
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.moveTo(0, cy); ctx.lineTo(cx - gap, cy); ctx.moveTo(cx + gap, cy); ctx.lineTo(W, cy);
      ctx.moveTo(cx, 0); ctx.lineTo(cx, cy - gap); ctx.moveTo(cx, cy + gap); ctx.lineTo(cx, H);
      ctx.stroke();
      // ground truth (dotted) then findings
      for (const t of S.info.truth) {
        const diam = t.short_axis_mm || t.long_axis_mm || 10;
        this.circle(t.center_zyx, diam / 2, here, spAx, f, COLORS.gt, [2 * dpr, 3 * dpr], 1.5, `GT${t.node_id}`, false, true);
      }
      for (const x of visibleFindings()) {
        const col = findingColor(x), cur = x.finding_id === S.current;
        const dash = x.decision === "reject" ? [5 * dpr, 4 * dpr] : [];
        const label = findingLabel(x);
        this.circle(x.center_zyx, (x.diameter_mm || 10) / 2, here, spAx, f, col, dash, cur ? 3 : 1.6, label, cur);
      }
      if (S.drag && S.drag.kind === "add" && S.drag.pane === this) {
        const d = S.drag, r = Math.hypot(d.x - d.x0, d.y - d.y0);
        ctx.strokeStyle = COLORS.add; ctx.setLineDash([4 * dpr, 3 * dpr]); ctx.lineWidth = 1.5 * dpr;
        ctx.beginPath(); ctx.arc(d.x0, d.y0, Math.max(r, 3 * dpr), 0, 2 * Math.PI); ctx.stroke(); ctx.setLineDash([]);
      }
      // text: plane, orientation letters, slice, window
      const fs = 13 * dpr, pad = 8 * dpr, L = LETTERS[this.plane];
      ctx.font = `600 ${fs}px system-ui, sans-serif`;
      ctx.fillStyle = "rgba(235, 235, 240, 0.92)";
      ctx.shadowColor = "#000"; ctx.shadowBlur = 3 * dpr;
      ctx.textBaseline = "middle";
      ctx.textAlign = "left"; ctx.fillText(L[0], pad, H / 2);
      ctx.textAlign = "right"; ctx.fillText(L[1], W - pad, H / 2);
      ctx.textAlign = "center"; ctx.textBaseline = "top"; ctx.fillText(L[2], W / 2, pad);
      ctx.textBaseline = "bottom"; ctx.fillText(L[3], W / 2, H - pad);
      ctx.font = `${12 * dpr}px system-ui, sans-serif`;
      ctx.textAlign = "left"; ctx.textBaseline = "top";
      ctx.fillStyle = "rgba(200, 200, 210, 0.9)";
      ctx.fillText(this.plane.toUpperCase(), pad, pad);
      const k = sliceOf(this.plane), n = planeDims(this.plane)[4];
      const pos = S.vol.origin[2 - ax] + k * spAx;
      const posName = ["z", "y", "x"][ax];
      ctx.textBaseline = "bottom";
      ctx.fillText(`${k + 1}/${n}   ${posName} ${pos.toFixed(1)} mm`, pad, H - pad);
      ctx.textAlign = "right";
      ctx.fillText(`W ${Math.round(S.ww)}  L ${Math.round(S.wl)}${this.zoom !== 1 ? `   ×${this.zoom.toFixed(1)}` : ""}`, W - pad, H - pad);
      ctx.shadowBlur = 0;
    }
    circle(zyx, rmm, here, spAx, f, color, dash, width, label, current, below) {
      const ax = AXIS[this.plane], dmm = (here - zyx[ax]) * spAx;
      if (Math.abs(dmm) > rmm) return;
      const ctx = this.ctx, dpr = window.devicePixelRatio || 1;
      const rr = Math.sqrt(rmm * rmm - dmm * dmm) * f.s, [x, y] = this.toScreen(zyx);
      const central = Math.abs(dmm) <= spAx / 2 + 1e-6;
      ctx.globalAlpha = central ? 1 : 0.55;
      ctx.strokeStyle = color; ctx.lineWidth = width * dpr; ctx.setLineDash(dash);
      if (current) { ctx.shadowColor = color; ctx.shadowBlur = 8 * dpr; }
      ctx.beginPath(); ctx.arc(x, y, Math.max(rr, 2 * dpr), 0, 2 * Math.PI); ctx.stroke();
      ctx.shadowBlur = 0; ctx.setLineDash([]);
      ctx.font = `${current ? "700 " : ""}${12 * dpr}px system-ui, sans-serif`;
      ctx.fillStyle = color;
      if (below) { ctx.textAlign = "right"; ctx.textBaseline = "top"; ctx.fillText(label, x - rr * 0.72 - 2 * dpr, y + rr * 0.72); }
      else { ctx.textAlign = "left"; ctx.textBaseline = "bottom"; ctx.fillText(label, x + rr * 0.72 + 2 * dpr, y - rr * 0.72); }
      ctx.globalAlpha = 1;
    }
    // slice scrollbar: position and a tick where each finding lies
    drawBar() {
      const b = this.bar, ctx = b.getContext("2d"), W = b.width, H = b.height, n = planeDims(this.plane)[4];
      const ax = AXIS[this.plane], y = (idx) => this.barY(idx, n, H);
      ctx.fillStyle = "#15161a"; ctx.fillRect(0, 0, W, H);
      for (const t of S.info.truth) { ctx.fillStyle = COLORS.gt; ctx.fillRect(0, y(t.center_zyx[ax]) - 1, W / 2, 2); }
      for (const x of visibleFindings()) { ctx.fillStyle = findingColor(x); ctx.fillRect(W / 2, y(x.center_zyx[ax]) - 1, W / 2, 3); }
      ctx.fillStyle = "rgba(120, 200, 255, 0.9)";
      ctx.fillRect(0, y(sliceOf(this.plane)) - 2, W, 4);
    }
    // axial: superior at the top; coronal: anterior at the top; sagittal: patient right at the top
    barY(idx, n, H) { const f = n > 1 ? idx / (n - 1) : 0.5; return this.plane === "axial" ? (1 - f) * (H - 4) + 2 : f * (H - 4) + 2; }
    barIndex(py, n, H) { const f = Math.min(1, Math.max(0, (py - 2) / (H - 4))); return Math.round((this.plane === "axial" ? 1 - f : f) * (n - 1)); }
    setSlice(idx) {
      const n = planeDims(this.plane)[4];
      S.cursor[AXIS[this.plane]] = Math.min(n - 1, Math.max(0, idx));
      drawAll();
    }
    bind() {
      const c = this.canvas, dpr = () => window.devicePixelRatio || 1;
      const pos = (e) => { const r = c.getBoundingClientRect(); return [(e.clientX - r.left) * dpr(), (e.clientY - r.top) * dpr()]; };
      c.addEventListener("mouseenter", () => { S.hover = this.plane; });
      c.addEventListener("contextmenu", (e) => e.preventDefault());
      c.addEventListener("wheel", (e) => {
        if (!S.vol) return;
        e.preventDefault();
        if (e.ctrlKey) { this.zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, ...pos(e)); return; }
        this.setSlice(sliceOf(this.plane) + (e.deltaY > 0 ? -1 : 1) * (this.plane === "axial" ? 1 : 1));
      }, { passive: false });
      c.addEventListener("dblclick", () => { this.zoom = 1; this.panX = this.panY = 0; this.draw(); });
      c.addEventListener("mousedown", (e) => {
        if (!S.vol) return;
        const [x, y] = pos(e);
        const kind = e.button === 2 || e.button === 1 ? "pan" : (S.addMode || e.shiftKey ? "add" : "click");
        S.drag = { pane: this, kind, x0: x, y0: y, x, y, ww: S.ww, wl: S.wl, px: this.panX, py: this.panY, moved: false };
        e.preventDefault();
      });
      this.bar.addEventListener("mousedown", (e) => {
        if (!S.vol) return;
        const move = (ev) => {
          const r = this.bar.getBoundingClientRect();
          this.setSlice(this.barIndex((ev.clientY - r.top) * dpr(), planeDims(this.plane)[4], this.bar.height));
        };
        move(e);
        const up = () => { window.removeEventListener("mousemove", move); window.removeEventListener("mouseup", up); };
        window.addEventListener("mousemove", move); window.addEventListener("mouseup", up);
      });
    }
    zoomAt(factor, px, py) {
      const z = Math.min(20, Math.max(0.5, this.zoom * factor)), k = z / this.zoom;
      const W = this.canvas.width, H = this.canvas.height;
      this.panX = (this.panX - (px - W / 2)) * k + (px - W / 2);
      this.panY = (this.panY - (py - H / 2)) * k + (py - H / 2);
      this.zoom = z;
      this.draw();
    }
  }

  window.addEventListener("mousemove", (e) => {
    const d = S.drag;
    if (!d) return;
    const r = d.pane.canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    d.x = (e.clientX - r.left) * dpr; d.y = (e.clientY - r.top) * dpr;
    const dx = d.x - d.x0, dy = d.y - d.y0;
    if (Math.hypot(dx, dy) > 3 * dpr) d.moved = true;
    if (!d.moved) return;
    if (d.kind === "click") d.kind = "window";
    if (d.kind === "window") {
      S.ww = Math.max(1, d.ww + dx * 2 / dpr); S.wl = d.wl + dy * 2 / dpr;
      buildLut(); drawAll();
    } else if (d.kind === "pan") {
      d.pane.panX = d.px + dx; d.pane.panY = d.py + dy; d.pane.draw();
    } else if (d.kind === "add") {
      d.pane.draw();
    }
  });
  window.addEventListener("mouseup", () => {
    const d = S.drag;
    if (!d) return;
    S.drag = null;
    const p = d.pane;
    if (d.kind === "click") {
      const hit = findingAt(p, d.x0, d.y0);
      if (hit) { select(hit.finding_id); return; }
      const zyx = p.fromScreen(d.x0, d.y0);
      S.cursor = clampZyx(zyx);
      drawAll();
    } else if (d.kind === "add") {
      const zyx = clampZyx(p.fromScreen(d.x0, d.y0));
      const f = p.frame(), rmm = Math.hypot(d.x - d.x0, d.y - d.y0) / f.s;
      const diameter = d.moved && rmm >= 1 ? Math.round(rmm * 2 * 10) / 10 : null;
      setAddMode(false);
      decide({ action: "add", center_zyx: zyx, diameter_mm: diameter });
    }
  });

  function clampZyx(zyx) {
    const v = S.vol, lim = [v.nz - 1, v.ny - 1, v.nx - 1];
    return zyx.map((q, i) => Math.min(lim[i], Math.max(0, q)));
  }

  function drawAll() { for (const p of Object.values(S.panes)) p.draw(); }

  // ---------------------------------------------------------------- findings
  function probColor(p) {
    const h = 55 * (1 - Math.min(1, Math.max(0, (p - 0.3) / 0.7)));  // yellow (low) -> red (high)
    return `hsl(${h.toFixed(0)}, 100%, 55%)`;
  }
  function findingColor(x) {
    if (x.decision === "accept") return COLORS.accept;
    if (x.decision === "reject") return COLORS.reject;
    if (x.kind === "added") return COLORS.add;
    return probColor(x.probability);
  }
  function findingLabel(x) {
    const mark = x.decision === "accept" ? " ✓" : x.decision === "reject" ? " ✗" : x.kind === "added" ? " +" : "";
    return x.kind === "added" ? `${x.finding_id}${mark}` : `${x.finding_id.slice(1)} ${x.probability.toFixed(2)}${mark}`;
  }
  // detections at or above the threshold (by probability), then any decided below it, then added ones
  function visibleFindings() {
    if (!S.info) return [];
    return S.info.findings.filter((x) => x.kind === "added" || x.probability >= S.threshold || x.decision);
  }
  function findingAt(pane, px, py) {
    const ax = AXIS[pane.plane], f = pane.frame();
    let best = null, bestD = Infinity;
    for (const x of visibleFindings()) {
      const rmm = (x.diameter_mm || 10) / 2, dmm = (S.cursor[ax] - x.center_zyx[ax]) * S.vol.sp[ax];
      if (Math.abs(dmm) > rmm) continue;
      const [sx, sy] = pane.toScreen(x.center_zyx), dist = Math.hypot(px - sx, py - sy);
      const rr = Math.max(Math.sqrt(rmm * rmm - dmm * dmm) * f.s, 8);
      if (dist <= rr && dist < bestD) { best = x; bestD = dist; }
    }
    return best;
  }
  function select(fid) {
    const x = S.info.findings.find((q) => q.finding_id === fid);
    if (!x) return;
    S.current = fid;
    S.cursor = x.center_zyx.slice();
    drawAll();
    renderFindings();
    const li = document.querySelector(`#findings li[data-id="${fid}"]`);
    if (li) li.scrollIntoView({ block: "nearest" });
  }
  function step(dir) {
    const list = visibleFindings();
    if (!list.length) { toast("no findings at this threshold"); return; }
    const i = list.findIndex((x) => x.finding_id === S.current);
    const j = i < 0 ? (dir > 0 ? 0 : list.length - 1) : Math.min(list.length - 1, Math.max(0, i + dir));
    select(list[j].finding_id);
  }

  async function decide(body) {
    if (!S.caseId) return;
    const caseId = S.caseId;
    try {
      const before = new Set(S.info.findings.map((x) => x.finding_id));
      const state = await api(`/api/cases/${encodeURIComponent(caseId)}/decisions`, body);
      if (caseId !== S.caseId) return;
      applyState(state);
      if (body.action === "add") {
        const added = state.findings.find((x) => !before.has(x.finding_id));
        if (added) { S.undo.push(added.finding_id); S.current = added.finding_id; toast(`${added.finding_id} added`); }
      } else if (body.action === "undo") {
        toast(`${body.finding_id}: decision undone`);
      } else {
        S.undo.push(body.finding_id);
        toast(`${body.finding_id} ${body.action === "accept" ? "accepted" : "rejected"}`);
      }
      drawAll(); renderFindings(); refreshCohort();
    } catch (e) {
      toast(String(e.message || e), true);
    }
  }
  function applyState(state) {
    S.info.findings = state.findings;
    S.info.revision = state.revision;
  }

  // ---------------------------------------------------------------- side panels
  function renderFindings() {
    const ol = $("#findings"), list = visibleFindings();
    ol.textContent = "";
    for (const x of list) {
      const li = document.createElement("li");
      li.dataset.id = x.finding_id;
      if (x.decision) li.classList.add(x.decision);
      if (x.finding_id === S.current) li.classList.add("current");
      const dot = document.createElement("span"); dot.className = "dot"; dot.style.background = findingColor(x);
      const id = document.createElement("span"); id.textContent = x.finding_id;
      const p = document.createElement("span"); p.textContent = x.kind === "added" ? "added" : `p ${x.probability.toFixed(2)}`;
      const dm = document.createElement("span"); dm.textContent = x.diameter_mm ? `${x.diameter_mm.toFixed(1)} mm` : "–";
      const mk = document.createElement("span"); mk.className = "mark";
      mk.textContent = x.decision === "accept" ? "✓" : x.decision === "reject" ? "✗" : x.decision === "add" ? "+" : "";
      li.append(dot, id, p, dm, mk);
      li.addEventListener("click", () => select(x.finding_id));
      ol.append(li);
    }
    const dets = S.info.findings.filter((x) => x.kind === "detection");
    const above = dets.filter((x) => x.probability >= S.threshold);
    const done = above.filter((x) => x.decision).length;
    $("#findings-count").textContent = `${done}/${above.length} reviewed`;
    const hidden = dets.length - list.filter((x) => x.kind === "detection").length;
    $("#hidden-count").textContent = hidden ? `${hidden} detection(s) below the threshold hidden` : "";
  }

  function renderFindingsEmpty() {
    $("#findings").textContent = "";
    $("#findings-count").textContent = "";
    $("#hidden-count").textContent = "";
  }

  function renderCases() {
    const tb = $("#case-table tbody");
    tb.textContent = "";
    let done = 0;
    for (const c of S.cohort.cases) {
      const tr = document.createElement("tr");
      tr.className = "case" + (c.case_id === S.caseId ? " current" : "");
      tr.dataset.id = c.case_id;
      const st = c.status === "done" ? "done" : c.status === "in progress" ? "prog" : "";
      if (c.status === "done") done++;
      const cells = [c.case_id, String(c.n_above), String(c.n_truth), `${c.n_reviewed}/${c.n_above}${c.n_added ? ` +${c.n_added}` : ""}`];
      cells.forEach((t, i) => { const td = document.createElement("td"); td.textContent = t; if (i === 3 && st) td.className = st; tr.append(td); });
      tr.title = `${c.region}; ${c.n_detections} detections in all; ${c.status}`;
      tr.addEventListener("click", () => { location.hash = `case=${encodeURIComponent(c.case_id)}`; });
      tb.append(tr);
    }
    $("#progress").textContent = `${done}/${S.cohort.cases.length} cases done`;
  }

  async function refreshCohort() {
    try { S.cohort = await api("/api/cohort"); renderCases(); } catch (e) { /* keep the old list */ }
  }

  function toast(text, error) {
    const t = $("#toast");
    t.textContent = text; t.hidden = false; t.classList.toggle("error", !!error);
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, error ? 6000 : 1800);
  }

  function setWindow(n) {
    const p = PRESETS[n];
    if (!p) return;
    S.ww = p[0]; S.wl = p[1]; buildLut(); drawAll();
  }
  function setAddMode(on) {
    S.addMode = on;
    $("#add-mode").classList.toggle("on", on);
    for (const p of Object.values(S.panes)) p.canvas.style.cursor = on ? "cell" : "crosshair";
  }

  // ---------------------------------------------------------------- cases
  async function openCase(caseId) {
    const seq = ++S.loadSeq;
    S.caseId = caseId; S.current = null; S.undo = [];
    S.vol = null; S.info = null; S.ready = null;  // let the previous case's voxels go before the next arrive
    drawAll(); renderFindingsEmpty();
    $("#case-title").textContent = caseId;
    $("#loading").hidden = false; $("#loading").textContent = "Loading…";
    renderCases();
    try {
      const [info, vol] = await Promise.all([
        api(`/api/cases/${encodeURIComponent(caseId)}`),
        fetchVolume(caseId, (f) => { if (seq === S.loadSeq) $("#loading").textContent = `Loading ${Math.round(f * 100)} %`; }),
      ]);
      if (seq !== S.loadSeq) return;
      S.info = info; S.vol = vol;
      S.cursor = [Math.floor(vol.nz / 2), Math.floor(vol.ny / 2), Math.floor(vol.nx / 2)];
      const first = visibleFindings()[0];
      if (first) S.cursor = first.center_zyx.slice();
      if (S.firstWindow === undefined) { S.firstWindow = true; setWindow(info.region === "abdominal" ? 2 : 1); }
      for (const p of Object.values(S.panes)) { p.zoom = 1; p.panX = p.panY = 0; }
      $("#case-title").textContent = `${caseId} · ${info.region}`;
      const mb = (vol.data.byteLength / 1e6).toFixed(0), sp = [...vol.sp].reverse().map((v) => v.toFixed(2)).join(" × ");
      $("#volume-info").textContent = `${vol.nx} × ${vol.ny} × ${vol.nz} voxels of ${sp} mm (x × y × z), ${mb} MB in this tab`;
      const notice = info.notice || vol.header.notice;
      $("#notice").hidden = !notice; $("#notice").textContent = notice || "";
      $("#loading").hidden = true;
      drawAll(); renderFindings();
      if (S.firstDrawAt === null) S.firstDrawAt = performance.now();
      S.ready = caseId;
    } catch (e) {
      if (seq === S.loadSeq) { $("#loading").textContent = `Could not load ${caseId}: ${e.message || e}`; }
    }
  }

  async function poll() {
    if (!S.caseId || !S.info || S.ready !== S.caseId || document.hidden) return;
    try {
      const state = await api(`/api/cases/${encodeURIComponent(S.caseId)}/state`);
      if (state.case_id === S.caseId && state.revision !== S.info.revision) {
        applyState(state); drawAll(); renderFindings(); refreshCohort();
      }
    } catch (e) { /* server gone: the next poll tries again */ }
  }

  function caseFromHash() {
    const m = /case=([^&]+)/.exec(location.hash);
    return m ? decodeURIComponent(m[1]) : null;
  }
  function neighbourCase(dir) {
    const ids = S.cohort.cases.map((c) => c.case_id), i = ids.indexOf(S.caseId), j = i + dir;
    if (j >= 0 && j < ids.length) location.hash = `case=${encodeURIComponent(ids[j])}`;
  }

  // ---------------------------------------------------------------- keys
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.altKey || e.metaKey || (e.ctrlKey && e.key !== "0")) return;
    const pane = S.panes[S.hover] || S.panes.axial;
    const k = e.key;
    if (k === "Escape") { setAddMode(false); $("#help").hidden = true; return; }
    if (k === "?") { $("#help").hidden = !$("#help").hidden; return; }
    if (k === "[") { neighbourCase(-1); return; }
    if (k === "]") { neighbourCase(1); return; }
    if (!S.vol) return;
    if (k === "j") step(1);
    else if (k === "k") step(-1);
    else if (k === "a" || k === "r") {
      if (!S.current) { toast("select a finding first (j / k or click it)"); return; }
      decide({ action: k === "a" ? "accept" : "reject", finding_id: S.current });
    } else if (k === "u") {
      const fid = S.undo.pop();
      if (!fid) { toast("nothing to undo"); return; }
      decide({ action: "undo", finding_id: fid });
    } else if (k === "n") setAddMode(!S.addMode);
    else if (PRESETS[k]) setWindow(k);
    else if (k === "ArrowUp" || k === "PageUp") pane.setSlice(sliceOf(pane.plane) + (k === "PageUp" ? 10 : 1));
    else if (k === "ArrowDown" || k === "PageDown") pane.setSlice(sliceOf(pane.plane) - (k === "PageDown" ? 10 : 1));
    else if (k === "+" || k === "=") pane.zoomAt(1.25, pane.canvas.width / 2, pane.canvas.height / 2);
    else if (k === "-") pane.zoomAt(1 / 1.25, pane.canvas.width / 2, pane.canvas.height / 2);
    else if (k === "0") { for (const p of Object.values(S.panes)) { p.zoom = 1; p.panX = p.panY = 0; } drawAll(); }
    else return;
    e.preventDefault();
  });

  // ---------------------------------------------------------------- benchmark hook
  // Redraw one pane n times on successive slices; returns per-redraw times in ms (a 1-pixel read-back
  // makes each redraw finish before the clock stops).
  S.timeRedraw = function (plane, n) {
    const pane = S.panes[plane], times = [], count = planeDims(plane)[4];
    for (let i = 0; i < n; i++) {
      S.cursor[AXIS[plane]] = i % count;
      const t0 = performance.now();
      pane.draw();
      pane.ctx.getImageData(0, 0, 1, 1);
      times.push(performance.now() - t0);
    }
    return times;
  };

  // ---------------------------------------------------------------- start
  async function start() {
    for (const el of document.querySelectorAll(".pane")) S.panes[el.dataset.plane] = new Pane(el);
    buildLut();
    $("#threshold").addEventListener("input", (e) => {
      S.threshold = Number(e.target.value);
      $("#threshold-value").textContent = S.threshold.toFixed(2);
      drawAll(); renderFindings();
    });
    // give the keys back to the viewer once the slider is let go
    $("#threshold").addEventListener("change", (e) => e.target.blur());
    $("#add-mode").addEventListener("click", (e) => { setAddMode(!S.addMode); e.currentTarget.blur(); });
    $("#help-btn").addEventListener("click", () => { $("#help").hidden = !$("#help").hidden; });
    $("#help").addEventListener("click", () => { $("#help").hidden = true; });
    for (const b of document.querySelectorAll("#presets button")) b.addEventListener("click", () => { setWindow(b.dataset.preset); b.blur(); });
    $("#export").addEventListener("click", async (e) => {
      e.currentTarget.blur();
      try {
        const r = await api("/api/export", {});
        toast(`exported ${r.n_accepted} accepted + ${r.n_added} added → ${r.files[0]} (${r.sr})`);
      } catch (e) { toast(String(e.message || e), true); }
    });
    window.addEventListener("hashchange", () => { const c = caseFromHash(); if (c && c !== S.caseId) openCase(c); });
    S.cohort = await api("/api/cohort");
    S.threshold = S.cohort.threshold;
    $("#threshold").value = String(S.threshold);
    $("#threshold-value").textContent = S.threshold.toFixed(2);
    $("#cohort-name").textContent = S.cohort.name;
    const cite = S.cohort.citation.length ? ` · Cite: ${S.cohort.citation.join(" · ")}` : "";
    $("#terms").textContent = `Data: ${S.cohort.source} · Licence: ${S.cohort.license}${cite}`;
    $("#terms").title = $("#terms").textContent;
    renderCases();
    const wanted = caseFromHash();
    const first = S.cohort.cases.find((c) => c.status !== "done") || S.cohort.cases[0];
    const id = wanted && S.cohort.cases.some((c) => c.case_id === wanted) ? wanted : first && first.case_id;
    if (id) openCase(id);
    setInterval(poll, 2000);
  }
  start();
})();
