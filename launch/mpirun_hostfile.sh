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
#   SSH      the program that starts mpirun's daemons on the other hosts (default: ssh);
#            launch/fake_ssh.sh reaches the hosts of launch/fake_cluster.sh
#   MPIRUN_ARGS  more arguments for mpirun, word-split (e.g. "-localhost 10.213.0.1", or
#            "-iface eth1": the address the other hosts reach this one at)
#
# Before mpirun starts, every host of HOSTFILE must answer `SSH HOST true` within 15 s: a
# host that does not is named (with ssh's own message) instead of mpirun waiting on it.
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
    echo "usage: $0 HOSTFILE [script.py args...]   (see launch/hostfile.example)" >&2
    exit 2
fi
hostfile=$1
shift
PYTHON=${PYTHON:-python3}
MPIRUN=${MPIRUN:-mpirun}
SSH=${SSH:-ssh}
read -r -a extra <<< "${MPIRUN_ARGS:-}"

# every host answers, or the job does not start (in parallel: one slow host costs 15 s, not n x 15)
hosts=$(awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$hostfile")
errors=$(mktemp -d)
trap 'rm -rf "$errors"' EXIT
declare -A pid
for host in $hosts; do
    timeout 15 "$SSH" -o BatchMode=yes -o ConnectTimeout=10 "$host" true < /dev/null > /dev/null 2> "$errors/$host" &
    pid[$host]=$!
done
unreachable=0
for host in $hosts; do
    code=0
    wait "${pid[$host]}" || code=$?
    if [[ $code != 0 ]]; then
        reason=$(tr '\n' ' ' < "$errors/$host")
        [[ $code == 124 ]] && reason="no answer within 15 s"
        echo "$0: cannot reach host $host through $SSH (exit code $code): ${reason:-no message}" >&2
        unreachable=1
    fi
done
if [[ $unreachable == 1 ]]; then
    echo "$0: every host of $hostfile must accept '$SSH HOST' without a password; the job was not started" >&2
    exit 1
fi
rm -rf "$errors"
trap - EXIT
ssh_path=$(realpath "$(command -v "$SSH")")  # mpirun may run it from another folder

# Each rank runs under a small shell that names it when a signal ends it: the process
# managers' own reports name the host and the pid only ("PID 4242 RUNNING AT node02").
# The shell then ends by the same signal: Hydra ends the job at once when a rank is
# killed, but waits for the other ranks when one exits with a code. (The rank runs in the
# foreground: the process manager's cleanup signals the shell's process group, the rank too.)
rank_shell='"$@"
code=$?
if [ $code -gt 128 ] && [ $code -lt 160 ]; then
    echo "rank ${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-?}} on host $(hostname) was killed by SIG$(kill -l $code)" >&2
    kill -s "$(kill -l $code)" $$
fi
exit $code'

# total ranks = sum of slots=N over the non-comment lines
np=${NP:-$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } total += n } END { print total }' "$hostfile")}

if "$MPIRUN" --version 2>&1 | grep -qi "open mpi"; then
    # Open MPI: pass the environment variables the ranks need (-x), bind nothing so that
    # NumPy's threads are free to use the cores given by OMP_NUM_THREADS.
    exec "$MPIRUN" -np "$np" --hostfile "$hostfile" --bind-to none --mca plm_rsh_agent "$ssh_path" "${extra[@]}" \
        -x PATH -x LD_LIBRARY_PATH -x OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
        /bin/sh -c "$rank_shell" rank "$PYTHON" -m dtrain.launch "$@"
else
    # MPICH / Hydra (and Intel MPI): hosts are written "host:N"; -envall forwards the environment.
    machinefile=$(mktemp)
    trap 'rm -f "$machinefile"' EXIT
    awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } print $1 ":" n }' \
        "$hostfile" > "$machinefile"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$MPIRUN" -n "$np" -f "$machinefile" -envall \
        -launcher ssh -launcher-exec "$ssh_path" "${extra[@]}" \
        /bin/sh -c "$rank_shell" rank "$PYTHON" -m dtrain.launch "$@"
fi
