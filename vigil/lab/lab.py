"""The lab: a real cluster on one machine (see DESIGN.md, "The lab").

    lab = Lab(progress=print)
    lab.up(LabConfig(hosts=3, datastores=2))
    lab.status()
    lab.down()

One lab per machine; its state lives in /run/vigil-lab/lab.json. `down()` finds what to
remove from that file *and* from the names the lab uses (netns vigil-*, links vgl-h* and
vigilbr0, mounts under /run/vigil-lab and /var/lib/vigil-lab, loop devices on
/var/lib/vigil-lab/arrays/*.img, nft table bridge vigil_lab), so it works after a failed
`up`, without a state file, and twice in a row.

The Lab class is put together from its parts: lab_state (the state file and queries),
host_processes (supervisors, etcd and agent pids, logs), lifecycle (up, down), clean and
status.
"""

from __future__ import annotations

from . import datastores as dsmod
from .clean import LabClean
from .lab_config import LabConfig, default_agent_command, dummy_agent_command
from .lab_state import LOCK_FILE, STATE_VERSION, Progress
from .layout import ETCD_DOWN_FLAG, LabCommandError, LabError, host_exec_argv
from .status import LabStatus, _fault_hosts

__all__ = ["Lab", "LabConfig", "LabError", "host_exec_argv"]


class Lab(LabClean, LabStatus):
    """The machine's lab. Cheap to construct: all state is in STATE_FILE."""


# silence "imported but unused" for names re-exported for the CLI, faults and tests
_ = (ETCD_DOWN_FLAG, LabCommandError, dsmod, default_agent_command, dummy_agent_command,
     LOCK_FILE, STATE_VERSION, Progress, _fault_hosts)
