"""The sync service: uploads sealed segments to a tus 1.0 collector, verified, exactly once.

    tus.py        sans-IO tus client: requests to send, responses interpreted as events
    uploader.py   the httpx adapter: runs one upload, streaming chunks from disk
    state.py      SQLite state: one row per segment, the lifecycle table
    watcher.py    discovery: watchdog on ``<spool>/sealed/`` plus a periodic rescan
    policy.py     opportunistic rules (pure) and the thin probes that observe the situation
    retention.py  which verified segments to evict, and evicting them
    service.py    the loop that ties them together (``wearcap sync``); its retry delays are
                  agent/backoff.py's, shared with the BLE links
"""
