"""Registers ``test-report-pid`` on import: an in-loop control (not batch) that reports which process ran it.

Executors import it in their workers through ``SimTask.setup_modules``,
as they import ``app.sim_adaptive`` for ``adaptive``.
"""

from __future__ import annotations

from failing_controls import report_pid

from simulation.controls import register_control

register_control("test-report-pid", report_pid)
