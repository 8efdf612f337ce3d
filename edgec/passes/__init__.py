"""Graph passes: a registry of named onnx-ir passes and the manager that runs them."""
