// tiktoken_encode.js FILE [ENCODING] — scripts/bench_tokenizer.sh: npm tiktoken (WASM, single-threaded)
// encode_ordinary of FILE (an empty FILE measures start + load alone). ENCODING defaults to cl100k_base.
// Prints one line: "tokens=N load_ms=X encode_ms=Y".
'use strict';
const fs = require('fs');
const t0 = process.hrtime.bigint();
const { get_encoding } = require('tiktoken');
const enc = get_encoding(process.argv[3] || 'cl100k_base');
const text = fs.readFileSync(process.argv[2], 'utf8');
const t1 = process.hrtime.bigint();
const ids = enc.encode_ordinary(text);
const t2 = process.hrtime.bigint();
enc.free();
const ms = (a, b) => (Number(b - a) / 1e6).toFixed(1);
console.log(`tokens=${ids.length} load_ms=${ms(t0, t1)} encode_ms=${ms(t1, t2)}`);
