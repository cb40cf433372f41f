"""Artifacts on disk: the versioned stage store and its IO manager, chunk spools, manifests, and the layout of the artifacts root."""
