"""Rank script: join the process group, print this rank's host, leave."""
import socket

import dtrain.comm as dist

dist.init_process_group("mpi")
print(f"rank {dist.get_rank()} joined on {socket.gethostname()}", flush=True)
dist.destroy_process_group()
