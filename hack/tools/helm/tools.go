//go:build tools

// Package tools records helm, which `make tools` builds into bin/helm for the
// chart's lint and template tests, so that `go mod tidy` keeps its
// dependencies.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
