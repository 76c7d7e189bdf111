"""LVM platform library: plain Python steps over files and arrays (no orchestration imports)."""

__version__ = "0.1.0"
