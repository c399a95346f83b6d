"""Fakes for what cannot run on a development machine (only picamera2); each one is held to
the real library's API by a canary test."""
