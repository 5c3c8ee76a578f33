"""DRS settings (``settings/drs``): the mode, vSphere's five threshold levels, and what
each level means as numbers.

The threshold says how much imbalance the cluster tolerates and how much a round of
moves must gain: level 1 makes mandatory moves only (a broken rule fixed), level 5
balances the most eagerly. Each level tolerates a spread of the hosts' loads around their
mean (a coefficient of variation: level 3, 0.30, hosts within about 30 % of the mean) and
a margin: a round that acts aims that much below the tolerated imbalance (level 3: 10 %,
acting after 3 rounds over, as Proxmox's defaults), so that noise does not start it again. The imbalance
shown is Proxmox's normalised one (CV / sqrt(N-1), 0..1), so what a level tolerates is
shown the same way: ``tolerated(n)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from vigil.model import SpecError

MODES = ("off", "manual", "automatic")

# level -> (coefficient of variation tolerated, how far below it a round aims, relative);
# level 1 balances nothing
LEVELS: Mapping[int, tuple[float, float]] = {
    1: (math.inf, 1.0),
    2: (0.50, 0.20),
    3: (0.30, 0.10),
    4: (0.20, 0.05),
    5: (0.10, 0.02),
}


@dataclass(frozen=True)
class DrsSettings:
    mode: str = "off"
    threshold: int = 3
    interval_s: float = 60.0  # between two rounds (oVirt balances every minute)
    hold_rounds: int = 3  # rounds the imbalance must last before a load move (Proxmox: 3)
    cooldown_s: float = 600.0  # a VM just moved is not moved again for this long
    max_moves: int = 4  # DRS migrations in flight at once, in the whole cluster
    # the least a move must gain per GiB of memory it copies, as the drop of the hosts' summed
    # squared deviation from the mean load (a 1 % load moved from a 60 % to a 40 % host: 0.004)
    gain_per_gib: float = 0.001
    # Storage DRS (vigil.policy.sdrs): a datastore used past this share gets disks moved off
    space_threshold: float = 0.80
    # and one whose disks' operations take longer than this on average (vSphere: 15 ms)
    latency_threshold_ms: float = 15.0

    def tolerated(self, hosts: int) -> float:
        """The normalised imbalance this level tolerates on ``hosts`` hosts."""
        return min(1.0, LEVELS[self.threshold][0] / math.sqrt(max(hosts - 1, 1)))

    @property
    def margin(self) -> float:
        return LEVELS[self.threshold][1]

    @property
    def balances(self) -> bool:
        """Load moves at all (level 1: mandatory ones only)."""
        return self.threshold > 1

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def drs_settings(raw: Mapping[str, Any] | None) -> DrsSettings:
    """The stored object as settings; fields never set keep their defaults. Raises
    SpecError on a value vigil refuses (the service calls it before writing)."""
    s = DrsSettings()
    if not raw:
        return s
    unknown = set(raw) - set(DrsSettings.__dataclass_fields__)
    if unknown:
        raise SpecError(f"unknown DRS setting(s): {', '.join(sorted(unknown))}")
    try:
        s = replace(s, **{k: type(getattr(s, k))(v) for k, v in raw.items()})
    except (TypeError, ValueError) as e:
        raise SpecError(f"bad DRS setting: {e}") from None
    if s.mode not in MODES:
        raise SpecError(f"DRS mode must be one of {', '.join(MODES)}")
    if s.threshold not in LEVELS:
        raise SpecError("DRS threshold must be 1 (mandatory moves only) to 5 (most eager)")
    if not 0.1 <= s.space_threshold <= 0.99:
        raise SpecError("DRS space threshold must be between 0.1 and 0.99 (a share of the datastore)")
    if not 1.0 <= s.latency_threshold_ms <= 1000.0:
        raise SpecError("DRS latency threshold must be between 1 and 1000 ms")
    if s.interval_s <= 0 or s.cooldown_s < 0 or s.hold_rounds < 1 or s.max_moves < 1 or s.gain_per_gib < 0:
        raise SpecError("DRS interval must be > 0, cooldown >= 0, hold rounds and max moves >= 1")
    return s


def safe_drs_settings(raw: Mapping[str, Any] | None) -> DrsSettings:
    """As ``drs_settings``, but a bad stored object turns DRS off instead of raising (the
    controller must go on)."""
    try:
        return drs_settings(raw)
    except SpecError:
        return DrsSettings()
