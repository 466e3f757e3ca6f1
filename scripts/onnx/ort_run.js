#!/usr/bin/env node
// ort_run.js — run an ONNX Llama decoder with onnxruntime-node (the reference
// runtime for anvil's ONNX export) and print one JSON object on stdout.
//   node ort_run.js MODEL.onnx --ids 1,2,3            -> {"logits": [[...T rows of vocab floats]]}
//   node ort_run.js MODEL.onnx --ids 1 --greedy 32    -> {"ids": [...], "logprobs": [...]} (full re-run per step)
//   ... --kv-cache: the greedy loop feeds present.N.* back as past_key_values.N.* (one token per step)
//   --threads N (default 1); --opt LEVEL: graph optimization disabled|basic|extended|all (default all;
//   from 'extended' onnxruntime turns DequantizeLinear->MatMul into MatMulNBits with int8 activations)
// Needs: npm install --ignore-scripts onnxruntime-node@1.30.0 (NODE_PATH or ANVIL_NODE_DIR/node_modules).
'use strict';
const path = require('path');
let ort;
for (const p of [null, process.env.ANVIL_NODE_DIR && path.join(process.env.ANVIL_NODE_DIR, 'node_modules', 'onnxruntime-node')]) {
  try { ort = require(p || 'onnxruntime-node'); break; } catch (e) { /* next */ }
}
if (!ort) { process.stderr.write('ort_run.js: npm package onnxruntime-node not found\n'); process.exit(2); }

const args = process.argv.slice(2);
const opt = (k, d) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : d; };
const model = args[0];
const ids0 = opt('--ids', '1').split(',').map(Number);
const greedy = Number(opt('--greedy', '0'));
const kv = args.includes('--kv-cache');
const threads = Number(opt('--threads', '1'));
const level = opt('--opt', 'all');

function logsoftmax(row, k) {
  let m = -Infinity; for (const v of row) m = Math.max(m, v);
  let s = 0; for (const v of row) s += Math.exp(v - m);
  return row[k] - m - Math.log(s);
}
function argmax(row) { let b = 0; for (let i = 1; i < row.length; i++) if (row[i] > row[b]) b = i; return b; }

(async () => {
  const sess = await ort.InferenceSession.create(model, { intraOpNumThreads: threads, interOpNumThreads: 1,
                                                          graphOptimizationLevel: level });
  const ids = t => new ort.Tensor('int64', BigInt64Array.from(t.map(BigInt)), [1, t.length]);
  const rows = (out, T) => { const V = out.dims[2], d = out.data, r = [];
                             for (let t = 0; t < T; t++) r.push(Array.from(d.subarray(t * V, (t + 1) * V))); return r; };
  if (!greedy) {
    const feeds = { input_ids: ids(ids0) };
    for (const n of sess.inputNames) if (n.startsWith('past_key_values.')) {
      const meta = sess.inputMetadata ? null : null; void meta;
      feeds[n] = new ort.Tensor('float32', new Float32Array(0), [1, 0, 0, 0]);
    }
    if (Object.keys(feeds).length > 1) { // empty past: shape [1, Hkv, 0, hd] from a present output of a 1-token run
      process.stderr.write('ort_run.js: use --greedy with --kv-cache models\n'); process.exit(2);
    }
    const out = await sess.run(feeds);
    process.stdout.write(JSON.stringify({ logits: rows(out.logits, ids0.length) }) + '\n');
    return;
  }
  const seq = ids0.slice(), gen = [], lps = [];
  if (!kv) {
    for (let s = 0; s < greedy; s++) {
      const out = await sess.run({ input_ids: ids(seq) });
      const r = rows(out.logits, seq.length)[seq.length - 1], k = argmax(r);
      gen.push(k); lps.push(logsoftmax(r, k)); seq.push(k);
    }
  } else {
    const pastNames = sess.inputNames.filter(n => n.startsWith('past_key_values.'));
    // past length 0: [1, Hkv, 0, hd]; Hkv and hd from the graph's declared input shapes when given, else probe
    const dims = {};
    for (const n of pastNames) {
      const md = sess.inputMetadata && sess.inputMetadata.find ? sess.inputMetadata.find(m => m.name === n) : null;
      const sh = md && md.shape ? md.shape : null;
      dims[n] = sh && typeof sh[1] === 'number' && typeof sh[3] === 'number' ? [1, sh[1], 0, sh[3]] : null;
    }
    let past = {};
    for (const n of pastNames) {
      if (!dims[n]) { process.stderr.write('ort_run.js: cannot read past_key_values shapes\n'); process.exit(2); }
      past[n] = new ort.Tensor('float32', new Float32Array(0), dims[n]);
    }
    let feedIds = seq.slice();
    for (let s = 0; s < greedy; s++) {
      const out = await sess.run(Object.assign({ input_ids: ids(feedIds) }, past));
      const r = rows(out.logits, feedIds.length)[feedIds.length - 1], k = argmax(r);
      gen.push(k); lps.push(logsoftmax(r, k)); seq.push(k);
      past = {};
      for (const n of pastNames) past[n] = out[n.replace('past_key_values.', 'present.')];
      feedIds = [k];
    }
  }
  process.stdout.write(JSON.stringify({ ids: gen, logprobs: lps }) + '\n');
})().catch(e => { process.stderr.write('ort_run.js: ' + (e && e.message || e) + '\n'); process.exit(1); });
