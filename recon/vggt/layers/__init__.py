"""Building blocks of the VGGT network, one small module each."""
