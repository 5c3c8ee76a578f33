"""VM NICs: tap names, MACs, the taps found in a process, the output gate, the FT NIC hold
(no QEMU, no taps)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import asyncio

from vigil.env.nics import taps_of
from vigil.hypervisor.nichold import NicHold, NicHoldError
from vigil.hypervisor.qemu import OutputGate, QemuError, VMPaths, build_argv, tap_name
from vigil.model import SpecError, VMSpec, mac_address


def test_tap_names_fit_the_kernel_limit_and_differ_per_vm_nic_and_run_dir():
    dirs = [VMPaths.for_vm(Path("/r"), vm) for vm in ("a", "web1", "x" * 63)] + [VMPaths(Path("/r/.ft/a/3"))]
    names = {tap_name(p, i) for p in dirs for i in range(4)}
    assert len(names) == 16 and all(len(n) <= 15 for n in names)
    assert all(n.endswith(f"n{i}") for p in dirs for i in range(4) for n in [tap_name(p, i)])


def test_the_taps_of_a_process_come_from_its_fdinfo(tmp_path):
    fdinfo = tmp_path / "42" / "fdinfo"
    fdinfo.mkdir(parents=True)
    (fdinfo / "3").write_text("pos:\t0\nflags:\t02\n")
    (fdinfo / "7").write_text("pos:\t0\nflags:\t02100002\nmnt_id:\t24\nino:\t105\niff:\tvtabc123456n1\n")
    (fdinfo / "8").write_text("iff:\tvtabc123456n0\n")
    assert taps_of(42, proc=tmp_path) == {0: "vtabc123456n0", 1: "vtabc123456n1"}
    assert taps_of(43, proc=tmp_path) == {}


def test_macs_are_stable_local_and_distinct():
    assert mac_address("web1", 0) == mac_address("web1", 0)
    assert mac_address("web1", 0) != mac_address("web1", 1) != mac_address("web2", 0)
    assert mac_address("web1", 0).startswith("52:54:00:")


def test_a_nic_is_a_tap_qemu_makes_without_scripts_vhost_only_when_asked_and_never_for_a_standby():
    spec = VMSpec(name="web1", networks=("vmnet",))
    paths = VMPaths.for_vm(Path("/r"), "web1")
    argv = build_argv(spec, paths, "tcg", {})
    i = argv.index("-netdev")
    assert argv[i + 1] == f"tap,id=net0,ifname={tap_name(paths, 0)},script=no,downscript=no"
    assert argv[i + 3] == f"virtio-net-pci,netdev=net0,id=nic0,mac={mac_address('web1', 0)}"
    assert build_argv(spec, paths, "kvm", {}, vhost=True)[i + 1].endswith(",vhost=on")
    standby = build_argv(spec, paths, "kvm", {}, vhost=True, standby=True)
    assert "vhost" not in standby[standby.index("-netdev") + 1]


class FakeQemu:
    """QMP of a QEMU's filter objects: frames pass them from the newest to the oldest."""

    def __init__(self, vhost: bool = False) -> None:
        self.filters: dict[str, list[str]] = {}  # id -> held frames, in creation order
        self.out: list[str] = []
        self.vhost = vhost

    def send(self, frame: str) -> None:
        if self.filters:
            self.filters[list(self.filters)[-1]].append(frame)
        else:
            self.out.append(frame)

    async def execute(self, cmd: str, args: dict | None = None) -> object:
        args = args or {}
        if cmd == "object-add":
            if self.vhost:
                raise QemuError("QMP object-add: Vhost is not supported")
            self.filters[args["id"]] = []
        elif cmd == "qom-set":
            fid = args["path"].removeprefix("/objects/")
            if fid not in self.filters:
                raise QemuError(f"Device '{args['path']}' not found")
            ids = list(self.filters)
            older = ids[:ids.index(fid)]
            (self.filters[older[-1]] if older else self.out).extend(self.filters[fid])
            self.filters[fid] = []
        elif cmd == "object-del":
            del self.filters[args["id"]]
        elif cmd == "qom-list":
            return [{"name": "vigil-tls-server"}, *({"name": f} for f in self.filters)]
        return {}


@given(steps=st.lists(st.sampled_from(["frame", "cut", "ack", "agent-restart"]), max_size=40))
def test_held_frames_leave_only_after_their_checkpoint_is_acked_in_order(steps):
    """The primary loop's use of NicHold: hold, cut with the guest stopped, release the cut
    once acked; an agent restart adopts what QEMU holds and opens only at the end."""
    q = FakeQemu()
    h = NicHold(1)
    run = asyncio.run
    run(h.hold(q))
    sent: list[str] = []
    cuts: list[tuple[int, int]] = []  # (NicHold cut, frames sent before it)
    safe = 0
    for n, step in enumerate(steps):
        if step == "frame":
            q.send(str(n))
            sent.append(str(n))
        elif step == "cut":
            cuts.append((run(h.cut(q)), len(sent)))
        elif step == "ack" and cuts:
            cut, before = cuts.pop(0)
            run(h.release(q, cut))
            safe = max(safe, before)
        elif step == "agent-restart":
            h = NicHold(1)
            run(h.adopt(q))
            cuts = []  # the new agent's checkpoints start afresh
        assert q.out == sent[:len(q.out)], "out of order"
        assert len(q.out) <= safe, "a frame left before its checkpoint was acked"
    run(h.open(q))
    assert q.out == sent and not q.filters


def test_a_vhost_nic_cannot_be_held():
    with pytest.raises(NicHoldError, match="vhost-net"):
        asyncio.run(NicHold(1).hold(FakeQemu(vhost=True)))


def test_network_names_are_checked():
    VMSpec(name="a", networks=("vmnet", "storage-net")).validate()
    for bad in (("Bad Net",), ("a",) * 5):
        with pytest.raises(SpecError):
            VMSpec(name="a", networks=bad).validate()


@given(steps=st.lists(st.tuples(st.sampled_from(["line", "frame"]), st.booleans()), max_size=40))
def test_held_output_leaves_in_order_whatever_its_sink(steps, tmp_path_factory):
    """Lines and frames share one order and one cut: a checkpoint releases both up to it."""
    out: list[str] = []
    g = OutputGate(tmp_path_factory.mktemp("g") / "guest.log")
    g._write_lines = lambda lines: out.extend(f"line:{x}" for x in lines)  # type: ignore[method-assign]
    frames = lambda fs: out.extend(f"frame:{f.decode()}" for f in fs)  # noqa: E731
    g.hold()
    sent: list[str] = []
    for n, (kind, checkpoint) in enumerate(steps):
        if kind == "line":
            g.add(str(n))
        else:
            g.add_to(frames, str(n).encode())
        sent.append(f"{kind}:{n}")
        if checkpoint:
            g.release(g.received)
            assert out == sent
    g.open()
    assert out == sent


def test_an_ft_vm_never_gets_vhost_net_even_where_it_is_usable(monkeypatch: pytest.MonkeyPatch):
    from vigil.hypervisor import argv

    monkeypatch.setattr(argv.os, "access", lambda path, mode: True)
    assert argv.vhost_for("kvm", ft=False)
    assert not argv.vhost_for("kvm", ft=True)  # QEMU's filters could not hold its output
    assert not argv.vhost_for("tcg", ft=False)
