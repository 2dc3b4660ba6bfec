"""The composition root: where the domain packages are wired together.

Why a package of its own: the domain packages (``field_firmware_stubs``,
``sensors``, ``controller``, ``simulation``, ``dashboards``) depend only on
the shared contracts in ``traffic``; something has to know all of them to
build a running system. That is this package and nothing else:

* :mod:`app.cli` - the ``traffic`` console script;
* :mod:`app.closed_loop` - the whole stack in one process (demo, integration test);
* :mod:`app.demo` - ``traffic demo``;
* :mod:`app.services` - private Mosquitto and PostgreSQL for local runs;
* :mod:`app.secure_broker` - a TLS + ACL Mosquitto built on those;
* :mod:`app.review` - plan review tables;
* :mod:`app.sim_adaptive` - the central loop on any SUMO scenario (benchmarks, ``--control adaptive``).

Nothing below imports from here (``tests/test_layers.py`` checks it).
"""
