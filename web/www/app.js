// The page: loads a samples/scored JSONL file and a sentence encoder, hands both to the compute
// worker (worker.js, running the sealong-web wasm), and shows each question's utility matrix and
// ranked answers next to the native scores a scored file carries.
//
// Every string from a file reaches the DOM through textContent (never innerHTML), so file text
// is always shown escaped. Errors go to the page's "Problems" panel, never only to the console.

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = tag === 'svg' || SVG_TAGS.has(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
  return e;
}
const SVG_TAGS = new Set(['rect', 'text', 'title', 'g', 'linearGradient', 'stop', 'defs']);

const params = new URLSearchParams(location.search);
const UTILITIES = { embedding: 'embedding cosine', 'rouge-l': 'ROUGE-L F1', chrf: 'chrF' };

const app = {
  session: null,
  data: null, // {name, text}: what the worker was given, re-sent if it restarts
  model: null, // {source, files}
  worker: null,
  workerBackend: null,
  backendNote: '',
  modelState: 'none',
  modelDescribe: '',
  file: null,
  gen: 0,
  results: { embedding: [], 'rouge-l': [], chrf: [] },
  fileErrors: [],
  appErrors: [],
  index: 0,
  utility: 'embedding',
  started: 0,
  done: false,
};

// ---------- errors and status ----------

function addError(message) {
  app.appErrors.push(String(message));
  renderErrors();
}

function renderErrors() {
  const list = $('error-list');
  list.replaceChildren(
    ...app.fileErrors.map((e) => el('li', { class: 'error', 'data-line': e.line }, e.message)),
    ...app.appErrors.map((m) => el('li', { class: 'error' }, m)),
  );
  $('errors').hidden = list.children.length === 0;
}

function setStatus(text, done = null, total = null) {
  $('status').textContent = text;
  const p = $('progress');
  if (total) {
    p.hidden = false;
    p.max = total;
    p.value = done;
  } else {
    p.hidden = true;
  }
}

function setState(s) {
  document.body.dataset.state = s;
}

function renderBackend() {
  const names = { webgpu: 'WebGPU (burn-wgpu)', cpu: 'CPU (wasm)', flex: 'CPU (burn flex)' };
  const b = app.workerBackend;
  $('backend').textContent = `backend: ${b ? names[b] || b : '…'}`;
  $('backend').title = [app.modelDescribe, app.backendNote].filter(Boolean).join(' — ')
    || 'where the browser computes the embeddings';
  $('backend').dataset.backend = b || '';
  document.body.dataset.backend = b || '';
}

// ---------- the worker ----------

function chooseBackend() {
  const asked = params.get('backend') || 'auto';
  if (asked === 'auto') return self.navigator && navigator.gpu ? 'webgpu' : 'cpu';
  return asked;
}

function startWorker(backend) {
  if (app.worker) app.worker.terminate();
  app.workerBackend = backend;
  const w = new Worker(new URL('worker.js', import.meta.url), { type: 'module' });
  app.worker = w;
  w.onmessage = (ev) => onWorkerMessage(w, ev.data);
  w.onerror = (ev) => {
    ev.preventDefault();
    onWorkerMessage(w, { type: 'fatal', backend, message: `worker failed to start: ${ev.message || 'see the console'}` });
  };
  w.postMessage({ type: 'init', backend, seed: Number(params.get('seed') || app.session?.seed || 42) });
  if (app.data) sendData();
  if (app.model) sendModel();
  renderBackend();
}

function sendData() {
  // Until the worker's 'parsed' names the new generation, drop results of the previous file.
  app.gen = -1;
  app.results = { embedding: [], 'rouge-l': [], chrf: [] };
  app.done = false;
  app.started = performance.now();
  setState('computing');
  app.worker.postMessage({ type: 'data', name: app.data.name, text: app.data.text });
}

function sendModel() {
  app.modelState = 'loading';
  app.worker.postMessage({ type: 'model', source: app.model.source, files: app.model.files });
}

