#!/usr/bin/env bash
# arbiter's demo: applies the sample bank scenario to the local control plane
# started by `make up` and shows what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=$PWD/.local/kubeconfig
k() { "${KUBECTL:?KUBECTL must name the kubectl binary}" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "The sample bank: two accounts, a cleanup policy and three operations"
k apply --server-side -k config/samples

say "What arbiter knows (kubectl get arbiter -n bank)"
k get arbiter -n bank

say "Balances"
k get accounts -n bank

cat <<'MSG'

The control plane and manager keep running. Try:
  export KUBECONFIG=$PWD/.local/kubeconfig
  bin/k8s/1.37.2/kubectl explain cro.spec
  bin/k8s/1.37.2/kubectl get cro -n bank -o wide
Stop everything with: make down
MSG
