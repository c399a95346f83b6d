"""Recording: the segment writer (MCAP), the roll policy, the spool and crash recovery."""
