#!/usr/bin/python3
"""Compare the tensors of two GGUF files byte for byte (names, dtypes, shapes,
data), reading offsets from `anvil info --json`. Exit 0 when equal.
usage: gguf_tensors_equal.py ANVIL_INFO A.gguf B.gguf"""
import json, subprocess, sys

def tensors(info, path):
    j = json.loads(subprocess.check_output([info, '--json', path]))
    data = open(path, 'rb').read()
    return {t['name']: (t['dtype'], t['shape'], data[t['offset']:t['offset'] + t['bytes']]) for t in j['tensors']}

info, a, b = sys.argv[1:4]
ta, tb = tensors(info, a), tensors(info, b)
diff = sorted(set(ta) ^ set(tb)) + [k for k in ta if k in tb and ta[k] != tb[k]]
print('%d / %d tensors byte-identical' % (sum(1 for k in ta if tb.get(k) == ta[k]), len(ta)))
if diff:
    print('differ:', diff[:10])
    sys.exit(1)
