"""The command line without a lab, etcd, API or root: every command the README lists
exists, the lab's fault commands are exactly those of the fault table, and bad input or an
unreachable API gives an error line and an exit code, never a traceback.

The API is always https://127.0.0.1:1 (nothing listens there), etcd 127.0.0.1:1, no saved
credentials, and `Lab` is replaced by a fake that refuses to be used, so no test can reach
a real cluster or lab on this machine."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import vigil.lab.lab
from vigil.cli import app, friendly
from vigil.cli.lab import fault_app, fault_command
from vigil.lab.__main__ import fault_values
from vigil.lab.fault_table import BY_NAME, FAULTS, GROUP, OPTIONAL_HOST, SECONDS, Arg, Fault
from vigil.lab.layout import LabError
from vigil.store.etcd import StoreError

README = Path(__file__).resolve().parents[2] / "README.md"
NO_ETCD = "127.0.0.1:1"
NO_API = "https://127.0.0.1:1"
runner = CliRunner()


class RefusingLab:
    """Stands in for vigil.lab.lab.Lab: any use is a test bug (it would touch the machine)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a unit test used the real lab (Lab.{name})")


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIGIL_ETCD", NO_ETCD)
    monkeypatch.setenv("VIGIL_API", NO_API)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("VIGIL_DEBUG", raising=False)
    monkeypatch.setattr(vigil.lab.lab, "Lab", RefusingLab)


def vigil_cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def assert_clean_failure(r: Any, code: int = 1) -> None:
    """Failed with `code`, said why, and no exception escaped to the user."""
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert r.output.strip()


