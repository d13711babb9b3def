#!/bin/bash
# A real 3-node Slurm cluster on this machine, for sunray's tests (run as root):
#   lab.sh up     install slurm-wlm + munge if missing, start n1..n3 (fresh each time)
#   lab.sh down   stop everything it started and remove the namespaces
#   lab.sh node nX CMD...   run CMD on node nX (its network, hostname, /etc/hosts, /etc/slurm)
# Each node is a network namespace (10.77.0.X on a bridge in namespace lab-sw) plus its
# own UTS and mount namespaces, held open by a `sleep infinity`. slurmctld runs on n1,
# a slurmd on every node. Nothing is sent outside loopback and these namespaces: the
# root namespace has no slurm.conf and a blackhole route for the lab subnet.
# State lives in $LAB_STATE (default /tmp/sunray-slurmlab), which jobs can also use.
set -euo pipefail
N=${LAB_NODES:-3}
CPUS=${LAB_CPUS:-2}
NET=10.77.0
STATE=${LAB_STATE:-/tmp/sunray-slurmlab}
RUN=$STATE/run
NODES=$(seq -f 'n%g' 1 "$N")

fail() { echo "slurm lab: $*" >&2; exit 1; }
holder() { cat "$RUN/holder-$1.pid" 2>/dev/null; }
on() { local n=$1; shift; nsenter -t "$(holder "$n")" -n -u -m --wd="$PWD" -- "$@"; }
# A live process (this VM's init reaps orphans late, and kill -0 succeeds on zombies).
live() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }
netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

