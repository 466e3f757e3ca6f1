#!/usr/bin/env node
// ort_top1.js — top-1 agreement of two ONNX Llama decoders in onnxruntime-node over a text:
//   node ort_top1.js BASE.onnx TEST.onnx --ids-file IDS [--ctx 128] [--bos 1] [--threads N] [--opt all]
// IDS: whitespace-separated token ids (anvil tokenizer encode). They are cut into windows of
// ctx-1 tokens, each run with BOS first (as anvil eval / llama-perplexity chunk a text); every
// position of every window counts. Prints {"windows", "positions", "agree", "top1", "kl_mean"}
// where kl_mean is the mean KL(BASE || TEST) of the next-token distributions.
'use strict';
const fs = require('fs');
const path = require('path');
let ort;
for (const p of [null, process.env.ANVIL_NODE_DIR && path.join(process.env.ANVIL_NODE_DIR, 'node_modules', 'onnxruntime-node')]) {
  try { ort = require(p || 'onnxruntime-node'); break; } catch (e) { /* next */ }
}
if (!ort) { process.stderr.write('ort_top1.js: npm package onnxruntime-node not found\n'); process.exit(2); }
const args = process.argv.slice(2);
const opt = (k, d) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : d; };
if (args.length < 2 || !opt('--ids-file')) { process.stderr.write('usage: ort_top1.js BASE.onnx TEST.onnx --ids-file IDS [--ctx 128]\n'); process.exit(2); }
const ids = fs.readFileSync(opt('--ids-file'), 'utf8').trim().split(/\s+/).map(Number);
const ctx = Number(opt('--ctx', '128')), bos = Number(opt('--bos', '1')), threads = Number(opt('--threads', '1'));
const level = opt('--opt', 'all'); // graph optimization: disabled|basic|extended|all

function softmaxLog(d, off, V) { // log-probabilities of one row
  let m = -Infinity; for (let i = 0; i < V; i++) m = Math.max(m, d[off + i]);
  let s = 0; for (let i = 0; i < V; i++) s += Math.exp(d[off + i] - m);
  const ls = m + Math.log(s), r = new Float64Array(V);
  for (let i = 0; i < V; i++) r[i] = d[off + i] - ls;
  return r;
}

(async () => {
  const o = { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: level };
  const a = await ort.InferenceSession.create(args[0], o), b = await ort.InferenceSession.create(args[1], o);
  let windows = 0, pos = 0, agree = 0, kl = 0;
  for (let s = 0; s + ctx - 1 <= ids.length; s += ctx - 1) {
    const w = [bos].concat(ids.slice(s, s + ctx - 1));
    const t64 = v => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), [1, v.length]);
    const full = { input_ids: t64(w), attention_mask: t64(w.map(() => 1)), position_ids: t64(w.map((_, i) => i)) };
    const feed = sess => Object.fromEntries(sess.inputNames.map(n => [n, full[n]])); // anvil exports also take mask/positions
    const la = (await a.run(feed(a))).logits, lb = (await b.run(feed(b))).logits, V = la.dims[2];
    for (let t = 0; t < w.length; t++) {
      const pa = softmaxLog(la.data, t * V, V), pb = softmaxLog(lb.data, t * V, V);
      let ia = 0, ib = 0;
      for (let i = 1; i < V; i++) { if (pa[i] > pa[ia]) ia = i; if (pb[i] > pb[ib]) ib = i; }
      for (let i = 0; i < V; i++) kl += Math.exp(pa[i]) * (pa[i] - pb[i]);
      agree += ia === ib ? 1 : 0;
      pos++;
    }
    windows++;
  }
  process.stdout.write(JSON.stringify({ windows, positions: pos, agree, top1: pos ? agree / pos : 0, kl_mean: pos ? kl / pos : 0 }) + '\n');
})().catch(e => { process.stderr.write('ort_top1.js: ' + (e && e.message || e) + '\n'); process.exit(1); });
