#!/usr/bin/env bash
# ssh for the hosts of launch/fake_cluster.sh: `fake_ssh.sh [ssh options] HOST COMMAND...`
# runs COMMAND (one shell command line, as ssh runs it) inside HOST's network, UTS and IPC
# namespaces. MPICH's mpiexec uses it through `-launcher ssh -launcher-exec fake_ssh.sh`
# (launch/mpirun_hostfile.sh does that when SSH names it), Open MPI's through
# `--mca plm_rsh_agent fake_ssh.sh`. A host that is not one of a fake cluster's fails as
# ssh does for a name it cannot resolve: exit code 255 and a message naming the host.
set -uo pipefail

STATE=/run/dtrain-fake-cluster

while [[ $# -gt 0 && $1 == -* ]]; do  # ssh's options: the ones that take a value skip it too
    case $1 in
        -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;
        *) shift ;;
    esac
done
if [[ $# -lt 1 ]]; then
    echo "usage: $0 [ssh options] HOST [COMMAND...]" >&2
    exit 255
fi
host=$1
shift
dir=$STATE/$host
if [[ ! -e /run/netns/$host || ! -e $dir/uts ]]; then
    echo "fake_ssh.sh: Could not resolve hostname $host: not a host of a fake cluster (launch/fake_cluster.sh up)" >&2
    exit 255
fi
exec nsenter --net="/run/netns/$host" --uts="$dir/uts" --ipc="$dir/ipc" -- /bin/sh -c "${*:-exec \$SHELL -l}"
