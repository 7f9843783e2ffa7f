// The page's compute worker: runs the sealong-web wasm (parsing, the encoder, MBR scoring) off
// the main thread so the page stays responsive, and reports progress and results as messages.
//
// Messages in:  {type:'init', backend:'webgpu'|'cpu'|'flex', seed}
//               {type:'data', name, text}
//               {type:'model', source, files:[{name, url}|{name, file}]}
// Messages out: {type:'backend', backend, note}  {type:'parsed', gen, file}
//               {type:'progress', gen, phase, done, total}  {type:'scored', gen, utility, index, result, ms}
//               {type:'question-error', gen, utility, index, message}
//               {type:'model-ready', backend, describe}  {type:'model-error', message}
//               {type:'done', gen, embedding}  {type:'fatal', backend, message}
//
// Two modules (web/build.sh): pkg/ is the CPU module (parsing, ROUGE-L, chrF, the CPU engine,
// burn flex; a few MB), imported at once; pkg-gpu/ is the WebGPU module (the same surface plus
// burn-wgpu and cubecl's kernels, several times larger), imported only when the encoder runs on
// WebGPU, while the model downloads. The text utilities always run on the CPU module, so the
// first results never wait for the GPU module.
import init, * as cpuWasm from './pkg/sealong_web.js';

const wasmReady = init();
// The WebGPU module once imported and initialised (for its panic messages), and its promise.
let gpuWasm = null;
let gpuWasmLoading = null;
// Settles once 'init' has decided the backend (it asks the browser for an adapter first; the
// data and the model may arrive meanwhile).
let backendDecided = Promise.resolve();

function loadGpuWasm() {
  gpuWasmLoading ??= import('./pkg-gpu/sealong_web.js')
    .catch((e) => {
      throw new Error(`the WebGPU module (pkg-gpu/) did not load: ${e && e.message ? e.message : e}`);
    })
    .then(async (m) => {
      await m.default();
      gpuWasm = m;
      return m;
    });
  return gpuWasmLoading;
}
const state = {
  backend: 'cpu',
  seed: 42n,
  file: null,
  gen: 0,
  scorer: null,
  // 'none' (no model offered), 'loading', 'ready', 'failed'
  model: 'none',
};

const post = (m) => self.postMessage(m);

function message(e) {
  // A Rust panic surfaces as a bare "unreachable" RuntimeError; the hook kept the real message.
  let panic = null;
  for (const m of [gpuWasm, cpuWasm]) {
    try { panic = panic || (m && m.lastPanic()); } catch (_) { /* the module may not be initialised */ }
  }
  return panic || (e && e.message) || String(e);
}

self.onmessage = async (ev) => {
  try {
    await wasmReady;
    const m = ev.data;
    if (m.type === 'init') await (backendDecided = onInit(m));
    else if (m.type === 'data') onData(m);
    else if (m.type === 'model') await onModel(m);
  } catch (e) {
    post({ type: 'fatal', backend: state.backend, message: message(e) });
  }
};

async function onInit(m) {
  state.seed = BigInt(m.seed ?? 42);
  state.backend = m.backend;
  let note = '';
  if (state.backend === 'webgpu') {
    // Ask the browser first: burn-wgpu has no graceful answer for a browser without WebGPU.
    const adapter = await gpuAdapter();
    if (!adapter) {
      state.backend = 'cpu';
      note = 'this browser offers no WebGPU adapter; running on the CPU';
    }
  }
  post({ type: 'backend', backend: state.backend, note });
}

async function gpuAdapter() {
  if (!self.navigator || !navigator.gpu) return null;
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 10000));
  try {
    return await Promise.race([navigator.gpu.requestAdapter(), timeout]);
  } catch (_) {
    return null;
  }
}

function onData(m) {
  const gen = ++state.gen;
  state.file = JSON.parse(cpuWasm.parseJsonl(m.text, m.name));
  post({ type: 'parsed', gen, file: state.file });
  // Scoring yields between questions, so a newer file or the model's arrival interleaves.
  score(gen);
}

