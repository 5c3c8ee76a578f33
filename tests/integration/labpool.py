"""One lab shared by the tests that ask for a lab of the same config, as long as each test
leaves it as a fresh one.

A lab takes seconds to build; most tests that move VMs around leave every host as it was.
After each test that passed, ``LabPool`` heals the lab's faults, puts the cluster's settings
(admission, DRS...) back as the fresh lab had them, deletes every VM (and waits
until its QEMU is gone, killed if its agent's shutdown has not ended it within 5 s, and its
records and files are removed), and then checks that the lab
is indistinguishable from a fresh one for the next test:

- every host still on its first boot, never reset, the same supervisor and etcd processes
  (an agent killed and started again is as new as a fresh one), all etcd members healthy, no fault left in the lab's state and no nftables rule of the lab;
- every host leased, reaching every datastore, in the state a fresh lab showed; a leader;
- the cluster's desired state (datastores, VMs, rules, host groups, tasks, maintenance,
  settings, FT, users and tokens...) exactly what the fresh lab had, no QEMU on the machine.

Any doubt (a failed test, a host that rebooted or was killed, a check that does not pass
within its time) and the lab is torn down: the next test gets a new one. The tests' own
invariant checks are unchanged: they only ever look at their own VMs and at events since
their own start.

There is one lab on the machine at a time: the session keeps the pool of one config
(``SESSION``); a test of another config, or of no shared lab, gets the current lab torn
down first (conftest's ``pytest_runtest_teardown`` does it as soon as the next test does not
share it). conftest also runs the modules that share a lab of one config one after the other
(``grouped``), so that the one-test modules reuse a lab too.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import warnings
from typing import Any, Callable, Iterator

import pytest

from labcheck import running_lab

# The etcd prefixes that hold what the cluster is asked to be (or records of such objects):
# each must be the same after a test as right after `lab up`.
_DESIRED = ("datastores/", "vms/", "assign/", "own/", "vmstatus/", "rules/", "hostgroups/",
            "tasks/", "maintenance/", "ft/", "ftrx/", "ftack/", "ftstat/", "settings/",
            "diskstate/", "monitoring/")
# Records of a VM that outlive its spec a moment: removed once its QEMU is gone.
# Faults after which a host is not the fresh lab's host any more.
_HOST_LOSING_FAULTS = ("power_off", "hang", "watchdog-late", "etcd_down")
_VM_RECORDS = ("vmstatus/", "tasks/", "diskstate/", "monitoring/", "ft/", "ftrx/", "ftack/", "ftstat/")


class LabNotReused(UserWarning):
    """The shared lab could not be made as fresh after a test: the next test gets a new one."""


class LabPool:
    """A lab of ``config``, reused by the module's tests while it is as fresh."""

    def __init__(self, **config: Any) -> None:
        self.config = config
        self._stack: contextlib.ExitStack | None = None
        self.lab: Any = None
        self._fresh: dict[str, Any] = {}
        self.reused = 0

    # --- the pool's lab -------------------------------------------------------------
    def _up(self) -> Any:
        stack = contextlib.ExitStack()
        try:
            self.lab = stack.enter_context(running_lab(**self.config))
            t0 = time.monotonic()
            self._fresh = self._settled()
            print(f"every host reaching every datastore {time.monotonic() - t0:.1f} s later")
        except BaseException:
            stack.close()
            self.lab = None
            raise
        self._stack = stack
        return self.lab

    def close(self) -> None:
        """Tear the lab down (namespaces, mounts, loop devices, processes)."""
        stack, self._stack, self.lab = self._stack, None, None
        if stack is not None:
            stack.close()

    @contextlib.contextmanager
    def use(self, passed: Any, wanted: Callable[[], bool] = lambda: True) -> Iterator[Any]:
        """The lab for one test; ``passed()`` says afterwards whether the test passed,
        ``wanted()`` whether a next test shares the lab (no heal for none)."""
        lab = self.lab if self.lab is not None else self._up()
        try:
            yield lab
        finally:
            t0 = time.monotonic()
            if passed() and wanted() and self._heal():
                print(f"lab healed for the next test in {time.monotonic() - t0:.1f} s")
            else:
                self.close()

    # --- what a fresh lab looks like ----------------------------------------------------
    def _look(self) -> dict[str, Any]:
        """What must be the same between a fresh lab and a reused one."""
        from vigil.lab import observe
        from vigil.store import keys as K

        lab = self.lab
        snap = observe.call(lambda s: s.snapshot(), timeout=10)
        desired = {k: e.value for k, e in snap.items()
                   if k.startswith(tuple(K.PREFIX + p for p in _DESIRED)) or k.startswith((K.USERS, K.TOKENS))}
        c = observe.cluster()
        hosts = {h["name"]: (h["state"], bool(h["lease"]), tuple(sorted(h["datastores"]))) for h in c["hosts"]}
        procs = {}
        for h in lab.hosts:
            s = lab.supervisor_status(h)
            # an agent or API server killed and started again by its supervisor is as new as
            # a fresh lab's: only that one runs is compared
            procs[h] = (s.get("state"), s.get("boots"), s.get("resets"), lab.supervisor_pid(h),
                        lab.etcd_pid(h), lab.agent_pid(h) is not None, lab.api_pid(h) is not None)
        return {"desired": desired, "hosts": hosts, "leader": bool(c["leader"]), "procs": procs}

    def _settled(self) -> dict[str, Any]:
        """The fresh lab's look once every host reaches every datastore (the lab is ready
        with one each), or as it is after 30 s."""
        want = tuple(sorted(self.lab.state["datastores"]))
        deadline = time.monotonic() + 30
        while True:
            look = self._look()
            if all(ds == want for _, _, ds in look["hosts"].values()) or time.monotonic() > deadline:
                return look
            time.sleep(0.5)

    def _differences(self) -> list[str]:
        from vigil.lab import etcd as etcdmod
        from vigil.lab import observe
        from vigil.lab.layout import NFT_FAMILY, NFT_TABLE, run

        lab = self.lab
        why = []
        now = self._look()
        for part in ("procs", "hosts", "leader", "desired"):
            if now[part] != self._fresh[part]:
                why.append(f"{part}: {now[part]!r} != {self._fresh[part]!r}")
        if lab.state.get("faults"):
            why.append(f"faults left: {lab.state['faults']}")
        if sum(etcdmod.health(lab.etcd_endpoints, tls=lab.etcd_tls).values()) != len(lab.etcd_endpoints):
            why.append("an etcd member is not healthy")
        table = run(["nft", "list", "table", NFT_FAMILY, NFT_TABLE], check=False)
        if table.returncode == 0 and "drop" in table.stdout:
            why.append(f"nftables rules left: {table.stdout}")
        if observe.qemu_processes():
            why.append(f"QEMUs left: {observe.qemu_processes()}")
        if standbys := _lab_qemus(lab):  # paused ones too (FT standbys, migration targets)
            why.append(f"QEMU processes left in the hosts: {standbys}")
        return why

    # --- between two tests ----------------------------------------------------------------
    def _heal(self) -> bool:
        """Make the lab as fresh again; False (the lab is to go) if it cannot be."""
        from vigil import service
        from vigil.lab import faults, observe
        from vigil.lab.layout import DS_DIR, HOSTS_DIR
        from vigil.store import keys as K

        lab = self.lab
        if lab is None:
            return False
        try:
            if lost := self._host_lost():
                return self._not_reused(lost)  # a host's new boot is no faster than a new lab
            faults.heal(lab)
            self._restore_settings()  # first: DRS, say, moves no VM while they are deleted
            names = [v["name"] for v in observe.cluster()["vms"]]
            if any(t.state not in ("done", "failed", "cancelled") for t in observe.call(service.tasks)):
                return self._not_reused("a task still runs")
            for n in names:
                observe.call(lambda s, n=n: service.delete_vm(s, n, force=True))
            t_vms = time.monotonic()
            killed = self._end_qemus()
            observe.wait_for("every VM stopped and released", lambda: not observe.qemu_processes() and not observe.call(
                lambda s: s.get_prefix(K.OWN)), 120)
            for p in _VM_RECORDS:
                observe.call(lambda s, p=p: s.delete_prefix(K.PREFIX + p))
            for n in names:
                for d in [DS_DIR / ds / n for ds in lab.state["datastores"]] + [HOSTS_DIR / h / "run" / n for h in lab.hosts]:
                    shutil.rmtree(d, ignore_errors=True)  # its disks, and its guest's logs the tests read
            self._drop_rules_groups_maintenance()
            t_diff = time.monotonic()
            deadline = t_diff + 30
            while (why := self._differences()) and time.monotonic() < deadline:
                time.sleep(0.5)
            if why:
                return self._not_reused("; ".join(why))
            print(f"heal: {len(names)} VMs deleted, gone in {t_diff - t_vms:.1f} s ({killed} QEMUs killed after "
                  f"their agents' grace), the lab as fresh {time.monotonic() - t_diff:.1f} s later")
        except Exception as e:  # noqa: BLE001 - any doubt: a fresh lab for the next test
            return self._not_reused(repr(e))
        self.reused += 1
        return True

    def _end_qemus(self, grace_s: float = 5.0) -> int:
        """The deleted VMs' QEMUs that are still there once their agents had ``grace_s`` to
        shut them down are killed: a guest still booting misses the ACPI button, and its
        agent would wait out the VM's shutdown timeout (20 s) before pulling the plug; the
        agent, stopping the VM already, takes the exit as the end of its shutdown."""
        deadline = time.monotonic() + grace_s
        while (left := _lab_qemus(self.lab)) and time.monotonic() < deadline:
            time.sleep(0.25)
        for pids in left.values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return sum(map(len, left.values()))

    def _host_lost(self) -> str:
        """Why a host is not the one of the fresh lab (powered off, hung, reset, its etcd
        member killed), or an empty string if none is."""
        lab = self.lab
        gone = [f for f in lab.state.get("faults", []) if f["kind"] in _HOST_LOSING_FAULTS]
        if gone:
            return f"host faults: {gone}"
        for h in lab.hosts:
            s = lab.supervisor_status(h)
            now = (s.get("state"), s.get("boots"), s.get("resets"), lab.supervisor_pid(h), lab.etcd_pid(h))
            if now != self._fresh["procs"][h][:5]:
                return f"{h}: supervisor (state, boots, resets, pid) and etcd pid {now} != {self._fresh['procs'][h][:5]}"
        return ""

    def _not_reused(self, why: str) -> bool:
        """Say (in pytest's warnings summary) why the next test gets a new lab."""
        warnings.warn(f"lab not reused: {why[:2000]}", LabNotReused, stacklevel=2)
        return False

    def _drop_rules_groups_maintenance(self) -> None:
        from vigil import service
        from vigil.lab import observe
        from vigil.store import keys as K

        snap = observe.call(lambda s: s.snapshot(), timeout=10)
        for r in service.rules(snap):
            observe.call(lambda s, r=r: service.delete_rule(s, r.name))
        for g in service.host_groups(snap):
            observe.call(lambda s, g=g: service.delete_host_group(s, g.name))
        for k in snap:
            if k.startswith(K.MAINTENANCE):
                observe.call(lambda s, h=k[len(K.MAINTENANCE):]: service.set_maintenance(s, h, False))


    def _restore_settings(self) -> None:
        """The cluster's settings (admission, DRS, orchestration...) back to the fresh lab's."""
        from vigil.lab import observe
        from vigil.store import keys as K

        fresh = {k: v for k, v in self._fresh["desired"].items() if k.startswith(K.SETTINGS)}
        now = {k: e.value for k, e in observe.call(lambda s: s.get_prefix(K.SETTINGS)).items()}
        for k in now.keys() - fresh.keys():
            observe.call(lambda s, k=k: s.delete(k))
        for k, v in fresh.items():
            if now.get(k) != v:
                observe.call(lambda s, k=k, v=v: s.put(k, v))


