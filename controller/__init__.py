"""The central side: safety check, demand, optimizer, plan lifecycle, dispatch, the loop.

Modules, one responsibility each:

* :mod:`controller.safety` - the central safety rules (``check_plan``, ``ensure_safe``);
* :mod:`controller.webster` - Webster's cycle, splits and delay (pure numpy);
* :mod:`controller.demand` - per-phase critical flow in pcu from stored counts;
* :mod:`controller.optimizer` - plans with bounded change, corridor common cycle, green wave;
* :mod:`controller.plan_store` / :mod:`controller.locks` - lifecycle and engineer locks in PostgreSQL;
* :mod:`controller.dispatch` - MQTT 5 request/response to the field;
* :mod:`controller.service` - the epoch loop that ties them together;
* :mod:`controller.examples` - small hand-made intersections for tests and demos;
* :mod:`controller.bench` - speed measurements (``python -m controller.bench``).

Import from the submodules; this package deliberately re-exports nothing so
importing the safety check never drags in paho or psycopg.
"""
