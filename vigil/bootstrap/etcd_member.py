"""An etcd member's settings as Debian's ``etcd`` service reads them: ETCD_* variables in
``/etc/default/etcd`` (its unit's EnvironmentFile). The lab starts its members from the
same file (read here) so a lab member runs with exactly a real member's settings.

TLS on both sides and client certificates required: a client or peer without a
certificate from the cluster CA is refused, and no URL is plain http. A CRL (empty at
first) is read on every new connection, so a removed host's certificate stops working
once the new ``crl.pem`` is on the members.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

CLIENT_PORT, PEER_PORT = 2379, 2380
HEARTBEAT_MS, ELECTION_MS = "200", "1000"  # raft timings (see member_env)
ENV_RE = re.compile(r"^(ETCD_[A-Z0-9_]+)=(.*)$")


@dataclass(frozen=True)
class MemberFiles:
    """Where the member's files are on its host."""

    ca: str
    cert: str  # client-facing server certificate (names the member's IP and the cluster's name)
    key: str
    peer_cert: str
    peer_key: str
    crl: str


def client_url(address: str, port: int = CLIENT_PORT) -> str:
    return f"https://{address}:{port}"


def peer_url(address: str, port: int = PEER_PORT) -> str:
    return f"https://{address}:{port}"


def member_env(name: str, address: str, members: dict[str, str], files: MemberFiles,
               data_dir: str, token: str, client_port: int = CLIENT_PORT,
               peer_port: int = PEER_PORT) -> dict[str, str]:
    """The ETCD_* settings of member ``name`` at ``address``; ``members``: every member's
    name -> address (the initial cluster). Clients are also served on 127.0.0.1."""
    listen = dict.fromkeys((client_url(address, client_port), client_url("127.0.0.1", client_port)))
    return {
        "ETCD_NAME": name,
        "ETCD_DATA_DIR": data_dir,
        "ETCD_LISTEN_CLIENT_URLS": ",".join(listen),
        "ETCD_ADVERTISE_CLIENT_URLS": client_url(address, client_port),
        "ETCD_LISTEN_PEER_URLS": peer_url(address, peer_port),
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": peer_url(address, peer_port),
        "ETCD_INITIAL_CLUSTER": ",".join(f"{n}={peer_url(a, peer_port)}" for n, a in members.items()),
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": token,
        "ETCD_TRUSTED_CA_FILE": files.ca,
        "ETCD_CERT_FILE": files.cert,
        "ETCD_KEY_FILE": files.key,
        "ETCD_CLIENT_CERT_AUTH": "true",
        "ETCD_CLIENT_CRL_FILE": files.crl,
        "ETCD_PEER_TRUSTED_CA_FILE": files.ca,
        "ETCD_PEER_CERT_FILE": files.peer_cert,
        "ETCD_PEER_KEY_FILE": files.peer_key,
        "ETCD_PEER_CLIENT_CERT_AUTH": "true",
        "ETCD_PEER_CRL_FILE": files.crl,
        # Timings: a dead raft leader is replaced within the election timeout (never
        # longer); with pre-vote a member cut off from the leader alone (a partial
        # partition) asks first, and the members that still hear the leader say no.
        # Heartbeats every 200 ms (etcd's default: 100), at most the election timeout
        # over 5 (etcd's rule): an idle member is woken half as often (~0.25 % of a
        # core less each), and a stopped leader is replaced no later (the election
        # timeout is the same 1 s, counted in 5 ticks instead of 10; bench/etcd_election.py).
        "ETCD_HEARTBEAT_INTERVAL": HEARTBEAT_MS,
        "ETCD_ELECTION_TIMEOUT": ELECTION_MS,
        "ETCD_PRE_VOTE": "true",
        # The backend (bbolt) commits its batch every 1 s instead of every 100 ms: an idle
        # member's commit timer wakes it 10 times a second less (~12 % fewer context
        # switches for a bare 3-member cluster on loopback). Nothing waits on that commit:
        # an entry is durable once in the fsynced WAL, reads see the open batch, and a
        # member that crashes replays the WAL past the backend's consistent index.
        "ETCD_BACKEND_BATCH_INTERVAL": "1s",
        # vigil's clients ping every second to notice a dead member's connection quickly.
        "ETCD_GRPC_KEEPALIVE_MIN_TIME": "500ms",
        "ETCD_LOGGER": "zap",
        "ETCD_LOG_OUTPUTS": "stderr",
    }


def render(env: dict[str, str]) -> str:
    """The /etc/default/etcd text: one KEY="value" a line (systemd's EnvironmentFile)."""
    head = ["# etcd member settings, written by 'vigil cluster'; read by etcd.service",
            "# (EnvironmentFile=/etc/default/etcd). TLS only: see docs/cluster.md."]
    return "\n".join(head + [f'{k}="{v}"' for k, v in env.items()]) + "\n"


def parse(text: str) -> dict[str, str]:
    """ETCD_* settings of a /etc/default/etcd file (comments and other lines ignored)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = ENV_RE.match(line.strip())
        if m:
            words = shlex.split(m.group(2))
            out[m.group(1)] = words[0] if words else ""
    return out
