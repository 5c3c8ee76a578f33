"""The etcd key layout: one place that names every key vigil writes.

Desired state (specs, assignments) is written by users and the controller; observed state
(status, liveness, ownership) by agents. Keys bound to a host's lease vanish with it.
"""
from __future__ import annotations

PREFIX = "/vigil/"

DATASTORES = PREFIX + "datastores/"  # DatastoreSpec
HOSTS = PREFIX + "hosts/"  # HostInfo, written by the host's agent
ALIVE = PREFIX + "alive/"  # leased: the host's agent is alive and reaches etcd
VMS = PREFIX + "vms/"  # VMSpec
ASSIGN = PREFIX + "assign/"  # Assignment: where the controller wants a VM to run
OWN = PREFIX + "own/"  # leased: the host that may run the VM right now
VMSTATUS = PREFIX + "vmstatus/"  # VMStatus, written by the agent running the VM
HOSTSTATE = PREFIX + "hoststate/"  # the controller's classification of each host
LEADER = PREFIX + "leader"  # leased: the agent whose controller is active
EVENTS = PREFIX + "events/"  # Event, key sorts by time


def name_of(key: str, prefix: str) -> str:
    return key[len(prefix):]


def event_key(time_ns: int, source: str) -> str:
    return f"{EVENTS}{time_ns:020d}-{source}"
RULES = PREFIX + "rules/"  # Rule
HOSTGROUPS = PREFIX + "hostgroups/"  # HostGroup: named sets of hosts, for VM-host rules
TASKS = PREFIX + "tasks/"  # Task: migrations and disk moves
MAINTENANCE = PREFIX + "maintenance/"  # a host in (or entering) maintenance mode
# leased (a short lease of its own): the host's agent stopped cleanly to be started again;
# its silence meanwhile is a planned restart, not a hang (vigil.policy.fencing)
RESTARTING = PREFIX + "restarting/"
FT = PREFIX + "ft/"  # FT on for the VM: {"secondary": host | None, "epoch": n}, the controller's
FTRX = PREFIX + "ftrx/"  # leased, by the secondary: where the next checkpoint goes
FTACK = PREFIX + "ftack/"  # leased, by the secondary: the newest checkpoint it holds complete
FTSTAT = PREFIX + "ftstat/"  # by the primary: valid_from (oldest checkpoint that may run) and figures
STATS_HA = PREFIX + "stats/ha"  # the leader's cumulative HA figures for /metrics (policy/hastats.py)
SETTINGS = PREFIX + "settings/"  # cluster policies an operator sets, one object each: admission, drs, monitoring, ...
LOAD = PREFIX + "load/"  # by each host's agent: its VMs' and its own smoothed load (vigil.agent.loadreport)
DRS = PREFIX + "drs/recommendations"  # the leader's last DRS round: its moves and why (vigil.controller.drs)
ADMITTED = PREFIX + "admitted"  # bumped by every action admission control admitted: two in parallel serialize
MONITORING = PREFIX + "monitoring/"  # by the VM's owner: the resets VM monitoring made of it (policy/vm_monitoring.py)
DISKSTATE = PREFIX + "diskstate/"  # replicated disks: {"stale": {disk: {datastore, since, why}}, "resync": {...}}

# Identities, outside PREFIX: agents read PREFIX whole several times a second and never
# need these (nor should every snapshot carry password hashes).
AUTH = "/vigil-auth/"
USERS = AUTH + "users/"  # {name, role, hash (argon2), created}
TOKENS = AUTH + "tokens/"  # {id, user, name, sha256 of the secret, created, expires}
SESSIONS = AUTH + "sessions/"  # leased: {user, csrf, created}; key = sha256 of the cookie
LOGINFAIL = AUTH + "loginfail/"  # leased (the throttle window): failed logins of one user name
