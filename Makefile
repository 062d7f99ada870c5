# arbiter's Makefile. `make help` lists the targets.

# Kubernetes version of the test binaries built by hack/tools (kube-apiserver,
# etcd, kubectl); it must match k8s.io/kubernetes in hack/tools/go.mod.
K8S_VERSION ?= 1.37.2

LOCALBIN   := $(CURDIR)/bin
K8S_BIN    := $(LOCALBIN)/k8s/$(K8S_VERSION)
LOCAL      := $(CURDIR)/.local
KUBECONFIG_LOCAL := $(LOCAL)/kubeconfig

CONTROLLER_GEN  := $(LOCALBIN)/controller-gen
GOLANGCI_LINT   := $(LOCALBIN)/golangci-lint
KUBE_APISERVER  := $(K8S_BIN)/kube-apiserver
ETCD            := $(K8S_BIN)/etcd
# The local targets (up, demo, test) use the kubectl built into bin/; the
# deployment targets (install, deploy, ...) use KUBECTL, kubectl on the PATH
# unless set, so that they work on a machine without bin/.
LOCAL_KUBECTL   := $(K8S_BIN)/kubectl
KUBECTL         ?= kubectl
# Only `make bench` needs it: the anchor its cleanup is measured against.
KUBE_CONTROLLER_MANAGER := $(K8S_BIN)/kube-controller-manager
CONTROLPLANE    := $(LOCALBIN)/controlplane
HELM            := $(LOCALBIN)/helm
MANAGER_BIN     := $(LOCALBIN)/manager
PLUGIN_BIN      := $(LOCALBIN)/kubectl-arbiter

# envtest and the e2e tests find the binaries here.
export KUBEBUILDER_ASSETS := $(K8S_BIN)

# Version stamped into bin/manager (`manager --version`), the image and the
# release manifests: `git describe`, or v0.0.0-dev outside a git checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS := -X github.com/arbiter-dev/arbiter/internal/version.Version=$(VERSION)

# The Helm chart and its version: `make helm-package` stamps VERSION (without
# a leading v, as Helm wants SemVer) into the packaged chart.
CHART       := charts/arbiter
CHART_VERSION ?= $(patsubst v%,%,$(VERSION))

# Image built by `make docker-build` and `make image`, and used by `make deploy`.
IMG ?= arbiter:latest
# The container engine of `make docker-build docker-push`.
CONTAINER_TOOL ?= docker
# Architecture of the image `make image` builds (default: this machine's).
GOARCH ?= $(shell go env GOARCH)
# `make image` writes the image here, as an OCI image layout tarball.
IMAGE_TAR ?= dist/arbiter-image.tar
# Every timestamp in the image: the last commit's, so that the same source
# gives the same image digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Image `make release` writes into dist/install.yaml: IMG when set on the
# command line or in the environment, else the registry's image of VERSION.
RELEASE_IMG := $(if $(filter command line environment,$(origin IMG)),$(IMG),ghcr.io/arbiter-dev/arbiter:$(VERSION))
DIST := $(CURDIR)/dist
# `make up MANAGER=false` starts the control plane only.
MANAGER ?= true
# Extra flags for `go test`, for example GOTEST_FLAGS='-run TestAPI -v'.
GOTEST_FLAGS ?=

