"""Training and calibration of tympan's own weights."""
