"""Prediction heads on top of the aggregator, one file each: camera, DPT (depth & point), track."""