GO_TOOLS := cd hack/tools && go build

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs, RBAC and webhook configuration in config/ from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac output:webhook:artifacts:config=config/webhook

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the deepcopy code (zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: verify-gen
verify-gen: manifests generate ## Fail if generated files differ from what is committed.
	@if [ -n "$$(git status --porcelain -- api config)" ]; then \
		echo "Generated files are stale; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config; git --no-pager diff --stat -- api config; exit 1; \
	fi

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint (.golangci.yml) on the main module and hack/image; builds the pinned linter if missing.
	$(GOLANGCI_LINT) run ./...
	cd hack/image && $(GOLANGCI_LINT) run ./...

.PHONY: test
test: tools build image release chart-install-manifests vet ## Run every test: unit, envtest integration, e2e, the install suite (release and chart) and the image's (builds the tools if missing).
	@# -p 1: the integration and e2e suites each start a control plane; two at
	@# once on a small machine only make both slow. ARBITER_VERSION: what
	@# the e2e suite expects bin/manager --version to print.
	ARBITER_VERSION='$(VERSION)' go test -p 1 -count=1 $(GOTEST_FLAGS) ./...
	@# The install suite again, on the Helm chart's manifests: the chart's
	@# RBAC runs the manager through the same scenarios as the release's.
	ARBITER_INSTALL_MANIFEST='$(DIST)/chart-install.yaml' ARBITER_POLICY_MANIFEST='$(DIST)/chart-requester-policy.yaml' \
		go test -count=1 $(GOTEST_FLAGS) ./test/install
	@$(MAKE) --no-print-directory test-prometheus
	@# A module of its own, so that go-containerregistry's dependencies stay
	@# out of the manager's: the image `make image` wrote, checked.
	cd hack/image && IMAGE_TAR='$(CURDIR)/$(IMAGE_TAR)' IMAGE_VERSION='$(VERSION)' IMAGE_ARCH='$(GOARCH)' go test -count=1 $(GOTEST_FLAGS) ./...

.PHONY: test-prometheus
test-prometheus: ## Run the alert rule unit tests, runbook links and dashboard query checks (test/prometheus).
	@# A module of its own, so that Prometheus' dependencies stay out of the manager's.
	cd test/prometheus && go test -count=1 $(GOTEST_FLAGS) ./...

.PHONY: test-faults
test-faults: tools build ## Run only the fault suite (kills, restarts, failover, external writers, hostile input); make test runs it too.
	go test -count=1 -v ./test/e2e -ginkgo.label-filter=faults

.PHONY: bench
bench: tools build $(KUBE_CONTROLLER_MANAGER) ## Run the benchmarks: micro (CRD rules, staging, mutations, cleanup reports, historyLimit judgements, kind mapping, status patches) and end to end (test/bench); writes bench.json. BENCH_SCENARIOS=storm,queue,... runs some.
	go test -count=1 -run '^$$' -bench . -benchmem ./api/v1alpha1/ ./internal/staging/ ./internal/execute/ ./internal/cleanup/ ./internal/kinds/ ./controllers/
	go test -count=1 -run '^$$' -bench BenchmarkEndToEnd -benchtime 1x -timeout 60m ./test/bench/

##@ Build

.PHONY: build
build: ## Build the manager into bin/manager and the kubectl plugin into bin/kubectl-arbiter.
	go build -ldflags '$(LDFLAGS)' -o $(MANAGER_BIN) ./cmd
	go build -ldflags '$(LDFLAGS)' -o $(PLUGIN_BIN) ./cmd/kubectl-arbiter

.PHONY: image
image: ## Build the manager image as an OCI image layout tarball (IMAGE_TAR, for GOARCH) with no container engine or registry.
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) go build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/linux-$(GOARCH)/manager ./cmd
	@mkdir -p $(dir $(IMAGE_TAR))
	cd hack/image && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) go run . --binary $(LOCALBIN)/linux-$(GOARCH)/manager \
		--output $(abspath $(IMAGE_TAR)) --arch $(GOARCH) --version '$(VERSION)' --name '$(IMG)'

.PHONY: docker-build
docker-build: ## Build the manager image IMG with CONTAINER_TOOL (docker, podman) from the Dockerfile.
	$(CONTAINER_TOOL) build --build-arg LDFLAGS='$(LDFLAGS)' --build-arg VERSION='$(VERSION)' -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG with CONTAINER_TOOL.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: run
run: ## Run the manager from source against the current kubeconfig.
	go run ./cmd --metrics-bind-address=:8080 --metrics-secure=false

##@ Local control plane

.PHONY: up
up: tools build $(CONTROLPLANE) ## Start etcd, kube-apiserver (CRDs installed) and the manager in the background; kubeconfig in .local/kubeconfig.
	@MANAGER=$(MANAGER) KUBECTL=$(LOCAL_KUBECTL) hack/local-up.sh

.PHONY: down
down: ## Stop the manager and the local control plane.
	@hack/local-down.sh

.PHONY: demo
demo: up ## Start everything and run the sample scenario with kubectl.
	@KUBECTL=$(LOCAL_KUBECTL) hack/demo.sh

##@ Deployment

.PHONY: install
install: ## Install the CRDs into the cluster of the current kubeconfig (KUBECTL, default kubectl on the PATH).
	$(KUBECTL) apply --server-side -k config/crd

.PHONY: uninstall
uninstall: ## Remove the CRDs (and so every operation and policy) from the cluster.
	$(KUBECTL) delete --ignore-not-found -k config/crd

.PHONY: deploy
deploy: ## Deploy arbiter to the cluster of the current kubeconfig with image IMG (KUBECTL, default kubectl on the PATH).
	$(KUBECTL) kustomize config/default | sed 's|image: controller:latest|image: $(IMG)|' | $(KUBECTL) apply --server-side -f -

.PHONY: release
release: manifests $(LOCAL_KUBECTL) ## Write dist/install.yaml (no cert-manager; image RELEASE_IMG, labels VERSION) and dist/requester-policy.yaml for VERSION=x.y.z.
	@mkdir -p $(DIST)/kustomize
	@printf 'resources:\n- ../../config/release\nlabels:\n- pairs:\n    app.kubernetes.io/version: "%s"\n  includeTemplates: true\n' '$(VERSION)' > $(DIST)/kustomize/kustomization.yaml
	$(LOCAL_KUBECTL) kustomize $(DIST)/kustomize | sed 's|image: controller:latest|image: $(RELEASE_IMG)|' > $(DIST)/install.yaml
	$(LOCAL_KUBECTL) kustomize config/release/requester-policy > $(DIST)/requester-policy.yaml
	@rm -r $(DIST)/kustomize
	@echo "dist/install.yaml: arbiter $(VERSION), image $(RELEASE_IMG)"

