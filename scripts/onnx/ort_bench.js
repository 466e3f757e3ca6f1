#!/usr/bin/env node
// ort_bench.js — onnxruntime-node tokens/s on an anvil --kv-cache ONNX export, measured as
// `anvil run --bench PP,TG` measures: a PP-token prompt as one run from position 0 (empty past),
// and TG single-token steps from position 0 feeding present.N.* back as past_key_values.N.*.
//   node ort_bench.js MODEL.onnx [--pp 128] [--tg 64] [--threads 1] [--reps 3] [--opt all]
// One warm-up run, then the mean over --reps. Token ids are fixed pseudo-random ones below the
// vocabulary size. Prints {"pp_tokens_per_s", "tg_tokens_per_s", "load_ms", ...} on stdout.
'use strict';
const path = require('path');
let ort;
for (const p of [null, process.env.ANVIL_NODE_DIR && path.join(process.env.ANVIL_NODE_DIR, 'node_modules', 'onnxruntime-node')]) {
  try { ort = require(p || 'onnxruntime-node'); break; } catch (e) { /* next */ }
}
if (!ort) { process.stderr.write('ort_bench.js: npm package onnxruntime-node not found\n'); process.exit(2); }
const args = process.argv.slice(2);
const opt = (k, d) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : d; };
const PP = Number(opt('--pp', '128')), TG = Number(opt('--tg', '64')), threads = Number(opt('--threads', '1'));
const reps = Number(opt('--reps', '3')), level = opt('--opt', 'all');

(async () => {
  const t0 = process.hrtime.bigint();
  const sess = await ort.InferenceSession.create(args[0], { intraOpNumThreads: threads, interOpNumThreads: 1,
                                                             graphOptimizationLevel: level });
  const loadMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const pastNames = sess.inputNames.filter(n => n.startsWith('past_key_values.'));
  if (!pastNames.length) { process.stderr.write('ort_bench.js: needs a --kv-cache export\n'); process.exit(2); }
  const md = n => sess.inputMetadata.find(m => m.name === n).shape;
  const V = sess.outputMetadata.find(m => m.name === 'logits').shape[2];
  const empty = () => { const f = {}; for (const n of pastNames) { const s = md(n); f[n] = new ort.Tensor('float32', new Float32Array(0), [1, s[1], 0, s[3]]); } return f; };
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % V; };
  const ids = n => { const a = []; for (let i = 0; i < n; i++) a.push(rnd()); return new ort.Tensor('int64', BigInt64Array.from(a.map(BigInt)), [1, n]); };
  const t64 = v => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
  const extra = (past, n) => { // attention_mask all ones, position_ids past..past+n-1, when the graph takes them
    const f = {}, r = k => Array.from({ length: k }, (_, i) => i);
    if (sess.inputNames.includes('attention_mask')) f.attention_mask = t64(r(past + n).map(() => 1));
    if (sess.inputNames.includes('position_ids')) f.position_ids = t64(r(n).map(i => past + i));
    return f;
  };
  const pp = async () => { await sess.run(Object.assign({ input_ids: ids(PP) }, extra(0, PP), empty())); };
  const tg = async () => {
    let past = empty();
    for (let s = 0; s < TG; s++) {
      const out = await sess.run(Object.assign({ input_ids: ids(1) }, extra(s, 1), past));
      past = {};
      for (const n of pastNames) past[n] = out[n.replace('past_key_values.', 'present.')];
    }
  };
  const time = async f => { const t = process.hrtime.bigint(); await f(); return Number(process.hrtime.bigint() - t) / 1e9; };
  await pp(); await tg(); // warm-up
  let tp = 0, tt = 0;
  for (let r = 0; r < reps; r++) { tp += await time(pp); tt += await time(tg); }
  process.stdout.write(JSON.stringify({ model: args[0], n_threads: threads, n_prompt: PP, n_gen: TG, reps,
    pp_tokens_per_s: PP * reps / tp, tg_tokens_per_s: TG * reps / tt, load_ms: loadMs }) + '\n');
})().catch(e => { process.stderr.write('ort_bench.js: ' + (e && e.message || e) + '\n'); process.exit(1); });
