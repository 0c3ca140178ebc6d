"""Building models: a PyTorch model becomes a checked Triton model repository (specs, config.pbtxt, export,
build, precision), published to S3 and read back."""