async function onModel(m) {
  state.model = 'loading';
  state.scorer = null;
  // A new model rescores the embedding utility of the current file.
  state.embedGen = state.embedDone = state.doneSent = null;
  // Which module runs the encoder depends on the backend: none is fetched before it is known.
  await backendDecided.catch(() => {});
  // On WebGPU the GPU module loads while the model downloads (awaited below; a failure there
  // is WebGPU's failure: the page restarts a CPU worker).
  const gpu = state.backend === 'webgpu' ? loadGpuWasm() : null;
  if (gpu) gpu.catch(() => {});
  try {
    const fetched = [];
    const total = m.files.reduce((s, f) => s + (f.size || (f.file ? f.file.size : 0)), 0);
    let done = 0;
    for (const f of m.files) {
      const bytes = f.file ? new Uint8Array(await f.file.arrayBuffer()) : await download(f.url, (n) => {
        post({ type: 'progress', gen: state.gen, phase: 'downloading the model', done: done + n, total, bytes: true });
      });
      done += bytes.length;
      fetched.push([f.name, bytes]);
    }
    // ModelFiles and loadScorer from one module: a wasm-bindgen object belongs to its module.
    const wasm = gpu ? await gpu : cpuWasm;
    const files = new wasm.ModelFiles();
    for (const [name, bytes] of fetched) files.add(name, bytes);
    fetched.length = 0; // copied into the module's memory
    post({ type: 'progress', gen: state.gen, phase: `loading the model on ${state.backend}`, done: 0, total: 1 });
    state.scorer = await wasm.loadScorer(files, m.source, state.backend);
    state.model = 'ready';
    post({ type: 'model-ready', backend: state.scorer.backend(), describe: state.scorer.describe() });
  } catch (e) {
    state.model = 'failed';
    if (state.backend === 'webgpu') throw e; // the page restarts a CPU worker
    post({ type: 'model-error', message: message(e) });
  }
  if (state.file) score(state.gen);
}

async function download(url, onBytes) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`model file ${url}: HTTP ${res.status} ${res.statusText}`);
  const len = Number(res.headers.get('content-length')) || 0;
  if (!res.body || !len) return new Uint8Array(await res.arrayBuffer());
  const out = new Uint8Array(len);
  const reader = res.body.getReader();
  let at = 0;
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.set(value, at);
    at += value.length;
    if (at - last > (4 << 20)) { last = at; onBytes(at); }
  }
  if (at !== len) throw new Error(`model file ${url}: got ${at} of ${len} bytes`);
  return out;
}

// Scores every question of the current file: ROUGE-L (no model) right away, the embedding
// utility once the model is ready, chrF (no model) after them. Called on a new file and when the model arrives; each pass
// runs once per file generation, and 'done' goes out when every pass that can run has finished.
async function score(gen) {
  const recs = state.file ? state.file.records : [];
  const stale = () => gen !== state.gen;
  const pass = async (utility, run) => {
    for (let i = 0; i < recs.length; i++) {
      if (stale()) return false;
      post({ type: 'progress', gen, phase: utility, done: i, total: recs.length });
      const t0 = performance.now();
      try {
        const result = JSON.parse(await run(recs[i]));
        post({ type: 'scored', gen, utility, index: i, result, ms: performance.now() - t0 });
      } catch (e) {
        if (utility === 'embedding' && state.backend === 'webgpu') throw e;
        post({ type: 'question-error', gen, utility, index: i, message: `${recs[i].id}: ${message(e)}` });
      }
      // Let a newer message (a dropped file, the model) in between questions.
      await new Promise((r) => setTimeout(r, 0));
    }
    return !stale();
  };
  try {
    if (state.rougeGen !== gen) {
      state.rougeGen = gen;
      if (!(await pass('rouge-l', async (r) => cpuWasm.rougeL(r.id, r.texts, state.seed, r.long_text)))) return;
      state.rougeDone = gen;
    }
    if (state.model === 'ready' && state.embedGen !== gen) {
      state.embedGen = gen;
      const scorer = state.scorer;
      if (!(await pass('embedding', (r) => scorer.embedding(r.id, r.texts, state.seed, r.long_text)))) return;
      state.embedDone = gen;
    }
    if (state.chrfGen !== gen) {
      state.chrfGen = gen;
      if (!(await pass('chrf', async (r) => cpuWasm.chrf(r.id, r.texts, state.seed, r.long_text)))) return;
      state.chrfDone = gen;
    }
    const finished = state.rougeDone === gen && state.chrfDone === gen && state.model !== 'loading'
      && (state.model !== 'ready' || state.embedDone === gen);
    if (finished && state.doneSent !== gen) {
      state.doneSent = gen;
      post({ type: 'done', gen, embedding: state.model === 'ready' });
    }
  } catch (e) {
    post({ type: 'fatal', backend: state.backend, message: message(e) });
  }
}
