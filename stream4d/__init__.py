"""stream4d: streaming 3D/4D reconstruction.

This package holds what every stage shares (contracts, geometry, output
format, evaluation, synthetic scenes) and the orchestration (pipeline, CLI).
The stages themselves are the top-level packages recon, align, memory, viz
and server.
"""

__version__ = "0.1.0"
