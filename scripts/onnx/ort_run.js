#!/usr/bin/env node
// ort_run.js — run an ONNX Llama decoder with onnxruntime-node (the reference
// runtime for anvil's ONNX export) and print one JSON object on stdout.
//   node ort_run.js MODEL.onnx --ids 1,2,3            -> {"logits": [[...T rows of vocab floats]]}
//   node ort_run.js MODEL.onnx --ids 1 --greedy 32    -> {"ids": [...], "logprobs": [...]} (full re-run per step)
//   ... --kv-cache: the greedy loop feeds present.N.* back as past_key_values.N.* (one token per step)
//   node ort_run.js MODEL.onnx --ids 1,2,3 --left-pad K -> {"logits": [...], "logits1": [...]}: a batch of 2,
//       row 0 = K padding tokens (id 0, attention_mask 0) + ids, position_ids 0,0..,0,1..n-1 (HF's
//       cumsum - 1); row 1 = ids + the first K ids, unpadded. "logits" = row 0's real-token rows,
//       "logits1" = row 1's first n rows (both comparable with the unpadded run of ids)
//   attention_mask (all ones) and position_ids (past..past+n-1) are fed when the graph takes them;
//   empty past_key_values ([1, Hkv, 0, hd]) when it takes those.
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
  const i64 = (rows) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);
  const rows = (out, T, b = 0) => { const V = out.dims[2], d = out.data, r = [], o = b * T * V;
                                    for (let t = 0; t < T; t++) r.push(Array.from(d.subarray(o + t * V, o + (t + 1) * V))); return r; };
  const takes = n => sess.inputNames.includes(n);
  // inputs for a batch of token rows after `past` cached positions: mask all ones, positions past..
  const feed = (toks, past, mask, pos) => {
    const f = { input_ids: i64(toks) };
    if (takes('attention_mask')) f.attention_mask = i64(mask || toks.map(r => new Array(past + r.length).fill(1)));
    if (takes('position_ids')) f.position_ids = i64(pos || toks.map(r => r.map((_, t) => past + t)));
    return f;
  };
  const pastNames = sess.inputNames.filter(n => n.startsWith('past_key_values.'));
  const emptyPast = B => { // [B, Hkv, 0, hd] from the graph's declared input shapes
    const p = {};
    for (const n of pastNames) {
      const md = sess.inputMetadata && sess.inputMetadata.find ? sess.inputMetadata.find(m => m.name === n) : null;
      const sh = md && md.shape ? md.shape : null;
      if (!(sh && typeof sh[1] === 'number' && typeof sh[3] === 'number')) {
        process.stderr.write('ort_run.js: cannot read past_key_values shapes\n'); process.exit(2);
      }
      p[n] = new ort.Tensor('float32', new Float32Array(0), [B, sh[1], 0, sh[3]]);
    }
    return p;
  };
  const padK = Number(opt('--left-pad', '0'));
  if (padK > 0) {
    const n = ids0.length, L = n + padK;
    const r0 = new Array(padK).fill(0).concat(ids0), r1 = ids0.concat(ids0.slice(0, padK));
    while (r1.length < L) r1.push(ids0[0]);
    const m0 = r0.map((_, t) => (t < padK ? 0 : 1)), m1 = new Array(L).fill(1);
    const p0 = r0.map((_, t) => (t < padK ? 0 : t - padK)), p1 = r1.map((_, t) => t);
    const out = await sess.run(Object.assign(feed([r0, r1], 0, [m0, m1], [p0, p1]), emptyPast(2)));
    process.stdout.write(JSON.stringify({ logits: rows(out.logits, L, 0).slice(padK), logits1: rows(out.logits, L, 1).slice(0, n) }) + '\n');
    return;
  }
  if (!greedy) {
    const out = await sess.run(Object.assign(feed([ids0], 0), emptyPast(1)));
    process.stdout.write(JSON.stringify({ logits: rows(out.logits, ids0.length) }) + '\n');
    return;
  }
  const seq = ids0.slice(), gen = [], lps = [];
  if (!kv) {
    for (let s = 0; s < greedy; s++) {
      const out = await sess.run(feed([seq], 0));
      const r = rows(out.logits, seq.length)[seq.length - 1], k = argmax(r);
      gen.push(k); lps.push(logsoftmax(r, k)); seq.push(k);
    }
  } else {
    let past = emptyPast(1);
    let feedIds = seq.slice();
    for (let s = 0; s < greedy; s++) {
      const out = await sess.run(Object.assign(feed([feedIds], seq.length - feedIds.length), past));
      const r = rows(out.logits, feedIds.length)[feedIds.length - 1], k = argmax(r);
      gen.push(k); lps.push(logsoftmax(r, k)); seq.push(k);
      past = {};
      for (const n of pastNames) past[n] = out[n.replace('past_key_values.', 'present.')];
      feedIds = [k];
    }
  }
  process.stdout.write(JSON.stringify({ ids: gen, logprobs: lps }) + '\n');
})().catch(e => { process.stderr.write('ort_run.js: ' + (e && e.message || e) + '\n'); process.exit(1); });
