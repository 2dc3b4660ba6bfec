"""Registers ``test-report-pid`` (an in-loop control that reports which process ran it) and ``test-segfault``.

Executors import it in their workers through ``SimTask.setup_modules``,
as they import ``app.sim_adaptive`` for ``adaptive``.
"""

from __future__ import annotations

from failing_controls import report_pid, segfault

from simulation.controls import register_control

register_control("test-report-pid", report_pid)
register_control("test-segfault", segfault)