function onWorkerMessage(w, m) {
  if (w !== app.worker) return; // a terminated worker's last words
  switch (m.type) {
    case 'backend':
      app.workerBackend = m.backend;
      if (m.note) app.backendNote = m.note;
      renderBackend();
      break;
    case 'parsed':
      app.gen = m.gen;
      onParsed(m.file);
      break;
    case 'progress':
      if (m.gen !== app.gen) break;
      setStatus(m.bytes
        ? `${m.phase}: ${(m.done / 1e6).toFixed(0)} of ${(m.total / 1e6).toFixed(0)} MB`
        : `${m.phase}${m.total > 1 ? ` ${m.done + 1}/${m.total}` : '…'}`, m.done, m.total);
      break;
    case 'scored':
      if (m.gen !== app.gen) break;
      m.result.ms = m.ms;
      // The first result of each utility since navigation, for the page-load benchmark
      // (bench/page_load.sh reads these marks).
      if (!performance.getEntriesByName(`first-${m.utility}`, 'mark').length) performance.mark(`first-${m.utility}`);
      app.results[m.utility][m.index] = m.result;
      markOption(m.index);
      if (m.index === app.index) renderQuestion();
      break;
    case 'question-error':
      if (m.gen !== app.gen) break;
      addError(`${UTILITIES[m.utility]}: ${m.message}`);
      break;
    case 'model-ready':
      app.modelState = 'ready';
      app.modelDescribe = m.describe;
      app.workerBackend = m.backend;
      renderBackend();
      break;
    case 'model-error':
      app.modelState = 'failed';
      addError(`embedding scores are unavailable: ${m.message}`);
      renderQuestion();
      break;
    case 'done':
      if (m.gen !== app.gen) break;
      app.done = true;
      setStatus(`done: ${app.file.records.length} question(s) in ${((performance.now() - app.started) / 1000).toFixed(1)} s`
        + (m.embedding ? '' : ' (ROUGE-L only)'));
      setState('ready');
      renderQuestion();
      break;
    case 'fatal':
      if (m.backend === 'webgpu') {
        // WebGPU failed (adapter, shader compilation, a panic): start over on the CPU.
        app.backendNote = `WebGPU failed (${m.message}); recomputed on the CPU`;
        addError(app.backendNote);
        startWorker('cpu');
      } else {
        addError(m.message);
        setStatus('stopped by an error');
        setState('error');
      }
      break;
    default:
      break;
  }
}

// ---------- loading files ----------

function loadData(name, text) {
  app.data = { name, text };
  $('file-name').textContent = name;
  if (!app.worker) startWorker(chooseBackend());
  else sendData();
}

function loadModel(source, files) {
  app.model = { source, files };
  app.modelState = 'loading';
  if (!app.worker) startWorker(chooseBackend());
  else sendModel();
}

/** Picked or dropped model folder: File objects with paths relative to the folder. */
function modelFromFiles(list) {
  const files = list.map(({ path, file }) => ({ name: path, file, size: file.size }));
  const top = files.length ? files[0].name.split('/')[0] : 'picked folder';
  return { source: top, files };
}

async function fromServer() {
  let res;
  try {
    res = await fetch('session.json', { cache: 'no-store' });
  } catch (_) {
    res = null;
  }
  if (!res || !res.ok) {
    setState('idle');
    $('empty').hidden = false;
    setStatus('no file yet');
    return;
  }
  app.session = await res.json();
  const s = app.session;
  if (s.model) {
    loadModel(s.model.source, s.model.files.map((f) => ({
      name: f.name, url: new URL(f.url, location.href).href, size: f.size,
    })));
  } else {
    app.backendNote = 'the server offers no model: ROUGE-L only until a model folder is picked';
  }
  if (s.data) {
    setStatus(`fetching ${s.data.name}…`);
    const d = await fetch(s.data.url, { cache: 'no-store' });
    if (!d.ok) {
      addError(`${s.data.name}: HTTP ${d.status} ${d.statusText}`);
      setState('error');
      return;
    }
    loadData(s.data.name, await d.text());
  }
}

// ---------- rendering ----------

function onParsed(file) {
  app.file = file;
  app.fileErrors = file.errors;
  renderErrors();
  const sel = $('question-select');
  sel.replaceChildren(...file.records.map((r, i) => el('option', { value: i },
    `${i + 1}. ${r.id}${r.question ? ` — ${truncate(r.question, 60)}` : ''}`)));
  $('empty').hidden = true;
  $('main').hidden = file.records.length === 0;
  if (file.records.length === 0) {
    setState('ready');
    setStatus('nothing to show');
    return;
  }
  // Start on the utility the file was scored with, so the native column compares like for like.
  const method = file.records.find((r) => r.native)?.native.method;
  if (method in UTILITIES) setUtility(method);
  const fromHash = Number(new URLSearchParams(location.hash.slice(1)).get('q'));
  go(Number.isInteger(fromHash) && fromHash > 0 ? fromHash - 1 : 0);
}

