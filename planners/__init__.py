"""Medal S experiment planners (installed as ``nnunetv2_medals.planners``)."""