.PHONY: undeploy
undeploy: ## Remove arbiter from the cluster.
	$(KUBECTL) delete --ignore-not-found -k config/default

##@ Helm chart

.PHONY: chart-sync
chart-sync: manifests ## Copy the generated CRDs, manager RBAC and webhooks, the alerts, the dashboard and the requester policy into charts/arbiter/files.
	rm -f $(CHART)/files/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART)/files/crds/
	cp config/rbac/role.yaml $(CHART)/files/manager-role.yaml
	cp config/webhook/manifests.yaml $(CHART)/files/webhooks.yaml
	cp config/prometheus/rules.yaml $(CHART)/files/prometheus-rules.yaml
	cp config/admission/requested_by.yaml $(CHART)/files/requested-by.yaml
	cp config/grafana/arbiter.json $(CHART)/files/grafana-dashboard.json

.PHONY: chart-install-manifests
chart-install-manifests: $(HELM) ## Render charts/arbiter (release arbiter in arbiter-system, config/rbac's target kinds) into dist/chart-install.yaml and dist/chart-requester-policy.yaml, for the install suite.
	@mkdir -p $(DIST)
	printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: arbiter-system\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n---\n' > $(DIST)/chart-install.yaml
	$(HELM) template arbiter $(CHART) --namespace arbiter-system \
		--set-json 'targetKinds=[{"apiGroups":["bank.example.com"],"resources":["accounts"],"verbs":["get","update"]},{"apiGroups":[""],"resources":["configmaps"],"verbs":["get","update"]}]' >> $(DIST)/chart-install.yaml
	$(HELM) template arbiter $(CHART) --namespace arbiter-system --set requesterPolicy.enabled=true \
		--show-only templates/requester-policy.yaml > $(DIST)/chart-requester-policy.yaml

.PHONY: chart-lint
chart-lint: $(HELM) ## Run helm lint --strict on charts/arbiter (make test runs it too, with every tested values combination).
	$(HELM) lint --strict $(CHART)

.PHONY: helm-package
helm-package: $(HELM) ## Package charts/arbiter as dist/arbiter-<version>.tgz, version and appVersion from VERSION (x.y.z or vx.y.z).
	@echo '$(CHART_VERSION)' | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$$' || \
		{ echo "helm-package: VERSION=$(VERSION) is not a SemVer x.y.z a chart version can be: run make helm-package VERSION=x.y.z" >&2; exit 1; }
	$(HELM) package $(CHART) --version $(CHART_VERSION) --app-version $(VERSION) --destination dist

##@ Tools

.PHONY: tools
tools: $(CONTROLLER_GEN) $(KUBE_APISERVER) $(ETCD) $(LOCAL_KUBECTL) $(HELM) ## Build the pinned tools into bin/, skipping what is there.

# Each tool is a file target without prerequisites: built once, then reused.
$(CONTROLLER_GEN):
	$(GO_TOOLS) -o $@ sigs.k8s.io/controller-tools/cmd/controller-gen
# A module of its own (hack/tools/lint), so that the linter's dependencies
# never move those of the Kubernetes binaries.
$(GOLANGCI_LINT):
	cd hack/tools/lint && go build -o $@ github.com/golangci/golangci-lint/v2/cmd/golangci-lint
$(KUBE_APISERVER):
	$(GO_TOOLS) -o $@ k8s.io/kubernetes/cmd/kube-apiserver
$(ETCD):
	$(GO_TOOLS) -o $@ ./etcd
$(LOCAL_KUBECTL):
	$(GO_TOOLS) -o $@ k8s.io/kubernetes/cmd/kubectl
$(KUBE_CONTROLLER_MANAGER):
	$(GO_TOOLS) -o $@ k8s.io/kubernetes/cmd/kube-controller-manager
# A module of its own (hack/tools/helm), like the linter's. The flags are
# those of helm's own release build: its version, and the Kubernetes version
# (that of its client-go) `helm template` and the deprecation checks of
# `helm lint` assume, instead of the 1.20 a plain build would.
$(HELM):
	cd hack/tools/helm && \
	helm=$$(go list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	minor=$$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	go build -o $@ -ldflags "-X helm.sh/helm/v3/internal/version.version=$$helm \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$minor" \
		helm.sh/helm/v3/cmd/helm
$(CONTROLPLANE): FORCE
	go build -o $@ ./hack/controlplane

.PHONY: FORCE
FORCE:
