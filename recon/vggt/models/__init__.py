"""The assembled VGGT network, its aggregator and configuration."""