function truncate(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function markOption(i) {
  const opt = $('question-select').options[i];
  if (opt) opt.dataset.scored = app.results[app.utility][i] ? 'yes' : 'no';
}

function go(i) {
  if (!app.file || app.file.records.length === 0) return;
  const n = app.file.records.length;
  app.index = Math.max(0, Math.min(n - 1, i));
  $('question-select').value = String(app.index);
  $('position').textContent = `${app.index + 1} / ${n}`;
  $('prev').disabled = app.index === 0;
  $('next').disabled = app.index === n - 1;
  history.replaceState(null, '', `#q=${app.index + 1}`);
  renderQuestion();
}

function setUtility(u) {
  app.utility = u;
  for (const r of document.querySelectorAll('input[name=utility]')) r.checked = r.value === u;
  document.body.dataset.utility = u;
}

function fmt(x) {
  return x === undefined || x === null ? '—' : x.toFixed(4);
}

function renderQuestion() {
  if (!app.file || !app.file.records[app.index]) return;
  const rec = app.file.records[app.index];
  const result = app.results[app.utility][app.index];
  $('q-text').textContent = rec.question ?? '(the record has no "question")';
  $('q-id').textContent = `id ${rec.id} · line ${rec.line} · ${rec.texts.length} answers`;
  $('q-gold').replaceChildren(...(rec.answers.length
    ? [el('b', {}, 'gold: '), rec.answers.join(' | ')]
    : [el('span', { class: 'muted' }, 'no gold answers')]));
  const ctx = $('q-context');
  ctx.querySelector('summary').textContent = rec.context !== null ? 'context' : 'prompt';
  $('q-context-text').textContent = rec.context ?? rec.prompt;
  renderHeatmap(rec, result);
  renderAnswers(rec, result);
}

/** Viridis-like ramp: t in [0, 1] to a CSS colour. */
function colour(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function pendingText() {
  if (app.utility === 'embedding' && (app.modelState === 'failed' || (app.modelState === 'none' && app.done))) {
    return 'embedding scores need a model (see Problems, or pick a model folder)';
  }
  return 'computing…';
}

function renderHeatmap(rec, result) {
  const box = $('heatmap');
  $('matrix-title').textContent = `${UTILITIES[app.utility]}, ${rec.texts.length} × ${rec.texts.length}`;
  if (!result) {
    box.replaceChildren(el('p', { class: 'muted pending' }, pendingText()));
    $('legend').replaceChildren();
    return;
  }
  const n = result.n;
  const m = result.matrix;
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of m) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi - lo || 1;
  // Labels about 13 px whatever N (the box is ~420 px wide), capped below half a cell; the
  // margin for them scales with their size.
  const fs = Math.min(0.45, (13 * (n + 1)) / 420);
  const pad = 0.25 + 2.4 * fs;
  const cells = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const v = m[i * n + j];
      cells.push(el('rect', {
        class: 'cell', x: j, y: i, width: 1, height: 1, fill: colour((v - lo) / span),
        'data-i': i, 'data-j': j, 'data-v': v,
      }, el('title', {}, `answer ${i} × answer ${j}: ${v.toFixed(4)}`)));
    }
  }
  const labels = [];
  for (let k = 0; k < n; k++) {
    const mark = k === result.chosen ? ' ★' : '';
    labels.push(el('text', { x: -0.15, y: k + 0.5, 'font-size': fs, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'axis' }, `${k}${mark}`));
    labels.push(el('text', { x: k + 0.5, y: -0.2, 'font-size': fs, 'text-anchor': 'middle', class: 'axis' }, String(k)));
  }
  const svg = el('svg', {
    class: 'heatmap', viewBox: `${-pad} ${-pad} ${n + pad} ${n + pad}`, role: 'img',
    'aria-label': `${n} by ${n} utility matrix`, 'shape-rendering': 'crispEdges', 'data-n': n,
  }, el('g', {}, cells), el('g', {}, labels),
  el('rect', { class: 'chosen-row', x: 0, y: result.chosen, width: n, height: 1, fill: 'none' }));
  svg.addEventListener('mouseover', (ev) => {
    const c = ev.target.closest('rect.cell');
    if (!c) return;
    const i = Number(c.dataset.i);
    const j = Number(c.dataset.j);
    $('hover').textContent = `answer ${i} × answer ${j}: ${Number(c.dataset.v).toFixed(6)}`;
    for (const tr of document.querySelectorAll('#answers tbody tr')) {
      tr.classList.toggle('hl', tr.dataset.index === String(i) || tr.dataset.index === String(j));
    }
  });
  svg.addEventListener('mouseleave', () => {
    for (const tr of document.querySelectorAll('#answers tbody tr.hl')) tr.classList.remove('hl');
  });
  box.replaceChildren(svg);
  // Through the CSSOM, not a style attribute: `sealong view`'s Content-Security-Policy allows
  // no inline styles.
  const ramp = el('span', { class: 'ramp' });
  ramp.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(colour).join(',')})`;
  $('legend').replaceChildren(
    el('span', {}, fmt(lo)),
    ramp,
    el('span', {}, fmt(hi)),
  );
}

function badge(text, cls, title) {
  return el('span', { class: `badge ${cls}`, title }, text);
}

function renderAnswers(rec, result) {
  const native = rec.native && rec.native.method === app.utility ? rec.native : null;
  $('native-head').textContent = rec.native ? `native (${rec.native.method})` : 'native';
  const order = rec.texts.map((_, i) => i);
  if (result) order.sort((a, b) => result.scores[b] - result.scores[a] || a - b);
  const rows = order.map((i, rank) => {
    const b = result ? result.scores[i] : null;
    const nat = rec.native ? rec.native.scores[i] : null;
    const delta = native && b !== null ? b - nat : null;
    const picks = [];
    if (result && i === result.chosen) picks.push(badge('chosen', 'chosen', 'highest browser MBR score'));
    if (result && i === result.rejected) picks.push(badge('rejected', 'rejected', 'drawn from the bottom half (same seed as sealong score)'));
    if (rec.native && i === rec.native.chosen) picks.push(badge('native chosen', 'native-chosen', 'chosen in the scored file'));
    if (rec.native && i === rec.native.rejected) picks.push(badge('native rejected', 'native-rejected', 'rejected in the scored file'));
    const sub = rec.sub_em ? (rec.sub_em[i] ? el('span', { class: 'subem yes', title: 'SubEM: a gold answer is in this answer' }, '✓') : el('span', { class: 'subem no', title: 'SubEM: no gold answer in this answer' }, '✗')) : '—';
    return el('tr', {
      'data-index': i, 'data-rank': result ? rank + 1 : '',
      'data-browser-score': b ?? '', 'data-native-score': nat ?? '',
      class: [result && i === result.chosen ? 'is-chosen' : '', result && i === result.rejected ? 'is-rejected' : ''].join(' ').trim(),
    },
    el('td', {}, result ? String(rank + 1) : ''),
    el('td', {}, String(i)),
    el('td', { class: 'num' }, fmt(b)),
    el('td', { class: `num${native ? '' : ' muted'}` }, fmt(nat)),
    el('td', { class: 'num muted' }, delta === null ? '' : delta.toExponential(1)),
    el('td', {}, sub),
    el('td', { class: 'picks' }, picks),
    el('td', { class: 'answer' }, rec.texts[i].trim() === ''
      ? el('span', { class: 'muted empty-answer' }, '(empty answer)')
      : el('div', { class: 'text', title: 'click to expand', onclick: (e) => e.currentTarget.classList.toggle('open') }, rec.texts[i])));
  });
  $('answers').tBodies[0].replaceChildren(...rows);
  const v = $('verdict');
  if (!result) {
    v.replaceChildren(el('span', { class: 'muted pending' }, pendingText()));
    return;
  }
  const parts = [el('span', { id: 'browser-chosen', 'data-chosen': result.chosen }, `browser chose #${result.chosen}`)];
  if (native) {
    const same = native.chosen === result.chosen;
    const maxd = Math.max(...rec.texts.map((_, i) => Math.abs(result.scores[i] - native.scores[i])));
    parts.push(', ', el('span', { id: 'native-chosen', class: same ? 'agree' : 'disagree', 'data-chosen': native.chosen },
      `native chose #${native.chosen} ${same ? '(same)' : '(different)'}`),
    el('span', { class: 'muted' }, ` · max |browser − native| = ${maxd.toExponential(1)}`));
  } else if (rec.native) {
    parts.push(el('span', { class: 'muted' }, ` · the file was scored by ${rec.native.method}; switch the utility to compare`));
  }
  if (result.over_window > 0) {
    const how = result.cut > 0 ? `${result.cut} cut to their first window (long_text = truncate)` : 'read whole, in windows';
    parts.push(el('span', { id: 'over-window', class: result.cut > 0 ? 'disagree' : 'muted', 'data-over': result.over_window, 'data-cut': result.cut },
      ` · ${result.over_window} of ${result.n} answers longer than the embedder's window: ${how}`));
  }
  if (result.long_text === 'answer-span') parts.push(el('span', { class: 'muted' }, ' · compared on the answer spans (long_text = answer-span)'));
  if (result.ms !== undefined) parts.push(el('span', { class: 'muted' }, ` · ${result.ms.toFixed(0)} ms`));
  v.replaceChildren(...parts);
}

