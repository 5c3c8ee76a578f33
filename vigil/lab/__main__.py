"""Minimal command line for the lab, until `vigil lab ...` wires the same calls:

    python -m vigil.lab up [--hosts 3] [--datastores 2] [--dummy-agent] ...
    python -m vigil.lab status
    python -m vigil.lab fault isolate host2 | partition host1 -- host2,host3 | ...
    python -m vigil.lab fault datastore_fail ds1 | datastore_return ds1
    python -m vigil.lab heal [host2]
    python -m vigil.lab exec host1 -- ip addr
    python -m vigil.lab down [--keep-data]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import faults as F
from .lab import Lab, LabConfig, dummy_agent_command
from .layout import LabError

FAULTS = {
    "power_off": (F.power_off, "host"), "power_on": (F.power_on, "host"),
    "hang": (F.hang, "host"), "kill_agent": (F.kill_agent, "host"),
    "kill_etcd": (F.kill_etcd, "host"), "isolate": (F.isolate, "host"),
    "blip": (F.blip, "host seconds"), "partition": (F.partition, "group_a group_b"),
    "datastore_loss": (F.datastore_loss, "host ds"),
    "datastore_fail": (F.datastore_fail, "ds"), "datastore_return": (F.datastore_return, "ds"),
}


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
    fault.add_argument("kind", choices=sorted(FAULTS))
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
            fn, _ = FAULTS[a.kind]
            args = list(a.args)
            if a.kind == "partition":
                args = [x.split(",") for x in args if x != "--"]
            elif a.kind == "blip":
                args = [args[0], float(args[1])]
            print(json.dumps(fn(lab, *args)))
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