# -- the README's commands ------------------------------------------------------------------
def _group(root: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        root = root.commands[name]
    return root


def readme_commands() -> set[tuple[str, ...]]:
    """Command paths in the README's CLI section: 'vigil vm list|show NAME', 'vigil lab
    status | down' and 'vigil task list | task cancel VM' each name two."""
    block = README.read_text().split("## CLI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    root = typer.main.get_command(app)
    found: set[tuple[str, ...]] = set()
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("vigil "):
            continue  # continuation lines hold options only
        parent: tuple[str, ...] = ()
        for segment in line[len("vigil "):].split(" | "):
            words = segment.split()
            if words[0].startswith(("-", "[")):
                continue  # ' | ' between options: [--disk ds1:64 | --disk ds1+ds2:64]
            path = () if words[0] in root.commands else parent
            for word in words:
                group = _group(root, path)
                names = word.split("|")
                if not hasattr(group, "commands") or not all(n in group.commands for n in names):
                    found.add(path)   # an argument: path is the command (a group here is a bug)
                    parent = path[:-1]
                    break
                if len(names) > 1:
                    found.update(path + (n,) for n in names)
                    parent = path
                    break
                path += (word,)
            else:
                found.add(path)
                parent = path[:-1]
    return found


def test_the_readme_parser_sees_the_whole_cli_section():
    cmds = readme_commands()
    for expected in [("vm", "create"), ("vm", "show"), ("vm", "ft", "disable"), ("lab", "down"),
                     ("task", "cancel"), ("rule", "delete"), ("host", "maintenance", "exit"),
                     ("datastore", "evacuate"), ("events",), ("lab", "fault", "heal")]:
        assert expected in cmds
    assert len(cmds) >= 37


@pytest.mark.parametrize("path", sorted(readme_commands()), ids=" ".join)
def test_every_readme_command_exists_with_help(path: tuple[str, ...]):
    command = _group(typer.main.get_command(app), path)
    assert not hasattr(command, "commands"), f"README: 'vigil {' '.join(path)}' names no command"
    r = vigil_cli(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_root_and_agent_help():
    assert vigil_cli("--help").exit_code == 0
    assert vigil_cli("agent", "--help").exit_code == 0
    assert vigil_cli("demo", "--help").exit_code == 0


# -- the fault table ------------------------------------------------------------------------
def test_the_fault_commands_are_the_table_and_the_readme():
    readme = {p[2] for p in readme_commands() if p[:2] == ("lab", "fault")}
    generated = set(typer.main.get_command(app).commands["lab"].commands["fault"].commands)
    table = [f.name for f in FAULTS]
    assert len(table) == len(set(table))
    assert readme == generated == set(table)
    assert set(BY_NAME) == set(table)


def test_fault_commands_keep_their_arguments_and_help():
    group = typer.main.get_command(app).commands["lab"].commands["fault"]
    for f in FAULTS:
        cmd = group.commands[f.name]
        assert cmd.help == f.help
        assert [p.name for p in cmd.params] == [a.name for a in f.args]
    blip = {p.name: p for p in group.commands["blip"].params}
    assert blip["seconds"].opts == ["--seconds"] and blip["seconds"].default == 1.5
    assert group.commands["heal"].params[0].required is False
    assert group.commands["partition"].params[0].required is True


@pytest.mark.parametrize("name, typed, result, line", [
    ("power-off", {"host": "host2"}, 7, "host2: powered off (7 processes killed)"),
    ("power-on", {"host": "host2"}, 123, "host2: powered on"),
    ("hang", {"host": "host2"}, [1, 2, 3], "host2: hung (3 processes stopped)"),
    ("isolate", {"host": "host2"}, None, "host2: isolated"),
    ("partition", {"group_a": "host1", "group_b": "host2,host3"}, None, "partitioned host1 | host2,host3"),
    ("blip", {"host": "host2", "seconds": 1.5}, None, "host2: link was down 1.5s"),
    ("kill-agent", {"host": "host2"}, 42, "host2: agent killed"),
    ("kill-etcd", {"host": "host2"}, 42, "host2: etcd member down"),
    ("datastore-loss", {"host": "host2", "datastore": "ds1"}, None, "host2: lost datastore ds1"),
    ("datastore-fail", {"datastore": "ds1"}, None, "datastore ds1 failed"),
    ("datastore-return", {"datastore": "ds1"}, None, "datastore ds1 back"),
    ("heal", {"host": None}, [], "healed: nothing to heal"),
    ("heal", {"host": None}, [{"kind": "isolate", "host": "host2", "since": 1.0},
                              {"kind": "partition", "a": ["host1"], "b": ["host2"], "since": 1.0}],
     "healed: isolate on host2, partition(a=['host1'], b=['host2']) on "),
])
def test_each_fault_says_what_it_did_as_before(name: str, typed: dict, result: Any, line: str):
    assert BY_NAME[name].done(typed, result) == line


def test_a_generated_command_parses_its_arguments_for_the_fault_function():
    calls: list[tuple] = []

    def fake(lab: Any, *args: Any) -> str:
        calls.append(args)
        return "ok"

    fault = Fault("split", fake, (Arg("group_a", GROUP), Arg("host", OPTIONAL_HOST), Arg("seconds", SECONDS)),
                  "A test fault.", lambda typed, result: f"{typed} -> {result}")
    test_app = typer.Typer()
    test_app.command("split", help=fault.help)(fault_command(fault))
    test_app.command("other")(lambda: None)  # a group, as `vigil lab fault` is
    r = runner.invoke(test_app, ["split", "host1,host2"])
    assert r.exit_code == 0, r.output
    assert calls == [(["host1", "host2"], None, 1.5)]
    r = runner.invoke(test_app, ["split", "host1", "host3", "--seconds", "2"])
    assert calls[-1] == (["host1"], "host3", 2.0)
    assert "-> ok" in r.output


@pytest.mark.parametrize("args", [
    ["lab", "fault", "blip", "host1", "--seconds", "abc"],
    ["lab", "fault", "partition", "host1"],
    ["lab", "fault", "power-off"],
    ["lab", "fault", "no-such-fault", "host1"],
])
def test_bad_fault_arguments_are_usage_errors(args: list[str]):
    assert_clean_failure(vigil_cli(*args), code=2)


def test_python_m_vigil_lab_reads_fault_arguments_from_the_table():
    assert fault_values(BY_NAME["partition"], ["host1", "--", "host2,host3"]) == [["host1"], ["host2", "host3"]]
    assert fault_values(BY_NAME["blip"], ["host2", "0.5"]) == ["host2", 0.5]
    assert fault_values(BY_NAME["blip"], ["host2"]) == ["host2", 1.5]
    assert fault_values(BY_NAME["heal"], []) == [None]
    assert fault_values(BY_NAME["datastore-fail"], ["ds1"]) == ["ds1"]
    with pytest.raises(LabError, match="takes: host datastore"):
        fault_values(BY_NAME["datastore-loss"], ["host2"])
    with pytest.raises(LabError, match="blip"):
        fault_values(BY_NAME["blip"], ["host2", "soon"])
    assert fault_app.info.help == "Inject real faults into the lab"


class EmptyLab:
    """A lab with no datastore: enough for a datastore fault to refuse, touching nothing."""

    def __init__(self, *a: Any, **k: Any) -> None:
        self.state = {"hosts": {}, "datastores": {}, "faults": []}


@pytest.mark.parametrize("kind", ["datastore_fail", "datastore-fail"])
def test_python_m_vigil_lab_takes_either_spelling(monkeypatch: pytest.MonkeyPatch, capsys: Any, kind: str):
    import vigil.lab.__main__ as lab_main

    monkeypatch.setattr(lab_main, "Lab", EmptyLab)
    assert lab_main.main(["fault", kind, "ds1"]) == 1
    assert capsys.readouterr().err == "error: no datastore 'ds1'\n"


# -- errors: a line and an exit code, never a traceback -------------------------------------
def test_a_bad_disk_is_one_line():
    r = vigil_cli("vm", "create", "x", "--disk", "nonsense", "--api", NO_API)
    assert_clean_failure(r)
    assert r.output.strip().splitlines() == ["error: --disk 'nonsense': expected DATASTORE[+REPLICA]:SIZE_MB[:PATH]"]


def test_a_bad_priority_fails_before_the_guest_image_or_etcd(monkeypatch: pytest.MonkeyPatch):
    import vigil.hypervisor.guest_image

    def no_image(*a: Any, **k: Any) -> None:
        raise AssertionError("built the guest image for a VM that cannot be created")

    monkeypatch.setattr(vigil.hypervisor.guest_image, "build_guest_image", no_image)
    r = vigil_cli("vm", "create", "x", "--priority", "bogus", "--api", NO_API)
    assert_clean_failure(r)
    assert len(r.output.strip().splitlines()) == 1
    assert "restart_priority must be one of" in r.output


@pytest.mark.parametrize("args", [
    ["vm", "create", "x", "--memory", "lots"],
    ["vm", "migrate", "x"],
    ["lab", "up", "--hosts", "0"],
    ["agent"],
    ["no-such-command"],
])
def test_usage_errors(args: list[str]):
    assert_clean_failure(vigil_cli(*args), code=2)


@pytest.mark.parametrize("args", [
    ["vm", "list"], ["vm", "list", "--json"], ["vm", "show", "x"], ["vm", "start", "x"], ["vm", "stop", "x"],
    ["vm", "delete", "x"], ["vm", "migrate", "x", "--to", "host2"], ["vm", "move-disk", "x", "disk0", "--to", "ds2"],
    ["vm", "repair-disk", "x"], ["vm", "ft", "enable", "x"], ["vm", "ft", "disable", "x"],
    ["vm", "create", "x", "--no-lab-guest"], ["host", "list"], ["host", "list", "--json"],
    ["host", "maintenance", "enter", "host1"], ["host", "maintenance", "exit", "host1"],
    ["datastore", "list"], ["datastore", "evacuate", "ds1"], ["task", "list", "--all"], ["task", "cancel", "x"], ["task", "show", "x"],
    ["rule", "create", "r", "--kind", "affinity", "--vms", "a,b"], ["rule", "list"], ["rule", "delete", "r"],
    ["rule", "create", "d", "--kind", "depends-on", "--vms", "a", "--on", "b"], ["rule", "conflicts"],
    ["rule", "group-create", "g", "--hosts", "host1"], ["rule", "group-list"], ["rule", "group-delete", "g"],
    ["cluster", "orchestration"], ["cluster", "set", "orchestration", "--ready", "guest"],
    ["events"], ["events", "--json"], ["login", "--user", "u", "--password", "p"], ["user", "list"],
    ["user", "add", "u", "--password", "long-password"], ["token", "list"], ["token", "create", "ci"],
], ids=" ".join)
def test_no_api_is_a_clean_error(args: list[str]):
    r = vigil_cli(*args, "--api", NO_API)
    assert_clean_failure(r)
    assert r.output.startswith("error: cannot reach the vigil API (https://127.0.0.1:1: ")
    assert r.stdout == ""


def _raising(exc: BaseException) -> Any:
    @friendly
    def command() -> None:
        raise exc

    test_app = typer.Typer()
    test_app.command("go")(command)
    test_app.command("other")(lambda: None)
    return runner.invoke(test_app, ["go"])


@pytest.mark.parametrize("exc, code, first_line", [
    (LabError("lab up failed: etcd did not start\n--- host1/etcd.log\n[/etc] [bold] tail"), 1,
     "error: lab up failed: etcd did not start"),
    (TimeoutError("timed out after 90s waiting for 3 hosts"), 1, "error: timed out after 90s waiting for 3 hosts"),
    (TimeoutError(), 1, "error: TimeoutError"),
    (PermissionError(13, "Permission denied", "/run/vigil-lab"), 1,
     "error: [Errno 13] Permission denied: '/run/vigil-lab'"),
    (StoreError("etcd (x): down"), 1, "error: cannot reach etcd: etcd (x): down"),
    (ValueError("a bug"), 1, "error: unexpected ValueError: a bug (VIGIL_DEBUG=1 shows the traceback)"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
    (typer.Exit(3), 3, None),
])
def test_friendly_turns_errors_into_a_line_and_an_exit_code(exc: BaseException, code: int, first_line: str | None):
    r = _raising(exc)
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if first_line is not None:
        assert r.output.splitlines()[0] == first_line
    if isinstance(exc, LabError):  # the log tail, verbatim, even where it looks like markup
        assert r.output.splitlines()[1:] == ["--- host1/etcd.log", "[/etc] [bold] tail"]


class FailingLab:
    """A lab whose cluster never comes up: what `vigil demo` and `vigil lab up` must report."""

    downs = 0

    def __init__(self, progress: Any = None) -> None:
        self.progress = progress or (lambda m: None)

    def up(self, *a: Any, **k: Any) -> None:
        raise LabError("lab up failed: timed out waiting for etcd\n--- host1/etcd.log\nbind: address in use")

    def down(self, *a: Any, **k: Any) -> None:
        FailingLab.downs += 1

    def log_tails(self) -> str:
        return "\n--- host1/agent.log\nno lease"


def test_lab_up_failure_is_the_error_and_its_log_tail(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(vigil.lab.lab, "Lab", FailingLab)
    r = vigil_cli("lab", "up")
    assert_clean_failure(r)
    assert r.output.splitlines()[-3:] == ["error: lab up failed: timed out waiting for etcd",
                                          "--- host1/etcd.log", "bind: address in use"]


def test_demo_reports_a_cluster_that_does_not_come_up(monkeypatch: pytest.MonkeyPatch):
    import vigil.lab.demo as demo

    def not_ready(*a: Any, **k: Any) -> None:
        raise TimeoutError("timed out after 90s waiting for 3 hosts with leases and a leader")

    FailingLab.downs = 0
    monkeypatch.setattr(demo, "Lab", FailingLab)
    monkeypatch.setattr(FailingLab, "up", lambda self, *a, **k: None)
    monkeypatch.setattr(demo, "build_guest_image", lambda **k: None)
    monkeypatch.setattr(demo, "wait_cluster_ready", not_ready)
    r = vigil_cli("demo")
    assert_clean_failure(r)
    lines = r.output.splitlines()
    assert lines[-3:] == ["error: demo failed: timed out after 90s waiting for 3 hosts with leases and a leader",
                          "--- host1/agent.log", "no lease"]
    assert FailingLab.downs == 1   # torn down after its logs were read


def test_demo_reports_a_lab_that_does_not_build(monkeypatch: pytest.MonkeyPatch):
    import vigil.lab.demo as demo

    monkeypatch.setattr(demo, "Lab", FailingLab)
    monkeypatch.setattr(demo, "build_guest_image", lambda **k: None)
    r = vigil_cli("demo", "--keep")
    assert_clean_failure(r)
    assert "error: lab up failed: timed out waiting for etcd" in r.output.splitlines()


def test_no_api_known_says_how_to_name_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import vigil.cli.client as client

    monkeypatch.delenv("VIGIL_API")
    monkeypatch.setattr(client, "LAB_API_FILE", Path("/nonexistent/api.json"))
    r = vigil_cli("vm", "list")
    assert_clean_failure(r)
    assert "no vigil API known: give --api URL" in r.output