def _lab_qemus(lab: Any) -> dict[str, list[int]]:
    """Every QEMU process in a lab host's namespace, running a guest or not."""
    out = {}
    for h in lab.hosts:
        pids = []
        for pid in lab.host_pids(h):
            try:
                argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
            except OSError:
                continue
            if argv0.endswith(b"qemu-system-x86_64"):
                pids.append(pid)
        if pids:
            out[h] = pids
    return out


class SessionLabs:
    """The one lab of the machine, as the pool of the config the last test asked for."""

    def __init__(self) -> None:
        self.pool: LabPool | None = None
        # the config of the next test's shared lab (None: it shares none), while conftest's
        # teardown hook knows it; Ellipsis: not known
        self.next_config: Any = ...

    def shared_next(self, config: dict[str, Any]) -> bool:
        """Does the next test share a lab of ``config``? (yes when that is not known)"""
        return self.next_config is ... or self.next_config == config

    def pool_for(self, config: dict[str, Any]) -> LabPool:
        """The pool of ``config``; the lab of another config is torn down first."""
        if self.pool is None or self.pool.config != config:
            self.close()
            self.pool = LabPool(**config)
        return self.pool

    def keep_only(self, config: dict[str, Any] | None) -> None:
        """Tear the lab down unless it is of ``config`` (what the next test shares)."""
        if self.pool is not None and self.pool.config != config:
            self.close()

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()


