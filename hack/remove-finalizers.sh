#!/usr/bin/env bash
# Removes arbiter's finalizer from every ConflictResolutionOperation, for an
# uninstall after the manager is already gone: nothing is left stuck in
# Terminating. With the manager running, delete operations instead; it rolls
# back partial work before it lets them go.
set -euo pipefail
KUBECTL=${KUBECTL:-kubectl}
"$KUBECTL" get cro -A -o jsonpath='{range .items[?(@.metadata.finalizers)]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' |
  while read -r ns name; do
    "$KUBECTL" patch cro -n "$ns" "$name" --type=json -p '[{"op": "remove", "path": "/metadata/finalizers"}]'
  done
