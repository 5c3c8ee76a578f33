"""A stand-in for `vigil agent` in lab tests: reads the agent config and pets the watchdog.

    python -m vigil.lab.dummy_agent --config /run/vigil-lab/hosts/host1/vigil.toml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vigil.config import AgentConfig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vigil.lab.dummy_agent")
    p.add_argument("--config", required=True)
    p.add_argument("--interval", type=float, default=0.5)
    args = p.parse_args(argv)
    cfg = AgentConfig.load(args.config)
    wd = Path(cfg.watchdog_file)
    print(f"dummy agent for {cfg.host} at {cfg.address}", flush=True)
    while True:
        wd.write_text(f"{time.time()}\n")
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
