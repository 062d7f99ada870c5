// Package version holds the version stamped into arbiter's binaries at build
// time, so that `manager --version`, the image and the release manifests
// agree on one string.
package version

// Version is set by the linker: -X github.com/arbiter-dev/arbiter/internal/version.Version=v1.2.3.
// The Makefile stamps `git describe`; a plain `go build` leaves "dev".
var Version = "dev"
