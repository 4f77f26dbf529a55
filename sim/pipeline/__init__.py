"""The production pipeline between serving and the logs / trainers: its faults and repairs.

``engine.faults`` (:class:`FaultsConfig`) switches them on; all off by default, and then nothing
here runs or draws. A shard wraps each cell's policy for personalization timeouts
(:meth:`Pipeline.serving_cell`) and turns each served batch into what the log and the trainers
receive (:meth:`Pipeline.report`); the driver delays log batches (:func:`batch_delay`). Every
draw comes from streams keyed like the others (member block, window, cell), so results with
faults stay deterministic and identical for any shard count.

Modules: :mod:`.config` (the ``engine.faults`` schema; imports only :mod:`sim.schema`, so the
config can embed it), :mod:`.fallback` (timeouts at serving), :mod:`.report` (the event join),
:mod:`.stage` (what the shard and the driver call). This ``__init__`` imports none of them, so
that :mod:`sim.config` importing :mod:`.config` pulls in nothing else.
"""
