#!/usr/bin/python3
"""Make malformed / unmappable ONNX files from a good one for tests (Debian
python3-onnx; test fixtures only, never used at run time).
usage: mutate.py IN.onnx OUT.onnx KIND
  tanh        the first Sigmoid becomes Tanh (MLP no longer SiLU)
  no-embed    input_ids feeds an Identity instead of the embedding Gather
  opset       ai.onnx opset 99
  domain      first node moved to domain com.example.custom
  short       first initializer's raw_data cut in half
  ext-escape  first initializer moved to external data at ../escape.bin
  ext-neg     first initializer external with offset -4096
  ext-link    first initializer external at link.bin (the test makes it a symlink out)
  overflow    an initializer with dims [2^40, 2^40, 2^40]
  deep        a graph of If nodes nested 200 deep
  ext-ok      every initializer to external data weights.bin beside OUT
  tie         (anvil's export) classifier output.weight replaced by a Transpose of token_embd.weight"""
import sys
import onnx
from onnx import external_data_helper as ed

src, dst, kind = sys.argv[1:4]
m = onnx.load(src)
g = m.graph
if kind == 'tanh':
    next(n for n in g.node if n.op_type == 'Sigmoid').op_type = 'Tanh'
elif kind == 'no-embed':
    n = next(n for n in g.node if n.op_type == 'Gather' and 'input_ids' in n.input)
    g.node.insert(0, onnx.helper.make_node('Identity', ['input_ids'], ['ids_copy'], name='/copy_ids'))
    n.input[1] = 'ids_copy'
elif kind == 'opset':
    m.opset_import[0].version = 99
elif kind == 'domain':
    g.node[0].domain = 'com.example.custom'
    m.opset_import.append(onnx.helper.make_opsetid('com.example.custom', 1))
elif kind == 'short':
    t = g.initializer[0]
    t.raw_data = t.raw_data[:len(t.raw_data) // 2]
elif kind in ('ext-escape', 'ext-neg', 'ext-link'):
    t = g.initializer[0]
    t.data_location = onnx.TensorProto.EXTERNAL
    loc, off = {'ext-escape': ('../escape.bin', '0'), 'ext-neg': ('w.bin', '-4096'), 'ext-link': ('link.bin', '0')}[kind]
    for k, v in (('location', loc), ('offset', off), ('length', str(len(t.raw_data)))):
        e = t.external_data.add(); e.key = k; e.value = v
    t.ClearField('raw_data')
elif kind == 'overflow':
    t = g.initializer[0]
    del t.dims[:]
    t.dims.extend([1 << 40] * 3)
elif kind == 'deep':
    h = onnx.helper
    out = h.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])
    body = h.make_graph([h.make_node('Constant', [], ['y'], value=h.make_tensor('c', 1, [1], [0.0]))], 'leaf', [], [out])
    leaf = body
    for i in range(200):
        node = h.make_node('If', ['cond'], ['y'], then_branch=body, else_branch=leaf, name='if%d' % i)
        body = h.make_graph([node], 'g%d' % i, [], [out])
    g = h.make_graph(list(body.node), 'main', [h.make_tensor_value_info('cond', onnx.TensorProto.BOOL, [])], [out])
    m = h.make_model(g, opset_imports=[h.make_opsetid('', 17)])
elif kind == 'tie':
    i = next(i for i, n in enumerate(g.node) if 'output.weight' in n.input)
    g.node[i].input[list(g.node[i].input).index('output.weight')] = 'tied_output'
    g.node.insert(i, onnx.helper.make_node('Transpose', ['token_embd.weight'], ['tied_output'], name='/tie', perm=[1, 0]))
    g.initializer.remove(next(t for t in g.initializer if t.name == 'output.weight'))
elif kind == 'ext-ok':
    onnx.save_model(m, dst, save_as_external_data=True, all_tensors_to_one_file=True, location='weights.bin',
                    size_threshold=0)
    sys.exit(0)
else:
    sys.exit('unknown kind ' + kind)
onnx.save_model(m, dst)
