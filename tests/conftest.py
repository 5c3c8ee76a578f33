"""Settings of the whole suite. Hypothesis times nothing: on a machine busy with a lab an
example may wait for a CPU far longer than Hypothesis's default 200 ms deadline. The
properties, not the speed, are what these tests check; speed is bench/'s business."""
from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("vigil", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vigil")
