#!/usr/bin/env bash
# install.sh controller|agent [--binary PATH] [--no-start] [--root DIR]
#
# Installs jobsuite as a systemd service on this host:
#   /usr/local/bin/jobsuite                    the binary (--binary, default bin/jobsuite of this checkout)
#   /etc/jobsuite/ROLE.toml                    the config, from scripts/ROLE.example.toml; an existing one is kept
#   /etc/jobsuite/pki/                         where the certificates go (0750 root:jobsuite)
#   /etc/systemd/system/jobsuite-ROLE.service  the unit
# creates the system user jobsuite, runs systemctl daemon-reload, and
# (unless --no-start) restarts a service that was already configured. A
# new config needs editing and certificates first, so a first install
# only prints the next steps. Running it again is safe: it upgrades the
# binary and the unit and keeps the config.
#
# --root DIR installs under DIR instead of / (for packaging and tests):
# no user is created and systemctl is not run.
set -euo pipefail

usage() {
  sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}
die() {
  echo "install.sh: $*" >&2
  exit 1
}

role="" binary="" start=1 root=""
while [ $# -gt 0 ]; do
  case $1 in
    controller | agent)
      [ -z "$role" ] || { echo "install.sh: give one role, controller or agent" >&2; exit 2; }
      role=$1 ;;
    --binary) [ $# -ge 2 ] || { echo "install.sh: --binary needs a path" >&2; exit 2; }; binary=$2; shift ;;
    --binary=*) binary=${1#--binary=} ;;
    --no-start) start=0 ;;
    --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }; root=$2; shift ;;
    --root=*) root=${1#--root=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ -n "$role" ] || { echo "install.sh: say what to install: controller or agent" >&2; usage >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "$binary" ]; then
  if [ -x "$here/../bin/jobsuite" ]; then
    binary=$here/../bin/jobsuite
  else
    binary=$(command -v jobsuite || true)
  fi
fi
if [ -z "$binary" ] || [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  die "no jobsuite binary${binary:+ at $binary}: build one with 'make build' or pass --binary PATH"
fi
for f in "$here/$role.example.toml" "$here/jobsuite-$role.service"; do
  [ -f "$f" ] || die "$f is missing: run install.sh from a jobsuite checkout"
done
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
elif [ "$(id -u)" -ne 0 ]; then
  die "run it as root: sudo $0 $role${binary:+ --binary $binary}"
fi

bindir=$root/usr/local/bin
etc=$root/etc/jobsuite
unitdir=$root/etc/systemd/system
unit=jobsuite-$role.service
config=$etc/$role.toml

# The system user that runs the services (and the agent's jobs).
if [ -z "$root" ]; then
  if ! getent group jobsuite >/dev/null; then
    groupadd --system jobsuite
    echo "created group jobsuite"
  fi
  if ! getent passwd jobsuite >/dev/null; then
    nologin=$(command -v nologin || echo /usr/sbin/nologin)
    useradd --system --gid jobsuite --home-dir /var/lib/jobsuite --no-create-home \
      --shell "$nologin" --comment "jobsuite services" jobsuite
    echo "created user jobsuite"
  fi
fi

# The binary: written to a temporary name and renamed, so a running
# service keeps its old executable until it restarts.
install -d -m 0755 "$bindir"
if ! cmp -s "$binary" "$bindir/jobsuite"; then
  install -m 0755 "$binary" "$bindir/jobsuite.new"
  mv -f "$bindir/jobsuite.new" "$bindir/jobsuite"
  echo "installed $bindir/jobsuite"
fi

# The config directory (readable by the jobsuite group only: it points
# at keys) and the config, never overwritten.
install -d -m 0750 "$etc" "$etc/pki"
new_config=0
if [ -e "$config" ]; then
  echo "kept $config"
else
  install -m 0640 "$here/$role.example.toml" "$config"
  new_config=1
  echo "installed $config (from $role.example.toml: edit it)"
fi
if [ -z "$root" ]; then
  chgrp jobsuite "$etc" "$etc/pki" "$config"
fi

# The unit is ours: always the current one.
install -d -m 0755 "$unitdir"
install -m 0644 "$here/$unit" "$unitdir/$unit"
echo "installed $unitdir/$unit"

running_systemd=0
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  running_systemd=1
  systemctl daemon-reload
fi

started=0
if [ "$start" = 1 ] && [ "$running_systemd" = 1 ] && [ "$new_config" = 0 ]; then
  systemctl enable "$unit"
  systemctl restart "$unit"
  started=1
  echo "restarted $unit"
fi
[ "$running_systemd" = 1 ] || [ -n "$root" ] ||
  echo "systemd is not running here: skipped daemon-reload; install the unit on a systemd host"

if [ "$role" = controller ]; then
  certs="ca.pem controller.pem controller-key.pem (jobsuite tls cert create -role controller -name controller -dns HOST)"
else
  certs="ca.pem agent.pem agent-key.pem (jobsuite tls cert create -role agent -name NAME, renamed)"
fi
cat <<NEXT

Next steps:
NEXT
if [ "$started" = 1 ]; then
  cat <<NEXT
  systemctl status $unit
  journalctl -u $unit -f
NEXT
elif [ "$role" = agent ]; then
  cat <<NEXT
  1. Either enroll with a join token, if the controller runs with -ca-key: as an
     operator, anywhere, run
       jobsuite agent token create -ttl 1h
     then in $config comment out ca, cert and key, and set join, ca_pin and
     api as it prints (the agent makes its key and gets its certificate at
     the first start, in its state directory).
     Or put $certs
     in $etc/pki/, then: chgrp jobsuite $etc/pki/*; chmod 0640 $etc/pki/*-key.pem
  2. Edit $config (every key: jobsuite $role -h).
  3. systemctl enable --now $unit
  4. journalctl -u $unit -f
NEXT
else
  cat <<NEXT
  1. Put $certs
     in $etc/pki/, then: chgrp jobsuite $etc/pki/*; chmod 0640 $etc/pki/*-key.pem
  2. Edit $config (every key: jobsuite $role -h).
  3. systemctl enable --now $unit
  4. journalctl -u $unit -f
NEXT
fi
