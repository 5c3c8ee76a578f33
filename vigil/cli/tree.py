"""The whole ``vigil`` command tree, assembled (see vigil/cli/__init__.py for the map)."""
from __future__ import annotations

import typer

from vigil.cli import access, agent, api, cluster, config, datastore, demo, drs, events, host, lab, rule, task, vm
from vigil.cli import datastore_cluster
from vigil.cli import admission as admission  # noqa: F401 - adds its commands to `vigil cluster`
from vigil.cli import monitoring  # noqa: F401  (adds 'cluster set monitoring', 'cluster monitoring', 'vm set')
from vigil.cli import cluster_init  # noqa: F401  (vigil cluster init / add-host / remove-host / admin)
from vigil.cli import orchestration as _orchestration  # noqa: F401 - adds its commands to 'vigil cluster'
from vigil.cli import settings as _settings  # noqa: F401 - adds 'vigil cluster settings'
from vigil.cli.common import fail, friendly
from vigil.cli.vm import parse_disk
from vigil.sim import cli as sim_cli

app = typer.Typer(no_args_is_help=True, add_completion=False, help="vigil: HA for QEMU/KVM clusters")
app.command()(agent.agent)
app.command()(api.api)
app.add_typer(config.app, name="config")
app.command()(access.login)
app.command()(access.logout)
app.add_typer(access.user_app, name="user")
app.add_typer(access.token_app, name="token")
app.command()(events.events)
app.command()(demo.demo)
app.add_typer(vm.app, name="vm")
app.add_typer(host.app, name="host")
app.add_typer(lab.app, name="lab")
app.add_typer(datastore.app, name="datastore")
app.add_typer(datastore_cluster.app, name="datastore-cluster")
app.add_typer(task.app, name="task")
app.add_typer(rule.app, name="rule")
app.add_typer(cluster.app, name="cluster")
app.add_typer(drs.app, name="drs")
sim_cli.register(app)

__all__ = ["app", "fail", "friendly", "parse_disk"]
