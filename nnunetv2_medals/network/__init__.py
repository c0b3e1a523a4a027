"""MedalSNetwork and its parts (``nnunetv2_medals.network.medals_network``)."""
