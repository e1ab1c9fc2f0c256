"""lulc training: data pipelines, Keras model zoo, training runs and evaluation.

May import :mod:`lulc.runtime`; TensorFlow is imported lazily inside the functions that need it.
"""
