#!/usr/bin/env bash
# A cluster of N "hosts" on this one machine, for trying (and testing) multi-host jobs.
#
#   launch/fake_cluster.sh up NAME N [SUBNET]   make hosts NAME-h1 .. NAME-hN (needs root)
#   launch/fake_cluster.sh down NAME            remove them (also after a half-made `up`)
#   launch/fake_cluster.sh hostfile NAME SLOTS  print a hostfile of NAME's hosts, SLOTS ranks each
#   launch/fake_cluster.sh rate NAME RATE       limit every host's link to RATE each way (tc's
#                                               units: 1gbit, 500mbit; "off" removes the limit)
#   launch/fake_ssh.sh NAME-h2 hostname         run a command on host NAME-h2, as ssh would
#
# Each host is a Linux network namespace with its own loopback and one interface (eth0, a
# veth whose other end is on the bridge NAME-br, address SUBNET.(10+i)/24; the bridge has
# SUBNET.1), a UTS namespace (its hostname is NAME-hi) and an IPC namespace. The private IPC
# namespace is what keeps two hosts from talking through shared memory: with only a network
# namespace, UCX finds the other "host"'s ranks through System V shared memory and nothing
# crosses the veths (../shared/notes/multihost.md; a private /dev/shm alone is not enough).
# The mount namespace and file system are shared: every host sees the same Python and
# checkout, as on a cluster with a shared file system.
#
# MPICH's mpiexec reaches the hosts through launch/fake_ssh.sh instead of ssh:
#
#   launch/fake_cluster.sh up demo 2
#   launch/fake_cluster.sh hostfile demo 2 > /tmp/hosts
#   SSH=launch/fake_ssh.sh MPIRUN_ARGS="-localhost 10.213.0.1" \
#       launch/mpirun_hostfile.sh /tmp/hosts examples/ddp_digits.py --epochs 2
#   launch/fake_cluster.sh down demo
#
# (-localhost: the address mpiexec advertises to its proxies; the default, this machine's
# hostname, does not resolve to anything reachable from inside the namespaces.) Addresses
# stay inside the bridge this script makes: nothing is routed to or from the outside.
# SUBNET is the first three numbers of a private /24 (default 10.213.0); NAME must be
# at most 8 characters (interface names have 15 at most).
set -euo pipefail

STATE=/run/dtrain-fake-cluster  # one folder per host: its uts and ipc namespace files

die() { echo "fake_cluster.sh: $*" >&2; exit 1; }

check_name() {
    [[ $1 =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "cluster name '$1': use 1-8 lowercase letters and digits, starting with a letter"
}

can_make_namespaces() {
    # the reason, on stderr, when this machine cannot host a fake cluster
    [[ $(id -u) == 0 ]] || { echo "needs root (id -u is $(id -u)) to make network namespaces" >&2; return 1; }
    for tool in ip unshare nsenter; do
        command -v "$tool" >/dev/null || { echo "needs '$tool' (iproute2 / util-linux), not found on PATH" >&2; return 1; }
    done
}

up() {
    local name=$1 n=$2 subnet=${3:-10.213.0}
    check_name "$name"
    [[ $n =~ ^[1-9]$ ]] || die "host count '$n': 1 to 9"
    [[ $subnet =~ ^10\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "subnet '$subnet': write the first three numbers of a 10.x.y.0/24"
    can_make_namespaces || exit 1
    ip link show "$name-br" >/dev/null 2>&1 && die "cluster '$name' exists already (its bridge $name-br does): 'down $name' first"
    # a failure half-way leaves nothing behind
    trap 'down "$name" >/dev/null 2>&1 || true' ERR
    ip link add "$name-br" type bridge
    ip addr add "$subnet.1/24" dev "$name-br"
    ip link set "$name-br" up
    local i host dir
    for ((i = 1; i <= n; i++)); do
        host=$name-h$i
        dir=$STATE/$host
        mkdir -p "$dir"
        ip netns add "$host"
        ip link add "$name-v$i" type veth peer name eth0 netns "$host"
        ip link set "$name-v$i" master "$name-br" up
        ip -n "$host" addr add "$subnet.$((10 + i))/24" dev eth0
        ip -n "$host" link set lo up
        ip -n "$host" link set eth0 up
        # UTS and IPC namespaces kept alive by bind mounts on these files (no process needed)
        touch "$dir/uts" "$dir/ipc"
        unshare --uts="$dir/uts" --ipc="$dir/ipc" hostname "$host"
        echo "$subnet.$((10 + i))" > "$dir/address"
    done
    trap - ERR
    echo "cluster $name: hosts $name-h1..$name-h$n on $subnet.0/24, mpiexec's address $subnet.1 (bridge $name-br)"
}

down() {
    local name=$1 host
    check_name "$name"
    # hosts of this cluster: the namespaces and state folders named NAME-h<digit>
    for host in $( (ip netns list 2>/dev/null | awk '{print $1}'; ls "$STATE" 2>/dev/null) | grep -E "^$name-h[0-9]$" | sort -u); do
        ip netns pids "$host" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns delete "$host" 2>/dev/null || true  # deletes its veth pair too
        for ns in uts ipc; do
            umount "$STATE/$host/$ns" 2>/dev/null || true
        done
        rm -rf "${STATE:?}/$host"
    done
    ip link delete "$name-br" 2>/dev/null || true
}

limit_link() {  # DEV RATE [-n NETNS]
    local dev=$1 limit=$2
    shift 2
    tc "$@" qdisc del dev "$dev" root 2>/dev/null || true
    if [[ $limit != off ]]; then
        tc "$@" qdisc add dev "$dev" root tbf rate "$limit" burst 1mb latency 50ms
    fi
}

rate() {
    # a token bucket (tbf) on both ends of each host's veth: what leaves the host, and what
    # the bridge sends to it (netem does not exist in every kernel; tbf does here)
    local name=$1 limit=$2 host i
    check_name "$name"
    for host in $(ls "$STATE" 2>/dev/null | grep -E "^$name-h[0-9]$" | sort); do
        i=${host##*-h}
        limit_link "$name-v$i" "$limit"
        limit_link eth0 "$limit" -n "$host"
    done
}

hostfile() {
    local name=$1 slots=$2 host
    check_name "$name"
    for host in $(ls "$STATE" 2>/dev/null | grep -E "^$name-h[0-9]$" | sort); do
        echo "$host slots=$slots"
    done
}

case ${1:-} in
    up) [[ $# -ge 3 ]] || die "usage: $0 up NAME N [SUBNET]"; up "$2" "$3" "${4:-}" ;;
    down) [[ $# -eq 2 ]] || die "usage: $0 down NAME"; down "$2" ;;
    rate) [[ $# -eq 3 ]] || die "usage: $0 rate NAME RATE|off"; rate "$2" "$3" ;;
    hostfile) [[ $# -eq 3 ]] || die "usage: $0 hostfile NAME SLOTS"; hostfile "$2" "$3" ;;
    check) can_make_namespaces ;;
    *) die "usage: $0 up NAME N [SUBNET] | down NAME | hostfile NAME SLOTS | rate NAME RATE|off | check" ;;
esac
