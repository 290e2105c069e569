"""Same initial weights under both frameworks: the PyTorch run saves its model's initial
state to an .npz file, the run of the renamed program loads it. Plain NumPy, so either
framework reads what the other wrote; imported by the programs as any helper module is."""
import numpy as np
import torch


def add_arguments(parser):
    parser.add_argument("--save-init", metavar="NPZ", help="write the model's initial weights here")
    parser.add_argument("--load-init", metavar="NPZ", help="start from the weights in this file")


def share_initial_weights(model, args):
    if args.save_init:
        np.savez(args.save_init, **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    if args.load_init:
        with np.load(args.load_init) as f:
            model.load_state_dict({k: torch.from_numpy(f[k]) for k in f.files})
