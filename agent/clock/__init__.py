"""Device-clock to host-timeline mappings (pure: observations in, a fitted mapping out)."""
