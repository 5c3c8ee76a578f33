"""vigil's simulator: the real controller over a simulated world, on virtual time.

``python -m vigil.sim run tests/scenarios/NAME`` runs golden scenarios (vigil.sim.scenario).
"""
