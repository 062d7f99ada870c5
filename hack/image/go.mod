// Module image builds arbiter's container image as an OCI image layout
// tarball, with no container engine and no registry. It is a module of its
// own so that go-containerregistry never reaches the manager's dependencies.
module github.com/arbiter-dev/arbiter/hack/image

go 1.26.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/sync v0.22.0 // indirect
)
