"""dtrain.nn.functional: stateless layers, activations and losses (as torch.nn.functional)."""
