"""The project's one exception tree.

Every error the project raises on purpose derives from :class:`TrafficError`,
so a caller can catch the whole family with one ``except``. Errors from the
libraries underneath (paho-mqtt, psycopg, SUMO) are mapped into this tree at
the module that talks to them, with the original kept as ``__cause__``.

Every class pickles with its message and attributes intact: seeds run in
worker processes (``simulation.controls.run_seeds``), and an exception that
cannot be rebuilt on the way back turns into ``BrokenProcessPool`` instead of
the reason the user needs to read. Classes whose ``__init__`` does not take
the message alone say how to rebuild themselves through :meth:`_init_args`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # traffic.plan imports this module
    from traffic.plan import Violation


def _rebuild(cls: type[TrafficError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> TrafficError:
    """Unpickling helper: call ``cls(*args, **kwargs)`` (``__reduce__`` cannot pass keywords itself)."""
    return cls(*args, **kwargs)


class TrafficError(Exception):
    """Raised for any failure the project itself detects or maps."""

    def _init_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments that rebuild this exception (default: ``self.args``)."""
        return tuple(self.args), {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild through ``__init__`` with the original arguments, then restore every attribute."""
        args, kwargs = self._init_args()
        return _rebuild, (type(self), args, kwargs), dict(self.__dict__) or None


class ConfigError(TrafficError):
    """Raised when configuration (file or environment) is missing or invalid."""


class InputError(TrafficError):
    """Raised when a file or value the user supplied cannot be read or is malformed (CLI exit code 2)."""


class MessageError(TrafficError):
    """Raised when a wire message cannot be decoded or fails its schema."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field

    def _init_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.reason,), {"field": self.field}


class PlanError(TrafficError):
    """Raised when a timing plan is malformed (before any safety judgement)."""


class UnsafePlanError(PlanError):
    """Raised when a timing plan breaks a safety rule; ``violations`` says which."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = list(violations)
        text = "; ".join(f"{v.rule}: {v.detail}" for v in self.violations)
        super().__init__(f"unsafe plan: {text}")

    def _init_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.violations,), {}

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
