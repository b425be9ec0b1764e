"""Tools around the worker, not the worker: destination simulators, the embedded broker, the demo,
the benchmark and sample events.

They ship in the package because ``loyalty-relay demo``, ``simulate`` and ``bench`` need them,
but nothing the ``run`` command loads imports them (``tests/unit/test_layering.py``).
"""
