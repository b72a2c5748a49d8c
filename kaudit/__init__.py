"""kaudit: static audit of KVM's VM-wide state changed from per-vCPU context."""

__version__ = "0.1.0"
