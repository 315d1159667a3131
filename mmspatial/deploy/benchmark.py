"""A fixed and a dynamic ONNX file of one model, measured side by side.

For each form: export time, file size, node count (Loop bodies included),
onnxruntime session creation time and CPU latency with its full and with its
basic graph optimisations; PyTorch eager's latency on the same input, timed in
alternation with onnxruntime's so that a drifting machine load hits all alike
(``mmspatial.benchmarking.time_side_by_side``). ``tools/deployment/export_onnx.py
--benchmark`` prints the table.

On a shared machine set ``OMP_WAIT_POLICY=PASSIVE`` for the process: PyTorch's
OpenMP threads otherwise spin at every barrier, and with the cores taken by
other jobs a 2-thread eager forward ran 5-20x slower than with passive
waiting (onnxruntime's threads are told to sleep, see ``onnx_session``).
"""
import os
import os.path as osp
import tempfile
import time

import torch

from mmspatial.benchmarking import time_side_by_side

from .onnx_export import _require, export_onnx, onnx_session

OPTIMIZATIONS = ('all', 'basic')


def count_nodes(graph):
    """Nodes of an ONNX graph, those of its subgraphs (Loop bodies) included."""
    total = 0
    for node in graph.node:
        total += 1
        for attribute in node.attribute:
            if attribute.g.node:
                total += count_nodes(attribute.g)
            for subgraph in attribute.graphs:
                total += count_nodes(subgraph)
    return total


def compare_fixed_and_dynamic(module, shape, rounds=3, threads=2, opset=17):
    """Measure both forms of ``module`` at ``shape`` (batch 1).

    Returns:
        list[dict]: one row per (form, optimisation) and one for PyTorch eager:
        ``form``, ``optimization``, ``export_s``, ``file_mb``, ``nodes``,
        ``session_s``, ``latency_s`` (median of ``rounds``), ``vs_eager``
        (onnxruntime's latency over eager's).
    """
    onnx = _require('onnx')
    torch.set_num_threads(threads)
    inputs = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    feeds = {'images': inputs.numpy()}
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as folder:
        for form in ('fixed', 'dynamic'):
            path = osp.join(folder, f'{form}.onnx')
            start = time.perf_counter()
            export_onnx(module, shape, path, opset=opset, dynamic=form == 'dynamic')
            export_s = time.perf_counter() - start
            nodes = count_nodes(onnx.load(path).graph)
            for optimization in OPTIMIZATIONS:
                start = time.perf_counter()
                session = onnx_session(path, threads, optimization)
                session_s = time.perf_counter() - start
                rows.append(dict(form=form, optimization=optimization, export_s=export_s,
                                 file_mb=os.path.getsize(path) / 2**20, nodes=nodes,
                                 session_s=session_s))
                runs.append(lambda session=session: session.run(None, feeds))

        def eager():
            with torch.no_grad():
                module(inputs)

        timings = time_side_by_side([eager, *runs], rounds, warmup=1)
    eager_s = timings[0][0]
    for row, (median, _) in zip(rows, timings[1:]):
        row.update(latency_s=median, vs_eager=median / eager_s)
    return [dict(form='PyTorch eager', latency_s=eager_s, vs_eager=1.0), *rows]


def format_table(rows):
    """The rows of :func:`compare_fixed_and_dynamic` as a Markdown table."""
    columns = [('form', '{}'), ('optimization', '{}'), ('export_s', '{:.1f}'),
               ('file_mb', '{:.1f}'), ('nodes', '{:,}'), ('session_s', '{:.2f}'),
               ('latency_s', '{:.3f}'), ('vs_eager', '{:.2f}x')]
    lines = ['| ' + ' | '.join(name for name, _ in columns) + ' |',
             '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(fmt.format(row[name]) if name in row else ''
                                       for name, fmt in columns) + ' |')
    return '\n'.join(lines)
