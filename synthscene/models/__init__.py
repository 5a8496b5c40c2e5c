"""Diffusers model construction and loading (hub id, local folder, the embedded model)."""
