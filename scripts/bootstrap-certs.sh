#!/usr/bin/env bash
# bootstrap-certs.sh DIR [controller DNS names or IPs...]
#
# Sets up a jobsuite PKI in DIR with the jobsuite tls commands: a CA, a
# controller certificate for the given names/IPs, and an operator
# certificate. Idempotent: whatever already exists is kept.
set -euo pipefail
dir=${1:?usage: bootstrap-certs.sh DIR [NAME|IP ...]}
shift || true
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
