// rnnlab lab: the page. Settings -> POST /api/runs; each run's events over Server-Sent Events; the charts of plot.js.
"use strict";
const TEXT = {
  en: {title: "live gradient lab", preset: "Chapter of the tour", free: "free settings", task: "Task", model: "Model",
       seq_len_hint: "(sequence length)", tokens: "symbols to recall", text: "text file", cell: "cell",
       hidden: "hidden size", init: "recurrent init", radius: "spectral radius (0 = as drawn)",
       fbias: "forget-gate bias (empty = none)", ubias: "update-gate bias (empty = none)", lr: "learning rate", side: "model B side by side (same data and seed)",
       training: "Training", optimizer: "optimiser", clip: "clip (global norm, 0 = off)", steps: "steps",
       batch: "batch size", seed: "seed", start: "Start", pause: "Pause", resume: "Resume", step: "Step once",
       stop: "Stop", apply: "Change now", download: "download the run folder",
       foot: "Every number is measured on the model being trained (rnnlab.study.compare.gradient_report); the run folder is an ordinary one: rnnlab resume, gradients and evaluate work on it.",
       curve: "learning curve (loss)", train: "train", val: "validation", baseline: "baseline",
       heat: "||dL/dh_t|| over t (rows: training steps, newest on top)", jac: "Jacobian norms ||dh_T/dh_t||",
       gate: g => `${g === "f" ? "forget" : "update"} gate ${g} per unit (p10-p90, median), sorted`,
       nogate: "this cell has no carry gate", sv: "singular values of W_hh, per gate block", nosv: "this cell has no W_hh",
       carry: c => c === "lstm" ? "product of forget gates over k steps" : "product of carries over k steps",
       nocarry: "no gate product for this cell (the GRU's carry is its z above)", at: "at step", now: "now", t: "t",
       k: "k (steps)", unit: "units", index: "index", stepx: "step", waiting: "waiting for data",
       starting: "starting", running: "running", paused: "paused", stepping: "stepping", done: "done", error: "error",
       changed: (s, c) => `step ${s}: ${c}`},
  zh: {title: "实时梯度实验室", preset: "导览章节", free: "自由设置", task: "任务", model: "模型",
       seq_len_hint: "（序列长度）", tokens: "要回忆的符号数", text: "文本文件", cell: "单元", hidden: "隐藏层大小",
       init: "循环权重初始化", radius: "谱半径（0 = 按初始化）", fbias: "遗忘门偏置（空 = 无）", ubias: "更新门偏置（空 = 无）", lr: "学习率",
       side: "并排训练模型 B（相同数据与种子）", training: "训练", optimizer: "优化器", clip: "裁剪（全局范数，0 = 关）",
       steps: "步数", batch: "批大小", seed: "随机种子", start: "开始", pause: "暂停", resume: "继续", step: "单步",
       stop: "停止", apply: "立即修改", download: "下载运行目录",
       foot: "所有数字都在正在训练的模型上实测（rnnlab.study.compare.gradient_report）；运行目录是普通的运行目录：rnnlab resume、gradients 和 evaluate 都可以使用。",
       curve: "学习曲线（损失）", train: "训练", val: "验证", baseline: "基线",
       heat: "||dL/dh_t|| 随 t 的变化（行：训练步，最新在上）", jac: "雅可比范数 ||dh_T/dh_t||",
       gate: g => `每个单元的${g === "f" ? "遗忘" : "更新"}门 ${g}（p10-p90，中位数），已排序`,
       nogate: "该单元没有保留门", sv: "W_hh 的奇异值（按门分块）", nosv: "该单元没有 W_hh",
       carry: c => c === "lstm" ? "k 步遗忘门的乘积" : "k 步保留系数的乘积",
       nocarry: "该单元没有门乘积（GRU 的保留见上面的 z）", at: "步", now: "当前", t: "t", k: "k（步）",
       unit: "单元", index: "序号", stepx: "训练步", waiting: "等待数据", starting: "启动中", running: "训练中",
       paused: "已暂停", stepping: "单步", done: "完成", error: "错误", changed: (s, c) => `第 ${s} 步：${c}`},
};
let lang = "en", OPTIONS = null, PRESET = null;
const runs = [];                                   // the runs on the page (one or two)
const $ = s => document.querySelector(s);
const translate = root => root.querySelectorAll("[data-t]").forEach(e => { e.textContent = tr(e.dataset.t); });
const tr = (k, ...a) => { const v = TEXT[lang][k]; return typeof v === "function" ? v(...a) : (v ?? k); };

