// rnnlab lab: minimal canvas charts (a line chart, a heat map, a per-unit range chart), written for this page
// so that it needs nothing from elsewhere. Part of rnnlab, MIT licence.
"use strict";
const Plot = (() => {
  const PAD = {l: 52, r: 12, t: 22, b: 30};
  const COLORS = ["#2a6fdb", "#e0652b", "#2b9e5a", "#9b3fc4", "#c43f6a", "#5a6b7d"];
  // viridis at five stops, interpolated: perceptually even, readable when printed grey
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

  function viridis(u) {
    u = Math.min(1, Math.max(0, u)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(u)), f = u - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-2) return v.toExponential(0);
    return +v.toPrecision(3) + "";
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    const m = [1, 2, 5, 10].find(k => (hi - lo) / (k * step) <= n) * step;
    const out = [];
    for (let v = Math.ceil(lo / m) * m; v <= hi + 1e-9 * m; v += m) out.push(v);
    return out;
  }

  function frame(ctx, w, h, title, xLabel, yLabel) {
    ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.textAlign = "left"; ctx.setLineDash([]); ctx.lineWidth = 1;  // a fresh state
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    ctx.fillStyle = "#1d2430"; ctx.font = "600 12px system-ui, sans-serif";
    ctx.fillText(title, PAD.l, 14);
    ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#556";
    if (xLabel) { ctx.textAlign = "right"; ctx.fillText(xLabel, w - PAD.r, h - 4); ctx.textAlign = "left"; }
    if (yLabel) { ctx.save(); ctx.translate(11, PAD.t + (h - PAD.t - PAD.b) / 2); ctx.rotate(-Math.PI / 2);
                  ctx.textAlign = "center"; ctx.fillText(yLabel, 0, 0); ctx.restore(); }
  }

  function empty(ctx, w, h, text) {
    ctx.fillStyle = "#99a"; ctx.font = "12px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(text, w / 2, h / 2); ctx.textAlign = "left";
  }

  // series: [{name, xs, ys, color, dash}]; logY: values <= 0 or null are left out; hline: {y, label}
  function line(canvas, o) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    frame(ctx, w, h, o.title, o.xLabel, o.yLabel);
    const tr = v => (o.logY ? Math.log10(v) : v);
    const ok = v => v !== null && v !== undefined && isFinite(v) && (!o.logY || v > 0);
    let xs = [], ys = [];
    for (const s of o.series) s.xs.forEach((x, i) => { if (ok(s.ys[i])) { xs.push(x); ys.push(tr(s.ys[i])); } });
    if (o.hline && ok(o.hline.y)) ys.push(tr(o.hline.y));
    let n = 0;
    if (!xs.length) { empty(ctx, w, h, o.empty || "waiting for data"); canvas.dataset.points = 0; return; }
    let x0 = o.xMin ?? Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x1 === x0) x1 = x0 + 1;
    if (y1 - y0 < 1e-12) { y0 -= o.logY ? 0.5 : 0.5 * Math.abs(y0 || 1); y1 += o.logY ? 0.5 : 0.5 * Math.abs(y1 || 1); }
    const pw = w - PAD.l - PAD.r, ph = h - PAD.t - PAD.b;
    const X = x => PAD.l + (x - x0) / (x1 - x0) * pw, Y = y => PAD.t + (1 - (y - y0) / (y1 - y0)) * ph;
    ctx.strokeStyle = "#e6e8ee"; ctx.fillStyle = "#556"; ctx.font = "10px system-ui, sans-serif"; ctx.lineWidth = 1;
    // log axes: a tick per decade, or values between when the data spans less than two decades
    const decades = o.logY && Math.ceil(y1) - Math.floor(y0) >= 2;
    const yt = !o.logY ? ticks(y0, y1, 5) : decades ? ticks(Math.floor(y0), Math.ceil(y1), 5).filter(v => v >= y0 - 1e-9 && v <= y1 + 1e-9)
             : ticks(Math.pow(10, y0), Math.pow(10, y1), 4).filter(v => v > 0).map(Math.log10);
    for (const v of yt) { ctx.beginPath(); ctx.moveTo(PAD.l, Y(v)); ctx.lineTo(w - PAD.r, Y(v)); ctx.stroke();
      ctx.textAlign = "right"; ctx.fillText(decades ? "1e" + Math.round(v) : fmt(o.logY ? Math.pow(10, v) : v), PAD.l - 4, Y(v) + 3); }
    ctx.textAlign = "center";
    for (const v of ticks(x0, x1, 6)) ctx.fillText(fmt(v), X(v), h - PAD.b + 13);
    ctx.textAlign = "left";
    if (o.hline && ok(o.hline.y)) {
      ctx.strokeStyle = "#888"; ctx.setLineDash([5, 4]); ctx.beginPath();
      ctx.moveTo(PAD.l, Y(tr(o.hline.y))); ctx.lineTo(w - PAD.r, Y(tr(o.hline.y))); ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = "#666"; ctx.fillText(o.hline.label, PAD.l + 4, Y(tr(o.hline.y)) - 3);
    }
    let lx = w - PAD.r - 4;
    o.series.forEach((s, k) => {
      const c = s.color || COLORS[k % COLORS.length];
      ctx.strokeStyle = c; ctx.lineWidth = 1.6; ctx.setLineDash(s.dash || []); ctx.beginPath();
      let pen = false;
      s.xs.forEach((x, i) => {
        if (!ok(s.ys[i])) { pen = false; return; }
        const px = X(x), py = Y(tr(s.ys[i]));
        pen ? ctx.lineTo(px, py) : ctx.moveTo(px, py); pen = true; n++;
      });
      ctx.stroke(); ctx.setLineDash([]);
      if (s.name) { ctx.fillStyle = c; ctx.textAlign = "right"; ctx.font = "11px system-ui, sans-serif";
                    ctx.fillText(s.name, lx, 14); lx -= ctx.measureText(s.name).width + 12; ctx.textAlign = "left"; }
    });
    canvas.dataset.points = n;
  }

  // rows: arrays over t (one per measurement, oldest first), drawn as log10; rowKeys: the steps they were taken at
  function heat(canvas, o) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    frame(ctx, w, h, o.title, o.xLabel, o.yLabel);
    const rows = o.rows;
    canvas.dataset.rows = rows.length;
    if (!rows.length) { empty(ctx, w, h, o.empty || "waiting for data"); return; }
    let lo = Infinity, hi = -Infinity;
    for (const r of rows) for (const v of r) if (v > 0 && isFinite(v)) { const l = Math.log10(v); lo = Math.min(lo, l); hi = Math.max(hi, l); }
    if (!isFinite(lo)) { empty(ctx, w, h, "all zero"); return; }
    if (hi - lo < 1e-9) hi = lo + 1;
    const bar = 44, pw = w - PAD.l - PAD.r - bar, ph = h - PAD.t - PAD.b, T = rows[0].length;
    const cw = pw / T, rh = ph / rows.length;
    rows.forEach((r, j) => r.forEach((v, t) => {   // newest at the top
      ctx.fillStyle = v > 0 && isFinite(v) ? viridis((Math.log10(v) - lo) / (hi - lo)) : "#000";
      ctx.fillRect(PAD.l + t * cw, PAD.t + (rows.length - 1 - j) * rh, Math.ceil(cw), Math.ceil(rh));
    }));
    ctx.fillStyle = "#556"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "center";
    for (const v of ticks(0, T - 1, 6)) ctx.fillText(fmt(v), PAD.l + (v + 0.5) * cw, h - PAD.b + 13);
    ctx.textAlign = "right";
    const keys = o.rowKeys || [];
    if (keys.length) { ctx.fillText(fmt(keys[keys.length - 1]), PAD.l - 4, PAD.t + 9); ctx.fillText(fmt(keys[0]), PAD.l - 4, PAD.t + ph); }
    const bx = w - PAD.r - bar + 10;                 // the colour bar, in decades
    for (let k = 0; k < ph; k++) { ctx.fillStyle = viridis(1 - k / ph); ctx.fillRect(bx, PAD.t + k, 10, 1); }
    ctx.fillStyle = "#556"; ctx.textAlign = "left";
    ctx.fillText("1e" + hi.toFixed(0), bx + 12, PAD.t + 8); ctx.fillText("1e" + lo.toFixed(0), bx + 12, PAD.t + ph);
  }

  // per unit: p10..p90 as a bar, p50 as a dot; units sorted by their median; y in [0, 1]
  function ranges(canvas, o) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    frame(ctx, w, h, o.title, o.xLabel, o.yLabel);
    if (!o.p50 || !o.p50.length) { empty(ctx, w, h, o.empty || "waiting for data"); canvas.dataset.points = 0; return; }
    const H = o.p50.length, pw = w - PAD.l - PAD.r, ph = h - PAD.t - PAD.b;
    const X = j => PAD.l + (j + 0.5) / H * pw, Y = v => PAD.t + (1 - v) * ph;
    ctx.strokeStyle = "#e6e8ee"; ctx.fillStyle = "#556"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "right";
    for (const v of [0, 0.25, 0.5, 0.75, 1]) { ctx.beginPath(); ctx.moveTo(PAD.l, Y(v)); ctx.lineTo(w - PAD.r, Y(v)); ctx.stroke(); ctx.fillText(v, PAD.l - 4, Y(v) + 3); }
    ctx.strokeStyle = "#9bb7e8"; ctx.lineWidth = Math.max(1, Math.min(6, pw / H * 0.6));
    for (let j = 0; j < H; j++) { ctx.beginPath(); ctx.moveTo(X(j), Y(o.p10[j])); ctx.lineTo(X(j), Y(o.p90[j])); ctx.stroke(); }
    ctx.fillStyle = "#2a6fdb";
    for (let j = 0; j < H; j++) { ctx.beginPath(); ctx.arc(X(j), Y(o.p50[j]), 2.2, 0, 2 * Math.PI); ctx.fill(); }
    ctx.lineWidth = 1; canvas.dataset.points = H;
  }

  return {line, heat, ranges, COLORS};
})();
