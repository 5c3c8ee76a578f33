"""The shipped Grafana dashboard reads only metrics vigil exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

DASH = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "vigil.json"
SOURCES = [Path(__file__).resolve().parents[2] / "vigil" / p for p in ("api/metrics.py", "agent/metrics.py")]


def test_every_query_names_an_exported_metric() -> None:
    code = "".join(p.read_text() for p in SOURCES)
    exported = set(re.findall(r'"(vigil_[a-z_]+)"', code))
    dash = json.loads(DASH.read_text())
    assert dash["panels"]
    for panel in dash["panels"]:
        for t in panel["targets"]:
            for name in re.findall(r"vigil_[a-z_]+", t["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", name)
                assert base in exported, (panel["title"], name)
