"""Open smart-traffic signal control: the shared façade.

This package holds what every part of the system agrees on: the exception
tree (:mod:`traffic.errors`), configuration (:mod:`traffic.config`), MQTT
topics (:mod:`traffic.topics`), the wire messages (:mod:`traffic.messages`),
the timing-plan model (:mod:`traffic.plan`), intersection geometry
(:mod:`traffic.intersection`) and the database schema (:mod:`traffic.db`).
The domain packages (``controller``, ``sensors``, ``simulation``,
``field_firmware_stubs``, ``dashboards``) build on it and never on each
other's private modules.
"""

__version__ = "0.1.0"
