"""The built-in distillation trainer: losses, data and teacher signals, the training loop."""
