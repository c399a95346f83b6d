"""Wrist IMU bands: sensor profiles, sans-IO decoders, the IMU batch channel (and, beside
them, the BLE adapter and the source that drives it)."""