// ---------- input ----------

function bind() {
  $('prev').addEventListener('click', () => go(app.index - 1));
  $('next').addEventListener('click', () => go(app.index + 1));
  $('question-select').addEventListener('change', (e) => go(Number(e.target.value)));
  for (const r of document.querySelectorAll('input[name=utility]')) {
    r.addEventListener('change', () => { setUtility(r.value); renderQuestion(); });
  }
  document.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLSelectElement || e.target instanceof HTMLInputElement) return;
    if (e.key === 'ArrowLeft' || e.key === 'k') go(app.index - 1);
    if (e.key === 'ArrowRight' || e.key === 'j') go(app.index + 1);
  });
  $('open-file').addEventListener('change', async (e) => {
    const f = e.target.files[0];
    if (f) loadData(f.name, await f.text());
    e.target.value = '';
  });
  $('open-model').addEventListener('change', (e) => {
    const list = [...e.target.files].map((file) => ({ path: file.webkitRelativePath || file.name, file }));
    if (list.length) {
      const m = modelFromFiles(list);
      loadModel(m.source, m.files);
    }
    e.target.value = '';
  });
  const overlay = $('drop-overlay');
  document.addEventListener('dragover', (e) => { e.preventDefault(); overlay.hidden = false; });
  document.addEventListener('dragleave', (e) => { if (e.target === overlay) overlay.hidden = true; });
  document.addEventListener('drop', async (e) => {
    e.preventDefault();
    overlay.hidden = true;
    try {
      await onDrop(e.dataTransfer);
    } catch (err) {
      addError(`drop: ${err.message || err}`);
    }
  });
}

