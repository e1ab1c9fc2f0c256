"""lulc export: turn a bundle's Keras model into ONNX, TensorRT and TF.js artefacts.

Every target is verified against the Keras model on the bundle's stored sample tiles
before it is recorded in the bundle; a failed check writes nothing.
"""
