"""Prompted prediction: the model session (``predictor``), export and writers, two-stage, self-refinement, the
folder loop and ``nnUNetv2_predict_medals`` (``predict_command``)."""
