// hf_train.js CORPUS... — scripts/bench_tokenizer.sh: HF tokenizers (npm) byte-level BPE training with the
// binding's only trainer, the model's default BpeTrainer (vocab_size 30000, min_frequency 0; the npm package
// exposes no way to change it). Pre-tokenizer: byteLevel(addPrefixSpace=false, useRegex=true), i.e. the GPT-2
// split, as anvil's --pattern gpt2. Prints one line: "vocab=N load_ms=X train_ms=Y".
'use strict';
const t0 = process.hrtime.bigint();
const { Tokenizer, BPE, byteLevelPreTokenizer } = require('tokenizers');
const files = process.argv.slice(2);
if (files.length === 0) { console.error('usage: hf_train.js CORPUS...'); process.exit(2); }
const tok = new Tokenizer(BPE.empty());
tok.setPreTokenizer(byteLevelPreTokenizer(false, true));
const t1 = process.hrtime.bigint();
tok.train(files);
const t2 = process.hrtime.bigint();
const ms = (a, b) => (Number(b - a) / 1e6).toFixed(1);
console.log(`vocab=${tok.getVocabSize()} load_ms=${ms(t0, t1)} train_ms=${ms(t1, t2)}`);