function setLang(l) {
  lang = l;
  document.documentElement.lang = l === "zh" ? "zh-CN" : "en";
  $("#lang-en").classList.toggle("on", l === "en"); $("#lang-zh").classList.toggle("on", l === "zh");
  translate(document);
  fillPresets(); showSay(); runs.forEach(r => { r.dirty = true; status(r); });
}

function fillSelect(sel, values, value) {
  sel.innerHTML = values.map(v => `<option value="${v}">${v}</option>`).join("");
  if (value !== undefined) sel.value = value;
}

function fillPresets() {
  const sel = $("#preset"), keep = sel.value;
  sel.innerHTML = `<option value="">${tr("free")}</option>` +
    OPTIONS.presets.map(p => `<option value="${p.id}">${p.title[lang]}</option>`).join("");
  sel.value = keep;
}

function showSay() { $("#say").textContent = PRESET ? PRESET.say[lang] : ""; }

function field(scope, name) { return scope.querySelector(`[name=${name}]`); }

function setFields(scope, values) {
  for (const [k, v] of Object.entries(values)) { const f = field(scope, k); if (f) f.value = v; }
}

function visibility() {
  const task = $("#task").value;
  document.querySelectorAll(".only-selective_copy").forEach(e => e.classList.toggle("show", task === "selective_copy"));
  document.querySelectorAll(".only-chars").forEach(e => e.classList.toggle("show", task === "chars"));
  for (const cell of ["lstm", "gru"])
    document.querySelectorAll("fieldset.model").forEach(fs => fs.querySelectorAll(`.only-${cell}`).forEach(
      e => e.classList.toggle("show", field(fs, "model").value === cell)));
}

function applyPreset(id) {
  PRESET = OPTIONS.presets.find(p => p.id === id) || null;
  showSay();
  if (!PRESET) return;
  const d = OPTIONS.defaults, base = {hidden_size: d.hidden_size, recurrent_init: "uniform", recurrent_radius: 0,
                                      forget_bias: "", update_bias: "", lr: d.lr};
  setFields($("#settings"), {task: d.task, seq_len: d.seq_len, optimizer: d.optimizer, clip: d.clip, steps: d.steps,
                             batch_size: d.batch_size, seed: d.seed, ...pick(PRESET.a, ["task", "seq_len", "clip", "steps"])});
  setFields($("fieldset[data-which=a]"), {...base, ...PRESET.a});
  $("#side").checked = !!PRESET.b; $("#model-b").disabled = !PRESET.b;
  if (PRESET.b) setFields($("fieldset[data-which=b]"), {...base, ...PRESET.b});
  visibility();
}

function pick(o, keys) { return Object.fromEntries(keys.filter(k => k in o).map(k => [k, o[k]])); }

function modelSettings(fs) {
  const s = {};
  for (const k of ["model", "hidden_size", "recurrent_init", "recurrent_radius", "lr"]) s[k] = field(fs, k).value;
  if (s.model === "lstm" && field(fs, "forget_bias").value !== "") s.forget_bias = field(fs, "forget_bias").value;
  if (s.model === "gru" && field(fs, "update_bias").value !== "") s.update_bias = field(fs, "update_bias").value;
  if (s.recurrent_init === "uniform") delete s.recurrent_init;     // the default: a diagonal cell refuses any other
  return s;
}

function settings() {
  const form = $("#settings"), task = $("#task").value;
  const common = {task, seq_len: field(form, "seq_len").value, optimizer: $("#optimizer").value,
                  clip: $("#clip-start").value, steps: field(form, "steps").value,
                  batch_size: field(form, "batch_size").value, seed: field(form, "seed").value};
  if (task === "selective_copy") common.tokens = field(form, "tokens").value;
  if (task === "chars") common.text = field(form, "text").value;
  const a = {...common, ...modelSettings($("fieldset[data-which=a]"))};
  const b = $("#side").checked ? {optimizer: common.optimizer, clip: common.clip,
                                  ...modelSettings($("fieldset[data-which=b]"))} : null;
  return {a, b};
}

async function api(path, body) {
  const res = await fetch(path, body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
                                                          body: JSON.stringify(body)});
  const data = await res.json().catch(() => ({error: `HTTP ${res.status}`}));
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

async function start(ev) {
  ev.preventDefault();
  $("#error").textContent = "";
  try {
    const data = await api("/api/runs", settings());
    show(data.runs);
  } catch (e) { $("#error").textContent = e.message; }
}

