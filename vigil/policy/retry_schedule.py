"""When a VM whose start failed is tried again: the ``settings/retries`` object.

vSphere HA retries a failed restart after 2, 6, 14 and 30 minutes (delays of 2, 4, 8, 16)
and then gives up. vigil keeps that doubling shape in seconds (2, 4, 8, 16, 32, then every
60 s): its restarts take seconds, not the minutes of a vCenter round trip, and the usual
causes of a failed start here are short-lived (the disk lock of a QEMU still going away, a
host that just rebooted, a datastore coming back). Minutes would leave a VM down for a
transient cause; retrying sooner costs one QEMU spawn. The first retry is at once, on
another host (the failure says little about the others). By default the retries never
stop (``max_attempts`` 0), as before: a protected VM is kept trying. Both are settable
(``vigil cluster set retries --delays 120,240,480,960 --max-attempts 5`` is vSphere's).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vigil.model import SpecError
from vigil.policy.view import Retry

SETTING = "retries"
DEFAULT_DELAYS = (2.0, 4.0, 8.0, 16.0, 32.0, 60.0)


@dataclass(frozen=True)
class RetrySchedule:
    # seconds between one attempt and the next: the n-th retry waits delays[n-1] after
    # the one before (the last repeats); the first retry, on another host, waits nothing
    delays: tuple[float, ...] = DEFAULT_DELAYS
    max_attempts: int = 0  # retries before giving up; 0: never

    def validate(self) -> None:
        if not self.delays:
            raise SpecError("a retry schedule needs at least one delay")
        if len(self.delays) > 32:
            raise SpecError("at most 32 retry delays")
        for d in self.delays:
            if not isinstance(d, (int, float)) or not 0 < d <= 86400:
                raise SpecError(f"a retry delay must be in (0, 86400] seconds (got {d})")
        if not isinstance(self.max_attempts, int) or not 0 <= self.max_attempts <= 1000:
            raise SpecError(f"max attempts must be between 0 (never give up) and 1000 (got {self.max_attempts})")

    def delay(self, attempts: int) -> float:
        """Seconds after retry number ``attempts`` (1, 2, ...) before the next one."""
        return float(self.delays[min(max(attempts, 1), len(self.delays)) - 1])

    def exhausted(self, attempts: int) -> bool:
        """No retry after ``attempts`` retries."""
        return self.max_attempts > 0 and attempts >= self.max_attempts

    def after(self, attempts: int, now: float, host: str) -> Retry:
        """The record of retry number ``attempts``, made at ``now`` on ``host``."""
        return Retry(attempts=attempts, not_before=now + self.delay(attempts), last_host=host)

    def to_json(self) -> dict[str, Any]:
        return {"delays": list(self.delays), "max_attempts": self.max_attempts}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RetrySchedule":
        unknown = sorted(set(d) - {"delays", "max_attempts"})
        if unknown:
            raise SpecError(f"unknown retries field {', '.join(unknown)}")
        delays = d.get("delays", DEFAULT_DELAYS)
        if isinstance(delays, (str, bytes)) or not hasattr(delays, "__iter__"):
            raise SpecError("delays must be a list of seconds")
        return cls(delays=tuple(float(x) if isinstance(x, (int, float)) else x for x in delays),
                   max_attempts=d.get("max_attempts", 0))


def retry_schedule(settings: Mapping[str, Mapping[str, Any]] | None) -> RetrySchedule:
    """The cluster's schedule as the controller reads it (one that does not parse: the default)."""
    raw = (settings or {}).get(SETTING)
    if not raw:
        return RetrySchedule()
    try:
        s = RetrySchedule.from_json(raw)
        s.validate()
        return s
    except (SpecError, TypeError, ValueError):
        return RetrySchedule()