SESSION = SessionLabs()


def config_of(item: pytest.Item) -> dict[str, Any] | None:
    """The config of the shared lab ``item`` uses (its module's ``shared_lab``), or None."""
    if "lab" not in getattr(item, "fixturenames", ()):
        return None
    module = getattr(item, "module", None)
    return getattr(getattr(module, "lab", None), "lab_config", None)


def grouped(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with the modules that share a lab of one config run one after the other,
    at the place of the first of them (those whose ``shared_lab`` says its tests leave the
    lab fresh first: their last lab then serves the next module); every module's tests stay
    together and in order, and the modules that share no lab keep their places."""
    modules: dict[Any, list[pytest.Item]] = {}
    for it in items:
        modules.setdefault(getattr(it, "module", None) or it, []).append(it)

    def key(tests: list[pytest.Item]) -> tuple | None:
        configs = [c for c in map(config_of, tests) if c is not None]
        return tuple(sorted(configs[0].items())) if configs else None

    def leaves_fresh(m: Any) -> bool:
        return bool(getattr(getattr(m, "lab", None), "fresh_after", False))

    keys = {m: key(tests) for m, tests in modules.items()}
    out: list[pytest.Item] = []
    done: set[Any] = set()
    for m, k in keys.items():
        if m in done:
            continue
        group = [m] if k is None else sorted((m2 for m2, k2 in keys.items() if k2 == k),
                                             key=lambda m2: not leaves_fresh(m2))
        for m2 in group:
            done.add(m2)
            out += modules[m2]
    return out


def passed(request: pytest.FixtureRequest) -> Callable[[], bool]:
    """Did the test of ``request`` pass its setup and call? (the reports conftest keeps)"""
    def ok() -> bool:
        reps = [getattr(request.node, f"rep_{w}", None) for w in ("setup", "call")]
        return all(r is not None and r.passed for r in reps)
    return ok


def shared_lab(fresh_after: bool = False, **config: Any) -> tuple[Any, Any]:
    """The fixtures ``lab_pool`` and ``lab`` (one test's) of a module whose tests share a
    lab of ``config`` (with every other module of the same config): ``lab_pool, lab =
    shared_lab(hosts=3, ...)``. ``fresh_after``: the module's tests leave the lab as fresh
    (no host lost): it runs before the other modules of its config."""

    @pytest.fixture(name="lab_pool")
    def lab_pool() -> LabPool:
        return SESSION.pool_for(config)

    @pytest.fixture(name="lab")
    def lab(lab_pool: LabPool, request: pytest.FixtureRequest) -> Iterator[Any]:
        with lab_pool.use(passed(request), lambda: SESSION.shared_next(config)) as one:
            yield one

    lab.lab_config = config  # type: ignore[attr-defined]  # what conftest groups and keeps labs by
    lab.fresh_after = fresh_after  # type: ignore[attr-defined]
    return lab_pool, lab
