"""lulc: land-use / land-cover classification for satellite rasters.

``lulc.runtime`` is the edge install (no TensorFlow); ``lulc.training`` and ``lulc.export``
need their extras (``pip install 'lulc[train,export]'``) and import the runtime, never the
reverse; ``lulc.web`` is the browser page.
"""
