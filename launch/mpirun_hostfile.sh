#!/usr/bin/env bash
# Start a dtrain job on several machines with mpirun and a hostfile.
#
#   launch/mpirun_hostfile.sh HOSTFILE [script.py args...]
#   launch/mpirun_hostfile.sh launch/hostfile.example examples/train_mlp.py --epochs 5
#
# Every machine must reach the others by ssh without a password and see the same Python
# environment (same path, dtrain[mpi] installed) and the same script path, e.g. on a shared
# file system. With no script, each rank runs dtrain's built-in job (MLP on digits).
#
# Ranks, world size and local rank come from mpirun's environment; each rank uses GPU
# cuda:<local rank> when CuPy sees GPUs (backend nccl), else the MPI backend on the CPU.
#
# Settings (environment variables):
#   PYTHON   the Python of the job's environment (default: python3 on PATH)
#   MPIRUN   the mpirun to use (default: mpirun on PATH). It must come from the same MPI
#            library mpi4py was built against (the mpich wheel installs one next to Python).
#   NP       total number of ranks (default: the sum of the counts in HOSTFILE)
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
    echo "usage: $0 HOSTFILE [script.py args...]   (see launch/hostfile.example)" >&2
    exit 2
fi
hostfile=$1
shift
PYTHON=${PYTHON:-python3}
MPIRUN=${MPIRUN:-mpirun}

# total ranks = sum of slots=N over the non-comment lines
np=${NP:-$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } total += n } END { print total }' "$hostfile")}

if "$MPIRUN" --version 2>&1 | grep -qi "open mpi"; then
    # Open MPI: pass the environment variables the ranks need (-x), bind nothing so that
    # NumPy's threads are free to use the cores given by OMP_NUM_THREADS.
    exec "$MPIRUN" -np "$np" --hostfile "$hostfile" --bind-to none \
        -x PATH -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
        "$PYTHON" -m dtrain.launch "$@"
else
    # MPICH / Hydra (and Intel MPI): hosts are written "host:N"; -envall forwards the environment.
    machinefile=$(mktemp)
    trap 'rm -f "$machinefile"' EXIT
    awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } print $1 ":" n }' \
        "$hostfile" > "$machinefile"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$MPIRUN" -n "$np" -f "$machinefile" -envall \
        "$PYTHON" -m dtrain.launch "$@"
fi
