"""Every use of Dask's private API in linscan, in one place, so that a Dask upgrade touches
this file alone.

Tested with Dask 2026.8. The names and signatures used below exist as used from Dask 2025.1,
the oldest that ``setup.cfg``'s ``dask`` extra allows (read from its source, not run). What is
private here, and why linscan needs it:

* ``dask._task_spec`` (``Task``, ``TaskRef``, ``Alias``, ``convert_legacy_graph``): to copy
  a graph under new keys and make the copies of the tasks that load data wait for one more
  task (:func:`loaded_after`). The public ``dask.graph_manipulation.bind`` means to do this,
  but (Dask 2026.8) its copies of ``rechunk`` and ``reshape`` graphs still point at the
  original keys, so they load the data before the carries are known.
* ``dask.core.flatten``: the keys of a collection's nested key lists.
* ``Array._meta`` (:func:`meta`): an empty array of a Dask array's chunk type, to tell NumPy
  chunks from CuPy ones without computing any.

The rest of ``linscan.dask`` uses public API only: ``dask.array.Array(graph, name, chunks,
dtype, meta)``, ``HighLevelGraph(layers, dependencies)``, ``HighLevelGraph.from_collections``
and ``HighLevelGraph.merge``, ``dask.base.tokenize``, ``__dask_keys__`` and tasks written as
tuples ``(function, *arguments)`` (Dask's graph specification).
"""

from __future__ import annotations

import dask.array as da
from dask._task_spec import Alias, Task, TaskRef, convert_legacy_graph
from dask.base import tokenize
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph


def meta(arr):
    """An empty array of the type of Dask array ``arr``'s chunks (NumPy or CuPy)."""
    return arr._meta


def keys_of(collection):
    """The keys of a Dask collection's blocks, flat."""
    return flatten(collection.__dask_keys__())


def loaded_after(inputs, carries):
    """Copies of the Dask arrays ``inputs`` (``None`` kept) that load only once every block
    of the Dask array ``carries`` is computed: see "Memory and reads" in ``linscan.dask``.

    Every task of the inputs' graphs is copied under a new key, and the copies of the tasks
    that depend on no other task (those that load or make data) wait for one task that waits
    for every carry. Data already in memory (arrays embedded in the graph, or persisted on a
    cluster) is not copied: the copies' blocks refer to it."""
    arrays = [arr for arr in inputs if arr is not None]
    token = tokenize(carries.name, *[arr.name for arr in arrays])
    graph = convert_legacy_graph(dict(HighLevelGraph.merge(*[arr.dask for arr in arrays])))
    tasks = [key for key, node in graph.items() if isinstance(node, (Task, Alias))]
    renamed = {key: copied_key(key, token) for key in tasks}
    ready = "linscan-carries-ready-" + token
    copied = {ready: Task(ready, wait_for, *map(TaskRef, keys_of(carries)))}
    for key, new in renamed.items():
        node = graph[key].substitute(renamed, key=new)
        if isinstance(node, Task) and not node.dependencies & renamed.keys():
            node = Task(new, after, TaskRef(ready), node.substitute({}, key=None))
        copied[new] = node
    for arr in arrays:
        for key in keys_of(arr):
            if key not in renamed:  # in memory already: the copy is another name for it
                copied[copied_key(key, token)] = Alias(copied_key(key, token), key)
    copies = iter(
        da.Array(
            HighLevelGraph.from_collections(copied_key(arr.name, token), copied,
                                            [carries, *arrays]),
            copied_key(arr.name, token),
            arr.chunks,
            dtype=arr.dtype,
            meta=meta(arr),
        )  # fmt: skip
        for arr in arrays
    )
    return tuple(None if arr is None else next(copies) for arr in inputs)


def copied_key(key, token):
    """The key of the copy of task ``key`` (a name, or a tuple of a name and a block index)."""
    if isinstance(key, tuple):
        return (copied_key(key[0], token),) + key[1:]
    return f"{key}-again-{token}"


def wait_for(*values):
    """A task that waits for ``values`` (the carries) and returns nothing."""
    return None


def after(ready, value):
    """``value``, computed only once ``ready`` (the task waiting for the carries) is."""
    return value
