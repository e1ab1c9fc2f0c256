"""From raw class map to product: minimum mapping unit, majority and Bayesian smoothing,
applied to a finished map strip by strip (``lulc-infer --mmu``, ``lulc clean``), and
polygons of its regions (``--vector``, ``lulc vectorize``)."""
