"""Data out: reading segments back (checked), and writing them where others can read them.

    reader     one segment file -> its records, every chunk CRC-checked (inspect uses it too)
    streams    decoded streams: frames, IMU samples, gaps, clock fits, events
    takes      which segments join into one take, and where a take sits on the wall clock
    foxglove   an MCAP of protobuf messages that Foxglove decodes (``--to foxglove``)
    mp4        H.264 remuxed into MP4 plus Parquet tables (``--to mp4``)
    lerobot    a LeRobot v3 dataset (``--to lerobot``)

Only ``reader`` and ``streams`` run on the device's dependencies; the writers need the
``export`` extra (``pip install 'wearcap[export]'``) and run on a workstation or the collector.
"""
