"""Pose encoding, geometry conversion, checkpoint loading and preprocessing for the VGGT backend."""
