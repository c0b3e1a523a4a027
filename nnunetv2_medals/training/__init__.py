"""Training-time pieces MedalSTrainer wires into nnU-Net's loop: prompt sampling, simulated spatial prompts
(Algorithm 1), dynamic zoom, the learning-rate schedule."""
