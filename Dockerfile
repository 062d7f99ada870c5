# arbiter's manager image: `make docker-build IMG=...` builds it with a
# container engine; `make image` builds the same image without one (hack/image).
# Build stage: a static binary, stamped with the version the Makefile passes.
FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
ARG LDFLAGS=""
WORKDIR /workspace
# Modules first, so that a source change reuses the downloaded dependencies.
COPY go.mod go.sum ./
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY internal/ internal/
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "${LDFLAGS}" -o manager ./cmd

# Run stage: no shell, no package manager; the manager alone, as a non-root
# user, on a root filesystem it never writes (readOnlyRootFilesystem).
FROM gcr.io/distroless/static:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="arbiter" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/arbiter-dev/arbiter" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /workspace/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
