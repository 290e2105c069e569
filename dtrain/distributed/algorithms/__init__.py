"""``torch.distributed.algorithms``' path: :mod:`.ddp_comm_hooks` (PowerSGD and the default hooks)."""
