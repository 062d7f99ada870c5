#!/usr/bin/env bash
# arbiter's demo: the sample bank scenario on the local control plane that
# `make up` started, with kubectl, as a user would run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=$PWD/.local/kubeconfig
k() { "${KUBECTL:?KUBECTL must name the kubectl binary}" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
balances() { k get accounts -n bank -o custom-columns=ACCOUNT:.metadata.name,OWNER:.spec.owner,BALANCE:.spec.balance,FROZEN:.spec.frozen; }

# settle LABEL: waits until every operation with label demo=LABEL is
# terminal, then shows them.
settle() {
  for _ in $(seq 300); do
    phases=$(k get cro -n bank -l "demo=$1" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')
    if [ -n "$phases" ] && ! grep -qvE '^(Succeeded|Rejected|Failed|Cancelled)$' <<<"$phases"; then
      k get cro -n bank -l "demo=$1" -o custom-columns=NAME:.metadata.name,PRIORITY:.status.effectivePriority,PHASE:.status.phase,REASON:.status.reason,WINNER:.status.winner,MESSAGE:.status.message \
        --sort-by=.status.completedAt
      return 0
    fi
    sleep 0.2
  done
  echo "operations labelled demo=$1 did not finish in 60s" >&2
  return 1
}

say "1. The sample bank: accounts alice and bob, a cleanup policy, three operations"
k apply --server-side --force-conflicts -k config/samples
for op in credit-alice freeze-bob transfer-ownership-alice; do
  k wait -n bank --for=condition=Finished "cro/$op" --timeout=60s >/dev/null
done
k get cro -n bank credit-alice freeze-bob transfer-ownership-alice
balances

say "2. Five simultaneous credits to alice at priorities 1, 2, 5, 8 and 10"
k create -f config/samples/demo/storm.yaml
settle storm
echo "One winner (the highest priority); four Rejected/LostStaging naming it. alice changed once:"
balances

say "3. Four queued deposits to bob: every one applies, highest priority first"
k create -f config/samples/demo/queue.yaml
settle queue
balances

say "4. A transfer whose second leg fails: the first is rolled back"
k create -f config/samples/demo/transfer.yaml
settle transfer
balances

say "Everything arbiter knows about in namespace bank"
k get arbiter -n bank

cat <<MSG

The control plane and manager keep running (logs in .local/). Try:
  export KUBECONFIG=$PWD/.local/kubeconfig
  alias kubectl=$KUBECTL
  kubectl get cro -n bank -o wide
  kubectl get events -n bank --field-selector reason=Won
  kubectl explain cro.spec.staging
  curl -s http://127.0.0.1:18080/metrics | grep ^arbiter_
Stop everything with: make down
MSG
