"""Runnable training scripts; installed as ``dtrain.examples`` (the launcher's built-in job
is ``dtrain.examples.ddp_digits``)."""
