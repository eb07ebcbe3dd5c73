"""Training tools for organdose's 2.5D Mask R-CNN (see train/README.md)."""
