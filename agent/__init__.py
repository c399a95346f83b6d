"""wearcap: capture agent for a head-mounted camera rig with BLE wrist IMUs."""

__version__ = "0.1.0"
