"""``lymphcad serve``: a local web page to review detections (FastAPI app, review store, Canvas 2D viewer)."""
