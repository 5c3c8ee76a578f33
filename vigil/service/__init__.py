"""The operations on the cluster that the CLI uses and the REST API will: validation,
guarded writes, read models.

Each operation validates everything first and then writes once, in one transaction, so a
refused request leaves etcd exactly as it was. A refusal is a ``SpecError`` whose class
says what kind it is (see ``common``): ``NotFound``, ``Conflict`` or ``Invalid``.
"""
from __future__ import annotations

from vigil.service.cluster import add_datastore, cluster, datastores, migration_choices
from vigil.service.common import Conflict, Invalid, NotFound
from vigil.service.disks import disk_state, repair_disk
from vigil.service.ft import ft_disable, ft_enable, ft_limits, ft_state
from vigil.service.maintenance import evacuation_step, set_maintenance
from vigil.service.rules import (conflicts, create_host_group, create_rule, delete_host_group, delete_rule,
                                 host_groups, rules)
from vigil.service.tasks import cancel_task, get_task, migrate_vm, move_disk, task_summary, tasks
from vigil.service.vms import create_vm, delete_vm, get_vm, resize_vm, set_power

__all__ = [
    "Conflict", "Invalid", "NotFound",
    "add_datastore", "cluster", "datastores", "migration_choices",
    "disk_state", "repair_disk",
    "ft_disable", "ft_enable", "ft_limits", "ft_state",
    "evacuation_step", "set_maintenance",
    "create_rule", "delete_rule", "rules", "conflicts", "create_host_group", "delete_host_group", "host_groups",
    "cancel_task", "get_task", "migrate_vm", "move_disk", "task_summary", "tasks",
    "create_vm", "delete_vm", "get_vm", "resize_vm", "set_power",
]
