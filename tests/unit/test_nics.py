"""VM NICs: names, MACs, and guest frames through the output gate (no QEMU, no taps)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.nics import tap_name
from vigil.hypervisor.qemu import OutputGate, VMPaths, build_argv
from vigil.model import SpecError, VMSpec, mac_address


def test_tap_names_fit_the_kernel_limit_and_differ_per_vm_and_nic():
    names = {tap_name(vm, i) for vm in ("a", "web1", "x" * 63) for i in range(4)}
    assert len(names) == 12 and all(len(n) <= 15 for n in names)


def test_macs_are_stable_local_and_distinct():
    assert mac_address("web1", 0) == mac_address("web1", 0)
    assert mac_address("web1", 0) != mac_address("web1", 1) != mac_address("web2", 0)
    assert mac_address("web1", 0).startswith("52:54:00:")


def test_a_nic_is_a_stream_socket_served_by_qemu():
    spec = VMSpec(name="web1", networks=("vmnet",))
    argv = build_argv(spec, VMPaths.for_vm(Path("/r"), "web1"), "tcg", {})
    i = argv.index("-netdev")
    assert argv[i + 1] == "stream,id=net0,server=on,addr.type=unix,addr.path=/r/web1/net0.sock"
    assert argv[i + 3] == f"virtio-net-pci,netdev=net0,id=nic0,mac={mac_address('web1', 0)}"


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
