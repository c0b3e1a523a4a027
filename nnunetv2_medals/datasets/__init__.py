"""Text-prompted nnU-Net raw datasets: the validator (:mod:`.text_prompted`) and every builder (phantom, brain
atlas, nuclei sample, BiomedSegFM conversion)."""
