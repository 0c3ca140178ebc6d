"""`inferstack bench`: the contenders, perf_analyzer, the plain PyTorch baseline, config search and plots."""
