"""The reference collection server: a tus 1.0 server with per-device tokens, content
verification, deduplication on (device, segment id, SHA-256), a per-device completeness view,
and local or S3-compatible storage. ``wearcap collector`` runs it (agent/commands/collector.py).
"""