/** A dropped folder is a model; a dropped file is data. */
async function onDrop(dt) {
  const entries = [...(dt.items || [])].map((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()).filter(Boolean);
  const dir = entries.find((e) => e.isDirectory);
  if (dir) {
    const list = [];
    await walk(dir, `${dir.name}/`, list);
    const m = modelFromFiles(list);
    loadModel(m.source, m.files);
  }
  const file = [...dt.files].find((f) => f.size > 0 && !entries.some((e) => e.isDirectory && e.name === f.name));
  if (file) loadData(file.name, await file.text());
}

async function walk(dir, prefix, out) {
  const reader = dir.createReader();
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const e of batch) {
      if (e.isDirectory) await walk(e, `${prefix}${e.name}/`, out);
      else out.push({ path: `${prefix}${e.name}`, file: await new Promise((res, rej) => e.file(res, rej)) });
    }
  }
}

window.addEventListener('error', (e) => addError(`page error: ${e.message}`));
// Something `sealong view`'s Content-Security-Policy blocked: a bug in the page, shown, not hidden
// in the console.
document.addEventListener('securitypolicyviolation', (e) => addError(
  `Content-Security-Policy blocked ${e.blockedURI || 'inline code'} (${e.violatedDirective})`));
window.addEventListener('unhandledrejection', (e) => addError(`page error: ${e.reason?.message || e.reason}`));
bind();
renderBackend();
fromServer().catch((e) => { addError(`loading: ${e.message || e}`); setState('error'); });
