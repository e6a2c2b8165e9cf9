#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for `make test-slurm` (CI and a developer's box).
#
#   sudo .ci/slurm/start-cluster.sh        # install (Debian/Ubuntu), configure, start; idempotent
#   sinfo; sacct                            # then: partition "debug", this host as its node
#
# Debian's packages (slurm-wlm 22.05 on bookworm, munge, slurmdbd, mariadb-server), started as
# plain processes rather than systemd units (CI containers have none, and a session's services
# end with it): every call starts what is not running and leaves alone what is.
# No cgroups: proctrack/linuxproc and task/none. Accounting goes through slurmdbd into MariaDB,
# because submitit learns how a task ended from `sacct` (a task killed without a result is told
# apart from one still queued only that way); with accounting_storage/none sacct only answers
# "Slurm accounting storage is disabled". Memory limits are enforced by polling
# (jobacct_gather/linux with OverMemoryKill): a task over its --mem ends OUT_OF_MEMORY.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "start-cluster.sh: run as root (it installs packages and starts daemons)" >&2; exit 1; }

export PATH="$PATH:/usr/sbin:/sbin"  # the daemons, where a CI runner's PATH lacks them
CLUSTER=shiftlab-ci
HERE="$(cd "$(dirname "$0")" && pwd)"
LOG=/var/log/slurm
DB_PASSWORD=shiftlab-ci-only   # a local test database, reachable only through its socket

say() { echo "start-cluster: $*"; }

wait_for() {  # wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$((seconds * 2))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "start-cluster: $what did not come up within ${seconds}s; its log:" >&2
    tail -n 30 "$LOG"/*.log /var/log/mysql/error.log 2>/dev/null >&2 || true
    exit 1
}

# A daemon is running when the process named in its pid file is alive and is that daemon.
running() {  # running <pid file> <program>
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
MUNGED_PID=/run/munge/munged.pid MARIADB_PID=/run/mysqld/mysqld.pid
SLURMDBD_PID=/run/slurmdbd.pid SLURMCTLD_PID=/run/slurmctld.pid SLURMD_PID=/run/slurmd.pid

# --- packages ---------------------------------------------------------------------------------
missing=()
for command in munged slurmctld slurmd slurmdbd sacct mariadbd; do
    command -v "$command" >/dev/null || missing+=("$command")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing slurm-wlm, slurmdbd, munge, mariadb-server (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
fi

# --- configuration: this host is the controller and the only node ------------------------------
host=$(hostname -s)
# The node as slurmd sees it (CPUs, sockets, cores, memory); a little memory is left to the OS.
node=$(slurmd -C | head -n 1)
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$node")
mkdir -p /etc/slurm "$LOG" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
sed -e "s/@CLUSTER@/$CLUSTER/" -e "s/@HOST@/$host/" -e "s/@NODE@/$node NodeAddr=127.0.0.1/" \
    "$HERE/slurm.conf.in" >/etc/slurm/slurm.conf.new
sed -e "s/@PASSWORD@/$DB_PASSWORD/" -e "s|@LOG@|$LOG|" "$HERE/slurmdbd.conf.in" >/etc/slurm/slurmdbd.conf
chmod 600 /etc/slurm/slurmdbd.conf
changed=0
cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf || changed=1
mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf

# --- munge: authentication between the commands and the daemons --------------------------------
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --force; chown munge:munge /etc/munge/munge.key; }
if ! running $MUNGED_PID munged; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
wait_for 20 munged sh -c 'munge -n | unmunge'

# --- MariaDB and slurmdbd: the accounting that sacct reads ---------------------------------------
chown mysql:mysql /run/mysqld
if ! running $MARIADB_PID mariadbd; then
    say "starting mariadb"
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    setsid mariadbd --user=mysql --pid-file=$MARIADB_PID --skip-networking \
        >>"$LOG/mariadb.log" 2>&1 </dev/null &
fi
wait_for 60 mariadb mariadb -e 'select 1'
mariadb <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
if ! running $SLURMDBD_PID slurmdbd; then
    say "starting slurmdbd"
    slurmdbd
fi
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# --- slurmctld and slurmd -------------------------------------------------------------------------
if [ "$changed" = 1 ]; then  # a new slurm.conf: the daemons start again with it
    for daemon in slurmd slurmctld; do
        pid_file=/run/$daemon.pid
        if running "$pid_file" "$daemon"; then
            say "restarting $daemon (slurm.conf changed)"
            kill "$(cat "$pid_file")" 2>/dev/null || true
            while running "$pid_file" "$daemon"; do sleep 0.2; done
        fi
    done
fi
if ! running $SLURMCTLD_PID slurmctld; then
    say "starting slurmctld"
    slurmctld
fi
wait_for 30 slurmctld scontrol ping
if ! running $SLURMD_PID slurmd; then
    say "starting slurmd"
    slurmd
fi
# A node that was down (the machine restarted, a daemon was killed) is put back into service.
state() { sinfo -h -n "$host" -o %T; }
wait_for 30 "the node $host" sh -c "sinfo -h -n $host -o %T | grep -qvE '^(unknown|not_responding)'"
if state | grep -qE 'down|drain|fail'; then
    scontrol update nodename="$host" state=resume
fi
wait_for 30 "the node $host (idle)" sh -c "sinfo -h -n $host -o %T | grep -qE '^(idle|mixed|allocated)'"
sinfo -h -N -o 'partition %P, node %N: %T, %c CPUs, %m MB, GRES %G'
say "ready (sacct: $(sacct -n -X -S now-1hours | wc -l) jobs in the last hour)"
