"""recon: the first stage, frame ingest and window models.

``recon.ingest`` turns videos, image folders, datasets, cameras and pushed
frames into a lazy stream of ``stream4d.contracts.Frame``; the window models
turn windows of frames into ``WindowPrediction``s. Nothing here imports a
later stage.
"""
