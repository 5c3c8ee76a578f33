"""The lab's faults, listed once: `vigil lab fault ...` and `python -m vigil.lab fault ...`
are both generated from FAULTS, so a fault is added (or its arguments changed) in one place.

Each fault names the function of `faults` it runs, the kinds of its arguments (which says
how the command line parses them), a one-line help and the line printed once it is done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from . import faults as F

# Argument kinds.
HOST = "host"                # a lab host
OPTIONAL_HOST = "host?"      # a lab host, or none for all of them
DATASTORE = "datastore"      # a datastore
GROUP = "group"              # hosts, comma separated: host2,host3
SECONDS = "seconds"          # a duration; `vigil lab fault` takes it as --seconds
SECONDS_DEFAULT = 1.5


@dataclass(frozen=True)
class Arg:
    name: str   # as --help shows it
    kind: str

    def parse(self, value: Any) -> Any:
        """The value the fault function takes, from what was typed."""
        if value is None:
            return None
        if self.kind == GROUP:
            return str(value).split(",")
        if self.kind == SECONDS:
            return float(value)
        return value


@dataclass(frozen=True)
class Fault:
    name: str                                   # the command: "power-off"
    fn: Callable[..., Any]                      # run as fn(lab, *parsed arguments)
    args: tuple[Arg, ...]
    help: str
    done: Callable[[dict[str, Any], Any], str]  # (arguments as typed, fn's result) -> line shown


def describe(fault: dict) -> str:
    """A fault record of the lab state, short: kind(extra=...)."""
    extra = {k: v for k, v in fault.items() if k not in ("kind", "host", "since")}
    return fault["kind"] + (f"({', '.join(f'{k}={v}' for k, v in extra.items())})" if extra else "")


def _healed(undone: list[dict]) -> str:
    return "healed: " + (", ".join(describe(f) + " on " + str(f.get("host", "")) for f in undone)
                         or "nothing to heal")


_HOST = (Arg("host", HOST),)
_DS = (Arg("datastore", DATASTORE),)

FAULTS: tuple[Fault, ...] = (
    Fault("power-off", F.power_off, _HOST, "Cut the power: kill every process of the host, link down.",
          lambda a, n: f"{a['host']}: powered off ({n} processes killed)"),
    Fault("power-on", F.power_on, _HOST, "Power a host back on (it boots its etcd member and agent).",
          lambda a, _: f"{a['host']}: powered on"),
    Fault("hang", F.hang, _HOST, "SIGSTOP every process of the host (its watchdog then resets it).",
          lambda a, pids: f"{a['host']}: hung ({len(pids)} processes stopped)"),
    Fault("watchdog-late", F.watchdog_late, (Arg("host", HOST), Arg("seconds", SECONDS)),
          "Make the host's watchdog fire SECONDS after its timeout, until heal.",
          lambda a, _: f"{a['host']}: its watchdog now fires {a['seconds']}s late"),
    Fault("isolate", F.isolate, _HOST, "Take the host's network link down.",
          lambda a, _: f"{a['host']}: isolated"),
    Fault("partition", F.partition, (Arg("group_a", GROUP), Arg("group_b", GROUP)),
          "Drop all traffic between two groups of hosts, e.g. 'host1' 'host2,host3'.",
          lambda a, _: f"partitioned {a['group_a']} | {a['group_b']}"),
    Fault("blip", F.blip, (Arg("host", HOST), Arg("seconds", SECONDS)), "Link down for a moment, then up.",
          lambda a, _: f"{a['host']}: link was down {a['seconds']}s"),
    Fault("kill-agent", F.kill_agent, _HOST, "SIGKILL the host's agent only (its supervisor restarts it).",
          lambda a, _: f"{a['host']}: agent killed"),
    Fault("kill-etcd", F.kill_etcd, _HOST, "SIGKILL the host's etcd member and keep it down until heal.",
          lambda a, _: f"{a['host']}: etcd member down"),
    Fault("datastore-loss", F.datastore_loss, (Arg("host", HOST), Arg("datastore", DATASTORE)),
          "The host loses one datastore (the others still reach it).",
          lambda a, _: f"{a['host']}: lost datastore {a['datastore']}"),
    Fault("datastore-fail", F.datastore_fail, _DS,
          "The datastore's array dies: every I/O on it fails, on every host.",
          lambda a, _: f"datastore {a['datastore']} failed"),
    Fault("datastore-return", F.datastore_return, _DS,
          "A failed datastore comes back (checked with e2fsck); refused while something still holds a file on it.",
          lambda a, _: f"datastore {a['datastore']} back"),
    Fault("bmc-fail", F.bmc_fail, _HOST, "The host's BMCs (Redfish and IPMI) stop answering.",
          lambda a, _: f"{a['host']}: BMC failed"),
    Fault("bmc-return", F.bmc_return, _HOST, "The host's BMCs answer again.",
          lambda a, _: f"{a['host']}: BMC back"),
    Fault("heal", F.heal, (Arg("host", OPTIONAL_HOST),), "Undo every fault (of one host, or all).",
          lambda a, undone: _healed(undone)),
)

BY_NAME: dict[str, Fault] = {f.name: f for f in FAULTS}
