#!/usr/bin/python3
"""Max |logit difference| between ort_run.js output and a reference.
usage: logits_diff.py ORT.json REF.json [TOL]
REF: shared/reference/torch/logits.json (all_logits [T][V]) or another ort_run.js output.
Prints "max_abs_diff X argmax_equal A/T"; exit 1 when X > TOL (default 1e-4) or an argmax differs."""
import json, sys
a = json.load(open(sys.argv[1]))['logits']
r = json.load(open(sys.argv[2]))
b = r['all_logits'] if 'all_logits' in r else r['logits']
tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b)), 'shapes differ'
d = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
am = sum(ra.index(max(ra)) == rb.index(max(rb)) for ra, rb in zip(a, b))
print('max_abs_diff %.3g argmax_equal %d/%d' % (d, am, len(a)))
sys.exit(0 if d <= tol and am == len(a) else 1)