function show(list) {
  runs.forEach(r => r.es && r.es.close());
  runs.length = 0;
  $("#runs").innerHTML = "";
  for (const info of list) {
    const el = $("#run-template").content.firstElementChild.cloneNode(true);
    el.id = "run-" + info.id; el.dataset.run = info.id;
    $("#runs").appendChild(el);
    const r = {id: info.id, info, el, train: [], val: [], measures: [], state: info.state || "starting", step: 0,
               changes: [], dirty: true};
    el.querySelector(".label").textContent = info.label;
    el.querySelector(".describe").textContent = info.describe;
    el.querySelector(".download").href = `/api/runs/${info.id}/download`;
    translate(el);                                    // the page's language
    el.querySelector(".folder").textContent = info.run_dir;
    runs.push(r);
    listen(r);
    status(r);
  }
  const c = runs[0] && runs[0].info.config;
  if (c) { $("#new-lr").value = c.lr; $("#new-clip").value = c.clip; }
  buttons();
}

function listen(r) {
  r.es = new EventSource(`/api/runs/${r.id}/events`);
  r.es.onmessage = m => { handle(r, JSON.parse(m.data)); };
  r.es.addEventListener("end", () => { r.es.close(); });
}

function handle(r, ev) {
  if (ev.type === "info") { r.info = {...r.info, ...ev}; }
  else if (ev.type === "record") {
    r.step = Math.max(r.step, ev.step);
    if (ev.split === "train" && ev.loss !== null) r.train.push([ev.step, ev.loss]);
    else if (ev.split === "val") r.val.push([ev.step, ev.loss]);
  } else if (ev.type === "measure") { r.measures.push(ev); r.step = Math.max(r.step, ev.step); }
  else if (ev.type === "change") {
    r.changes.push(ev);
    const li = document.createElement("li");
    li.textContent = tr("changed", ev.step, Object.entries(ev).filter(([k]) => k === "lr" || k === "clip")
                                                .map(([k, v]) => `${k} = ${v}`).join(", "));
    r.el.querySelector(".changes").appendChild(li);
  } else if (ev.type === "state") {
    if (ev.state === "warning") { $("#error").textContent = ev.message; }
    else { r.state = ev.state; if (ev.step !== null && ev.step !== undefined) r.step = ev.step;
           if (ev.state === "error") r.error = ev.message; if (ev.final) r.final = ev.final; }
    buttons();
  }
  r.dirty = true; status(r);
}

function status(r) {
  const steps = r.info.config ? r.info.config.steps : "?";
  let s = `${tr(r.state)} · ${tr("stepx")} ${r.step} / ${steps}`;
  const last = r.train[r.train.length - 1];
  if (last) s += ` · loss ${(+last[1]).toPrecision(3)}`;
  if (r.final) s += ` · val ${Object.entries(r.final).map(([k, v]) => `${k} ${(+v).toPrecision(3)}`).join(" ")}`;
  if (r.error) s += ` · ${r.error}`;
  const e = r.el.querySelector(".status"); e.textContent = s; e.dataset.state = r.state; e.dataset.step = r.step;
}

function buttons() {
  const live = runs.filter(r => r.state !== "done" && r.state !== "error");
  const paused = live.length && live.every(r => r.state === "paused");
  $("#pause").disabled = !live.length || paused;
  $("#resume").disabled = !live.length || !live.some(r => r.state === "paused" || r.state === "stepping");
  $("#step").disabled = !live.length;
  $("#stop").disabled = !live.length;
  $("#apply").disabled = !live.length;
}

async function control(body) {
  $("#error").textContent = "";
  for (const r of runs.filter(r => r.state !== "done" && r.state !== "error")) {
    try { await api(`/api/runs/${r.id}/control`, body); } catch (e) { $("#error").textContent = e.message; }
  }
}

function change() {
  const body = {op: "change"};
  const cfg = runs[0] && runs[0].info.config;
  const lr = $("#new-lr").value, clip = $("#new-clip").value;
  if (lr !== "") body.lr = lr;
  if (clip !== "") body.clip = clip;
  control(body);
}

