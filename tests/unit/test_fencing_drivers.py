"""The fence drivers: what they read from BMC answers, and the Redfish driver against the
lab's Redfish BMC on loopback (real HTTPS, a CA of the test's own)."""
from __future__ import annotations

import asyncio

import pytest

from vigil.fencing import FenceDevice, fence, ipmi, redfish
from vigil.fencing.device import FenceError
from vigil.lab import bmc_redfish


def test_redfish_parsing():
    assert redfish.system_path({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]}) == "/redfish/v1/Systems/1"
    with pytest.raises(FenceError):
        redfish.system_path({"Members": []})
    sysj = bmc_redfish.system_json("host2", on=True)
    assert redfish.power_state(sysj) == "On"
    assert redfish.reset_target(sysj, "/x") == "/redfish/v1/Systems/host2/Actions/ComputerSystem.Reset"
    assert redfish.reset_target({}, "/redfish/v1/Systems/1/") == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
    assert redfish.force_off_allowed(sysj)
    assert not redfish.force_off_allowed({"Actions": {"#ComputerSystem.Reset": {
        "ResetType@Redfish.AllowableValues": ["On", "GracefulShutdown"]}}})
    assert redfish.power_state({"PowerState": None}) == ""
    with pytest.raises(FenceError):
        redfish.reset_target({"Actions": {"#ComputerSystem.Reset": {"target": "http://elsewhere/"}}}, "/x")


def test_ipmi_parsing_and_argv_keep_the_password_off_the_command_line():
    assert ipmi.parse_status("Chassis Power is off\n") == "off"
    assert ipmi.parse_status("Chassis Power is on") == "on"
    assert ipmi.parse_status("Error: Unable to establish IPMI v2 / RMCP+ session") == ""
    assert ipmi.error_line("x\n\nError: Unable to establish IPMI v2 / RMCP+ session\n").startswith("Error")
    dev = FenceDevice("ipmi", "10.0.1.2", "vigil", "/etc/vigil/bmc-password")
    argv = ipmi.argv(dev, "chassis", "power", "status")
    assert argv[argv.index("-f") + 1] == "/etc/vigil/bmc-password" and "-P" not in argv
    assert argv[argv.index("-p") + 1] == "623" and argv[-3:] == ["chassis", "power", "status"]


def test_device_round_trip_and_refusals():
    dev = FenceDevice("redfish", "10.0.1.2", "vigil", "/p", port=8602, ca="/ca.pem", timeout_s=3.0)
    assert FenceDevice.from_json(dev.to_json()) == dev
    assert FenceDevice.from_json({}) is None and FenceDevice.from_json({"kind": "telnet"}) is None
    assert dev.port_or_default == 8602 and FenceDevice("ipmi", "a", "u", "/p").port_or_default == 623


@pytest.fixture
def bmc(tmp_path):
    """The lab's Redfish BMC for "host2" on 127.0.0.1, with a power switch of the test's own."""
    from vigil.pki import create_ca, issue

    create_ca(tmp_path / "ca")
    issue(tmp_path / "ca", tmp_path, "server", "bmc", ips=("127.0.0.1",))
    state = {"on": True, "failed": False, "acts": []}

    def act(kind: str) -> None:
        state["acts"].append(kind)
        state["on"] = kind != "ForceOff"

    power = bmc_redfish.Power("host2", lambda: state["on"], act, lambda: state["failed"])
    srv = bmc_redfish.serve("127.0.0.1", 0, power, "vigil", "s3cret", str(tmp_path / "server-cert.pem"),
                            str(tmp_path / "server-key.pem"))
    (tmp_path / "pw").write_text("s3cret\n")
    dev = FenceDevice("redfish", "127.0.0.1", "vigil", str(tmp_path / "pw"), port=srv.server_address[1],
                      ca=str(tmp_path / "ca" / "ca-cert.pem"), timeout_s=2.0)
    yield dev, state, tmp_path
    state["failed"] = False
    srv.shutdown()


def test_redfish_fence_powers_off_and_confirms(bmc):
    dev, state, _ = bmc
    r = asyncio.run(fence(dev))
    assert r.ok, r.detail
    assert state["acts"] == ["ForceOff"] and state["on"] is False
    again = asyncio.run(fence(dev))  # already off: confirmed, no second power action
    assert again.ok and "already off" in again.detail and state["acts"] == ["ForceOff"]


def test_redfish_fence_refused_with_a_wrong_password_never_shows_it(bmc):
    dev, state, tmp = bmc
    (tmp / "pw").write_text("wrong-password\n")
    r = asyncio.run(fence(dev))
    assert not r.ok and "401" in r.detail and "wrong-password" not in r.detail
    assert state["acts"] == []


def test_redfish_fence_of_a_silent_bmc_times_out(bmc):
    dev, state, _ = bmc
    state["failed"] = True
    r = asyncio.run(fence(FenceDevice(**{**dev.to_json(), "timeout_s": 0.5})))
    assert not r.ok and "within 0.5s" in r.detail and r.seconds < 1.5
    assert state["on"] is True


def test_unreadable_password_file_is_a_failed_fence():
    r = asyncio.run(fence(FenceDevice("redfish", "127.0.0.1", "vigil", "/nonexistent/pw", port=9)))
    assert not r.ok and "password file" in r.detail
