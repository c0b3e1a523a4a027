"""Prompted prediction: ``MedalSPredictor`` (Python API) and ``nnUNetv2_predict_medals`` (command)."""
