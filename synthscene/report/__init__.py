"""Reports of a run: image grids (and, later, the HTML gallery)."""