down() {
  if netns_exists n1 && [ -n "$(holder n1)" ]; then
    ids=$(timeout 5 nsenter -t "$(holder n1)" -n -u -m -- squeue -h -o %i 2>/dev/null || true)
    if [ -n "$ids" ]; then timeout 5 nsenter -t "$(holder n1)" -n -u -m -- scancel $ids 2>/dev/null || true; fi
  fi
  inside() { for n in $NODES lab-sw; do if netns_exists "$n"; then ip netns pids "$n"; fi; done 2>/dev/null | sort -un; }
  p=$(inside || true); if [ -n "$p" ]; then kill -TERM $p 2>/dev/null || true; fi
  for _ in $(seq 50); do if [ -z "$(inside || true)" ]; then break; fi; sleep 0.1; done
  p=$(inside || true); if [ -n "$p" ]; then kill -KILL $p 2>/dev/null || true; fi
  for n in $NODES lab-sw; do if netns_exists "$n"; then ip netns del "$n"; fi; done
  ip route del blackhole "$NET.0/24" 2>/dev/null || true
  if [ -e "$RUN/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
  rm -rf "$RUN" /var/spool/slurmctld /var/spool/slurmd
  return 0
}

up() {
  [ "$(id -u)" = 0 ] || fail "must run as root"
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v nsenter >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge iproute2 util-linux procps >/dev/null \
      || fail "cannot install slurm-wlm and munge"
  fi
  down
  # Job ids restart at 1 with a fresh controller: old job outputs must go.
  rm -rf "$STATE/jobs"
  mkdir -p "$RUN" "$STATE/logs" "$STATE/etc" "$STATE/jobs"
  chmod 755 "$STATE" "$STATE/jobs"; chmod 1777 "$STATE/jobs"; chown slurm:slurm "$STATE/logs"
  # munge: one key, the daemon as user munge (it refuses root)
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge; chown munge:munge /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    touch "$RUN/munged.ours"
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  # network: a bridge in lab-sw, a veth per node
  ip netns add lab-sw; ip -n lab-sw link set lo up
  ip -n lab-sw link add br0 type bridge; ip -n lab-sw link set br0 up
  printf '127.0.0.1 localhost\n' > "$STATE/hosts"
  i=0
  for n in $NODES; do
    i=$((i+1))
    ip netns add "$n"; ip -n "$n" link set lo up
    ip -n lab-sw link add "v$n" type veth peer name eth0 netns "$n"
    ip -n lab-sw link set "v$n" master br0; ip -n lab-sw link set "v$n" up
    ip -n "$n" addr add "$NET.$i/24" dev eth0; ip -n "$n" link set eth0 up
    echo "$NET.$i $n" >> "$STATE/hosts"
  done
  chmod 644 "$STATE/hosts"
  ip route replace blackhole "$NET.0/24"
  # slurm.conf, seen only inside the nodes (bind-mounted on /etc/slurm)
  [ -d /etc/slurm ] && cp -a /etc/slurm/. "$STATE/etc/" 2>/dev/null || true
  {
    echo "ClusterName=sunraylab"
    echo "SlurmctldHost=n1($NET.1)"
    echo "SlurmUser=slurm"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "StateSaveLocation=/var/spool/slurmctld"
    echo "SlurmdSpoolDir=/var/spool/slurmd/%n"
    echo "SlurmctldPidFile=$RUN/slurmctld.pid"
    echo "SlurmdPidFile=$RUN/slurmd-%n.pid"
    echo "SlurmctldLogFile=$STATE/logs/slurmctld.log"
    echo "SlurmdLogFile=$STATE/logs/slurmd-%n.log"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "MpiDefault=none"
    echo "MailProg=/bin/true"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerParameters=batch_sched_delay=0"
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "InactiveLimit=0"
    echo "KillWait=5"
    echo "MinJobAge=300"
    echo "Waittime=0"
    i=0
    for n in $NODES; do
      i=$((i+1)); echo "NodeName=$n NodeAddr=$NET.$i NodeHostname=$n CPUs=$CPUS RealMemory=1000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
  } > "$STATE/etc/slurm.conf"
  printf 'CgroupPlugin=autodetect\nIgnoreSystemdOnFailure=yes\n' > "$STATE/etc/cgroup.conf"
  chmod 644 "$STATE/etc/slurm.conf" "$STATE/etc/cgroup.conf"
  # node holders: nsenter --net (not `ip netns exec`, which hides /sys/fs/cgroup from slurmd)
  for n in $NODES; do
    setsid -f nsenter --net=/run/netns/"$n" unshare --uts --mount --propagation private /bin/sh -c \
      "hostname $n && mount --bind $STATE/hosts /etc/hosts && mount -o bind $STATE/etc /etc/slurm && echo \$\$ > $RUN/holder-$n.pid && exec sleep infinity" \
      </dev/null >"$STATE/logs/holder-$n.log" 2>&1
  done
  for n in $NODES; do
    for _ in $(seq 50); do [ -s "$RUN/holder-$n.pid" ] && break; sleep 0.1; done
    [ -s "$RUN/holder-$n.pid" ] || fail "node $n did not start: $(cat "$STATE/logs/holder-$n.log")"
  done
  mkdir -p /var/spool/slurmctld; chown slurm:slurm /var/spool/slurmctld
  (cd / && on n1 slurmctld -c) || fail "slurmctld: $(tail -5 "$STATE/logs/slurmctld.log")"
  for n in $NODES; do
    mkdir -p "/var/spool/slurmd/$n"
    (cd / && on "$n" slurmd -N "$n") || fail "slurmd $n: $(tail -5 "$STATE/logs/slurmd-$n.log")"
  done
  for _ in $(seq 600); do
    idle=$(timeout 5 nsenter -t "$(holder n1)" -n -u -m -- sinfo -h -N -o '%N %T' 2>/dev/null | grep -c ' idle$' || true)
    [ "$idle" = "$N" ] && { echo "slurm lab up: $N nodes idle"; return 0; }
    sleep 0.1
  done
  fail "nodes not idle after 60 s: $(tail -3 "$STATE"/logs/*.log)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  node) shift; n=$1; shift; [ -n "$(holder "$n")" ] || fail "node $n is not up"; on "$n" "$@" ;;
  *) echo "usage: $0 up|down|node nX CMD..." >&2; exit 2 ;;
esac