function draw(r) {
  const el = r.el, c = r.info.config || {}, ms = r.measures, last = ms[ms.length - 1], first = ms[0];
  const base = r.info.baseline;
  Plot.line(el.querySelector(".curve"), {title: tr("curve"), xLabel: tr("stepx"), logY: true, empty: tr("waiting"),
    series: [{name: tr("train"), xs: r.train.map(p => p[0]), ys: r.train.map(p => p[1])},
             {name: tr("val"), xs: r.val.map(p => p[0]), ys: r.val.map(p => p[1])}],
    hline: base ? {y: base[1], label: `${tr("baseline")}: ${base[0]}`} : null, xMin: 0});
  const keep = ms.length > 200 ? ms.filter((_, i) => i % Math.ceil(ms.length / 200) === 0 || i === ms.length - 1) : ms;
  Plot.heat(el.querySelector(".heat"), {title: tr("heat"), xLabel: tr("t"), rows: keep.map(m => m.grad_norm_h),
                                        rowKeys: keep.map(m => m.step), empty: tr("waiting")});
  const ts = v => v ? v.map((_, i) => i) : [];
  const series = (key, xs) => (last ? [{name: `${tr("now")} (${tr("at")} ${last.step})`, xs: xs(last[key]), ys: last[key] || []}] : [])
    .concat(first && first !== last ? [{name: `${tr("at")} ${first.step}`, xs: xs(first[key]), ys: first[key] || [], dash: [4, 3], color: "#999"}] : []);
  Plot.line(el.querySelector(".jacobian"), {title: tr("jac"), xLabel: tr("t"), logY: true, empty: tr("waiting"),
                                            series: series("jacobian_norm", ts)});
  const g = last && last.gate;
  Plot.ranges(el.querySelector(".gates"), {title: g ? tr("gate", g.name) : tr("gate", c.model === "gru" ? "z" : "f"),
    xLabel: tr("unit"), p10: g && g.p10, p50: g && g.p50, p90: g && g.p90, empty: last ? tr("nogate") : tr("waiting")});
  const sv = last ? Object.entries(last.singular_values || {}) : [];
  Plot.line(el.querySelector(".singular"), {title: tr("sv"), xLabel: tr("index"), empty: last ? tr("nosv") : tr("waiting"),
    series: sv.map(([gate, v]) => ({name: gate, xs: v.map((_, i) => i), ys: v})), hline: sv.length ? {y: 1, label: "1"} : null});
  Plot.line(el.querySelector(".carry"), {title: tr("carry", c.model), xLabel: tr("k"), logY: true,
    empty: last ? tr("nocarry") : tr("waiting"), series: last && last.carry_product ? series("carry_product", ts) : []});
}

function frame() {
  for (const r of runs) if (r.dirty) { r.dirty = false; draw(r); }
  setTimeout(() => requestAnimationFrame(frame), 150);   // at most ~6 redraws a second, whatever the event rate
}

async function init() {
  OPTIONS = await api("/api/options");
  fillSelect($("#task"), OPTIONS.tasks, OPTIONS.defaults.task);
  fillSelect($("#optimizer"), OPTIONS.optimizers, OPTIONS.defaults.optimizer);
  document.querySelectorAll("fieldset.model").forEach(fs => {
    fillSelect(field(fs, "model"), OPTIONS.cells, OPTIONS.defaults.model);
    fillSelect(field(fs, "recurrent_init"), OPTIONS.inits, "uniform");
    field(fs, "model").addEventListener("change", visibility);
  });
  field($("fieldset[data-which=b]"), "model").value = "gru";
  const d = OPTIONS.defaults, form = $("#settings");
  setFields(form, {seq_len: d.seq_len, clip: d.clip, steps: d.steps, batch_size: d.batch_size, seed: d.seed});
  $("#task").addEventListener("change", visibility);
  $("#side").addEventListener("change", () => { $("#model-b").disabled = !$("#side").checked; });
  $("#preset").addEventListener("change", e => applyPreset(e.target.value));
  form.addEventListener("submit", start);
  $("#pause").onclick = () => control({op: "pause"});
  $("#resume").onclick = () => control({op: "resume"});
  $("#step").onclick = () => control({op: "step"});
  $("#stop").onclick = () => control({op: "stop"});
  $("#apply").onclick = change;
  $("#lang-en").onclick = () => setLang("en"); $("#lang-zh").onclick = () => setLang("zh");
  setLang(navigator.language && navigator.language.startsWith("zh") ? "zh" : "en");
  visibility();
  const existing = await api("/api/runs");          // a second tab: the latest runs of this server
  if (existing.length) {
    const group = existing[existing.length - 1].group;
    show(existing.filter(r => r.group === group));
  }
  document.body.dataset.ready = "1";
  frame();
}
init().catch(e => { $("#error").textContent = e.message; });
