"""The lab's own command line, for tests and for options `vigil lab` does not offer
(--dummy-agent, --agent-command, --keep-data, exec); it prints JSON. Its faults are those of
fault_table.FAULTS, as for `vigil lab fault`; names take '-' or '_'.

    python -m vigil.lab up [--hosts 3] [--datastores 2] [--dummy-agent] ...
    python -m vigil.lab status
    python -m vigil.lab fault isolate host2 | partition host1 -- host2,host3 | blip host2 [1.5] | ...
    python -m vigil.lab fault datastore_fail ds1 | datastore-return ds1
    python -m vigil.lab heal [host2]
    python -m vigil.lab exec host1 -- ip addr
    python -m vigil.lab down [--keep-data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import faults as F
from .fault_table import BY_NAME, OPTIONAL_HOST, SECONDS, SECONDS_DEFAULT, Fault
from .lab import Lab, LabConfig, dummy_agent_command
from .layout import LabError


def fault_values(fault: Fault, texts: list[str]) -> list[Any]:
    """The fault function's arguments from the words typed ('--' ignored); a last
    duration or optional host may be left out."""
    texts = [t for t in texts if t != "--"]
    last = fault.args[-1].kind if fault.args else None
    if len(texts) == len(fault.args) - 1 and last in (SECONDS, OPTIONAL_HOST):
        texts.append(str(SECONDS_DEFAULT) if last == SECONDS else None)  # type: ignore[arg-type]
    if len(texts) != len(fault.args):
        raise LabError(f"fault {fault.name} takes: {' '.join(a.name for a in fault.args) or 'no arguments'}")
    try:
        return [a.parse(t) for a, t in zip(fault.args, texts)]
    except ValueError as e:
        raise LabError(f"fault {fault.name}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vigil.lab")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--datastores", type=int, default=2)
    up.add_argument("--subnet", default=LabConfig.subnet)
    up.add_argument("--etcd-members", type=int)
    up.add_argument("--watchdog-timeout", type=float, default=LabConfig.watchdog_timeout_s)
    up.add_argument("--reboot-delay", type=float, default=LabConfig.reboot_delay_s)
    up.add_argument("--dummy-agent", action="store_true", help="an agent that only pets the watchdog")
    up.add_argument("--agent-command", help="agent command line; {config} {host} {python} {watchdog}")
    down = sub.add_parser("down")
    down.add_argument("--keep-data", action="store_true")
    sub.add_parser("status")
    fault = sub.add_parser("fault")
    fault.add_argument("kind", type=lambda k: k.replace("_", "-"), choices=list(BY_NAME))
    fault.add_argument("args", nargs="*",
                       help="host [ds|seconds], a ds, or groups as host1,host2 host3")
    heal = sub.add_parser("heal")
    heal.add_argument("host", nargs="?")
    ex = sub.add_parser("exec")
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)

    lab = Lab(progress=lambda msg: print(f"* {msg}", file=sys.stderr, flush=True))
    try:
        if a.cmd == "up":
            cmd = (dummy_agent_command() if a.dummy_agent else
                   a.agent_command.split() if a.agent_command else None)
            lab.up(LabConfig(hosts=a.hosts, datastores=a.datastores, subnet=a.subnet,
                             etcd_members=a.etcd_members, watchdog_timeout_s=a.watchdog_timeout,
                             reboot_delay_s=a.reboot_delay, agent_command=cmd))
        elif a.cmd == "down":
            lab.down(keep_data=a.keep_data)
        elif a.cmd == "status":
            print(json.dumps(lab.status(), indent=2))
        elif a.cmd == "heal":
            print(json.dumps(F.heal(lab, a.host)))
        elif a.cmd == "exec":
            args = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
            os.execvp("nsenter", lab.host_exec_argv(a.host, args or ["sh"]))
        elif a.cmd == "fault":
            f = BY_NAME[a.kind]
            print(json.dumps(f.fn(lab, *fault_values(f, a.args))))
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
