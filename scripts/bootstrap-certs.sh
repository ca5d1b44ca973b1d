#!/usr/bin/env bash
# bootstrap-certs.sh DIR [controller DNS names or IPs...]
#
# Sets up a jobsuite PKI in DIR with the jobsuite tls commands: a CA, a
# controller certificate for the given names/IPs, and an operator
# certificate. Idempotent: whatever already exists is kept.
#
# It runs $JOBSUITE, else jobsuite on PATH, else bin/jobsuite of this
# checkout. Example:
#   scripts/bootstrap-certs.sh pki ctl.example.com 10.0.0.5
set -euo pipefail

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}
case ${1:-} in
  -h | --help | help) usage; exit 0 ;;
  "") echo "bootstrap-certs.sh: say where the PKI goes: bootstrap-certs.sh DIR [NAME|IP ...]" >&2; exit 2 ;;
  -*) echo "bootstrap-certs.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac
dir=$1
shift
jobsuite=${JOBSUITE:-$(command -v jobsuite || echo "$(dirname "$0")/../bin/jobsuite")}

[ -f "$dir/ca.pem" ] || "$jobsuite" tls ca create -dir "$dir"

if [ ! -f "$dir/controller.pem" ]; then
  args=()
  for n in "$@"; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then args+=(-ip "$n"); else args+=(-dns "$n"); fi
  done
  "$jobsuite" tls cert create -dir "$dir" -role controller -name controller "${args[@]}"
fi
[ -f "$dir/operator.pem" ] || "$jobsuite" tls cert create -dir "$dir" -role operator -name operator
echo "PKI ready in $dir"
