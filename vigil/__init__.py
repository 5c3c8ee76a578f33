"""vigil: high availability for QEMU/KVM clusters."""

__version__ = "0.1.0"
