"""The simulated rig: pure device models (band_model) and the processes that serve them."""
