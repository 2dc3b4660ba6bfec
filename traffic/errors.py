"""The project's one exception tree.

Every error the project raises on purpose derives from :class:`TrafficError`,
so a caller can catch the whole family with one ``except``. Errors from the
libraries underneath (paho-mqtt, psycopg, SUMO) are mapped into this tree at
the module that talks to them, with the original kept as ``__cause__``.
"""

from __future__ import annotations


class TrafficError(Exception):
    """Raised for any failure the project itself detects or maps."""


class ConfigError(TrafficError):
    """Raised when configuration (file or environment) is missing or invalid."""


class MessageError(TrafficError):
    """Raised when a wire message cannot be decoded or fails its schema."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field


class PlanError(TrafficError):
    """Raised when a timing plan is malformed (before any safety judgement)."""


class UnsafePlanError(PlanError):
    """Raised when a timing plan breaks a safety rule; ``violations`` says which."""

    def __init__(self, violations: "list") -> None:  # list[traffic.plan.Violation]
        self.violations = list(violations)
        text = "; ".join(f"{v.rule}: {v.detail}" for v in self.violations)
        super().__init__(f"unsafe plan: {text}")

    @property
    def rules(self) -> list[str]:
        """The rule identifiers that were broken, in order of detection."""
        return [v.rule for v in self.violations]


class TransportError(TrafficError):
    """Raised when the MQTT link fails (connect, publish, subscribe, timeout)."""


class StorageError(TrafficError):
    """Raised when the database cannot be reached or a statement fails."""


class SimulationError(TrafficError):
    """Raised when SUMO cannot be started, crashes, or produces unusable output."""


class ScenarioError(SimulationError):
    """Raised when a SUMO scenario or network cannot be read or mapped."""


class DispatchError(TrafficError):
    """Raised when a plan cannot be delivered or the field does not answer."""


class ServiceError(TrafficError):
    """Raised when an embedded service (broker, database cluster) cannot start."""
