#!/usr/bin/env bash
# Starts arbiter's local control plane (etcd + kube-apiserver with the CRDs
# installed) and, unless MANAGER=false, bin/manager, both in the background.
# Idempotent: what is already running is left alone. Logs and pid files are in
# .local/; `make down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCAL=.local
KUBECONFIG_FILE=$LOCAL/kubeconfig
KUBECTL=${KUBECTL:?KUBECTL must name the kubectl binary}
MANAGER=${MANAGER:-true}
# Uncommon ports, so that `make up` does not collide with other local servers.
METRICS_ADDR=${METRICS_ADDR:-127.0.0.1:18080}
PROBE_ADDR=${PROBE_ADDR:-127.0.0.1:18081}
WEBHOOK_PORT=${WEBHOOK_PORT:-19443}
CERT_DIR=$LOCAL/webhook-certs
mkdir -p "$LOCAL" "$CERT_DIR"
MANAGER_ARGS=(--kubeconfig "$KUBECONFIG_FILE"
  --metrics-bind-address="$METRICS_ADDR" --metrics-secure=false
  --health-probe-bind-address="$PROBE_ADDR"
  --webhook-port="$WEBHOOK_PORT" --webhook-cert-dir="$CERT_DIR")

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for DESCRIPTION SECONDS PIDFILE COMMAND...: polls COMMAND until it
# succeeds, failing early when the process in PIDFILE has died.
wait_for() {
  local what=$1 seconds=$2 pidfile=$3; shift 3
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! alive "$pidfile"; then
      echo "$what exited; its log:" >&2; tail -n 30 "${pidfile%.pid}.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "$what not ready after ${seconds}s; see ${pidfile%.pid}.log" >&2
  return 1
}

if alive $LOCAL/controlplane.pid && [ -f $KUBECONFIG_FILE ]; then
  echo "Control plane already running (pid $(cat $LOCAL/controlplane.pid))"
else
  rm -f $KUBECONFIG_FILE
  setsid nohup bin/controlplane --assets "$KUBEBUILDER_ASSETS" \
    --crds config/crd/bases,config/samples/crds --write-kubeconfig $KUBECONFIG_FILE \
    --webhook-port "$WEBHOOK_PORT" --webhook-cert-dir "$CERT_DIR" \
    >$LOCAL/controlplane.log 2>&1 </dev/null &
  echo $! >$LOCAL/controlplane.pid
  wait_for "Control plane" 120 $LOCAL/controlplane.pid test -s $KUBECONFIG_FILE
  echo "Control plane started (pid $(cat $LOCAL/controlplane.pid))"
fi
# Defence in depth: the policy stamps spec.requestedBy like the manager's
# mutating webhook does, where the API server serves MutatingAdmissionPolicy.
"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" apply -k config/admission >/dev/null

if [ "$MANAGER" != "true" ]; then
  echo "Manager not started (MANAGER=$MANAGER). Run it yourself:"
  echo "  bin/manager ${MANAGER_ARGS[*]}"
  echo "(operations cannot be created until it runs: its webhooks stamp and check them)"
elif alive $LOCAL/manager.pid; then
  echo "Manager already running (pid $(cat $LOCAL/manager.pid))"
else
  setsid nohup bin/manager "${MANAGER_ARGS[@]}" >$LOCAL/manager.log 2>&1 </dev/null &
  echo $! >$LOCAL/manager.pid
  wait_for "Manager" 60 $LOCAL/manager.pid curl -sf "http://$PROBE_ADDR/readyz"
  echo "Manager started (pid $(cat $LOCAL/manager.pid)); metrics at http://$METRICS_ADDR/metrics"
fi

# Wait until a dry run of an operation comes back stamped with its requester:
# the API server reaches the manager's webhooks (and a new admission policy,
# which takes about a second to act, does not refuse it).
stamped() {
  [ -n "$("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" create --dry-run=server -o 'jsonpath={.spec.requestedBy.username}' -f - 2>/dev/null <<'PROBE'
apiVersion: arbiter.dev/v1alpha1
kind: ConflictResolutionOperation
metadata: {generateName: probe-, namespace: default}
spec:
  function: probe
  targets: [{apiVersion: v1, kind: ConfigMap, name: probe, mergePatch: {data: {}}}]
PROBE
)" ]
}
if [ "$MANAGER" = "true" ]; then
  wait_for "requestedBy stamping" 30 $LOCAL/manager.pid stamped
fi

echo
echo "Use it:  export KUBECONFIG=$PWD/$KUBECONFIG_FILE; alias kubectl=$KUBECTL"
echo "         kubectl get arbiter -A"
echo "Stop it: make down"
