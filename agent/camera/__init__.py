"""Camera sources. Each backend is imported lazily by ``open_camera``."""
