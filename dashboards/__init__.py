"""Grafana dashboards as code over the project's own tables.

:mod:`dashboards.queries` holds every panel's SQL (one place, Grafana
macros), :mod:`dashboards.macros` expands those macros for tests and
tools, and :mod:`dashboards.build` assembles the dashboard JSON with
grafana-foundation-sdk and writes Grafana provisioning files.
"""
