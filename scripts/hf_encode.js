#!/usr/bin/env node
// hf_encode.js — encode a text file with HF tokenizers (npm "tokenizers") and
// print the ids as a JSON array: the reference for anvil's tokenizer.json
// reader/encoder and for tokenizer.json files written by `anvil` BPE training.
//   usage: node scripts/hf_encode.js tokenizer.json input.txt [--special] [--vocab]
//   --special  add special tokens (post-processor), default off
//   --vocab    print {"n_vocab": N, "vocab": {...}} instead (what HF loaded)
// Needs: npm install tokenizers@0.23.2 (NODE_PATH or a node_modules next to it).
'use strict';
const fs = require('fs');
let Tokenizer;
try { ({ Tokenizer } = require('tokenizers')); } catch (e) {
  process.stderr.write('hf_encode.js: npm package "tokenizers" not found (npm install tokenizers@0.23.2)\n');
  process.exit(2);
}
const args = process.argv.slice(2);
const flags = new Set(args.filter(a => a.startsWith('--')));
const pos = args.filter(a => !a.startsWith('--'));
if (pos.length < 1 || (pos.length < 2 && !flags.has('--vocab'))) {
  process.stderr.write('usage: hf_encode.js tokenizer.json input.txt [--special] [--vocab]\n');
  process.exit(2);
}
(async () => {
  const tok = Tokenizer.fromFile(pos[0]);
  if (flags.has('--vocab')) {
    const v = tok.getVocab(true);
    process.stdout.write(JSON.stringify({ n_vocab: tok.getVocabSize(true), vocab: v }) + '\n');
    return;
  }
  const text = fs.readFileSync(pos[1], 'utf8');
  const enc = await tok.encode(text, null, { addSpecialTokens: flags.has('--special') });
  process.stdout.write(JSON.stringify(enc.getIds()) + '\n');
})().catch(e => { process.stderr.write('hf_encode.js: ' + e + '\n'); process.exit(1); });
