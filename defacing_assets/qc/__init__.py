"""Quality control of defaced scans: surface renders and face detection on them."""
