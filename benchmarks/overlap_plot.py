"""The overlap of DDP's bucket all-reduces with backward, drawn from a merged DTRAIN_TRACE
file (dtrain.timing): one DDP step, two tracks per rank (its main thread's phases; its comm
thread's collectives), and the share of the all-reduce time spent while that rank's main
thread was still computing backward (hidden), as opposed to waiting for it (comm-wait) or
doing anything else. Used by ``benchmarks/scaling.py --trace PNG``."""
import numpy as np

COLOURS = {"data-wait": "tab:gray", "forward": "tab:blue", "backward": "tab:green", "comm-wait": "tab:red",
           "optimizer": "tab:purple"}
COMM_COLOUR = "tab:orange"
GRID_US = 5.0  # the resolution of the overlap arithmetic


def last_ddp_step(events):
    """(start, end) in us of the last DDP step on every rank: from the earliest start of each
    rank's last DDP forward to the latest end of the first optimizer step after it."""
    starts, ends = [], []
    for pid in sorted({e["pid"] for e in events}):
        mine = [e for e in events if e["pid"] == pid and e["tid"] == 0]
        forward = max((e for e in mine if e["name"] == "forward"), key=lambda e: e["ts"])
        opt = min((e for e in mine if e["name"] == "optimizer" and e["ts"] >= forward["ts"]), key=lambda e: e["ts"])
        starts.append(forward["ts"])
        ends.append(opt["ts"] + opt["dur"])
    return min(starts), max(ends)


def _mask(spans, start, n):
    mask = np.zeros(n, bool)
    for e in spans:
        mask[max(0, int((e["ts"] - start) / GRID_US)):max(0, int((e["ts"] + e["dur"] - start) / GRID_US))] = True
    return mask


def hidden_share(events, pid, window):
    """The share of rank ``pid``'s all-reduce time in ``window`` during which its main thread
    was in backward and not waiting for communication (None without communication)."""
    start, end = window
    n = int((end - start) / GRID_US) + 1
    inside = [e for e in events if e["pid"] == pid and e["ts"] < end and e["ts"] + e["dur"] > start]
    comm = _mask([e for e in inside if e["tid"] != 0], start, n)
    computing = _mask([e for e in inside if e["tid"] == 0 and e["name"] == "backward"], start, n) & \
        ~_mask([e for e in inside if e["tid"] == 0 and e["name"] == "comm-wait"], start, n)
    return (comm & computing).sum() / comm.sum() if comm.any() else None


def draw(events, path, title):
    """Save the PNG of the last DDP step of ``events`` (a merged trace's X events); returns
    {rank: hidden share}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    events = [e for e in events if e["ph"] == "X"]
    window = last_ddp_step(events)
    ranks = sorted({e["pid"] for e in events})
    fig, ax = plt.subplots(figsize=(10, 1 + 1.1 * len(ranks)))
    labels, hidden = [], {}
    for k, rank in enumerate(ranks):
        y_main, y_comm = 2 * k + 1, 2 * k
        inside = [e for e in events if e["pid"] == rank and e["ts"] < window[1] and e["ts"] + e["dur"] > window[0]]
        for e in sorted(inside, key=lambda e: -e["dur"]):  # the longest first: nested spans drawn over it
            main = e["tid"] == 0
            start, end = max(e["ts"], window[0]), min(e["ts"] + e["dur"], window[1])  # clipped to the step
            ax.broken_barh([((start - window[0]) / 1e3, (end - start) / 1e3)], (y_main if main else y_comm, 0.8),
                           color=COLOURS.get(e["name"], "black") if main else COMM_COLOUR, edgecolor="white",
                           linewidth=0.5)
        hidden[rank] = hidden_share(events, rank, window)
        share = "-" if hidden[rank] is None else f"{100 * hidden[rank]:.0f}% hidden"
        labels += [f"rank {rank} comm ({share})", f"rank {rank} main"]
    ax.set_yticks([y + 0.4 for y in range(2 * len(ranks))])
    ax.set_yticklabels(labels)
    ax.set_xlabel("ms since the step's forward")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in [*COLOURS.values(), COMM_COLOUR]]
    ax.legend(handles, [*COLOURS, "all-reduce (comm thread)"], ncol=6, loc="upper center",
              bbox_to_anchor=(0.5, -0.25 if len(ranks) < 3 else -0.12), fontsize="small")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return hidden
