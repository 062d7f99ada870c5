package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// The image under test: `make test` passes the tarball `make image` wrote
// (IMAGE_TAR), the version it stamped (IMAGE_VERSION) and its GOARCH
// (IMAGE_ARCH). Without them the test builds the manager and the image
// itself, with a version of its own.
func imageUnderTest(t *testing.T) (tarPath, version, arch string) {
	t.Helper()
	if tarPath = os.Getenv("IMAGE_TAR"); tarPath != "" {
		version, arch = os.Getenv("IMAGE_VERSION"), os.Getenv("IMAGE_ARCH")
		if version == "" || arch == "" {
			t.Fatal("IMAGE_TAR is set: IMAGE_VERSION and IMAGE_ARCH must say what it should hold")
		}
		return tarPath, version, arch
	}
	version, arch = "v0.0.0-imagetest", runtime.GOARCH
	binary := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-trimpath", "-o", binary,
		"-ldflags", "-X github.com/arbiter-dev/arbiter/internal/version.Version="+version, "./cmd")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	tarPath = filepath.Join(t.TempDir(), "arbiter-image.tar")
	if _, err := writeImage(tarPath, spec{binary: raw, arch: arch, version: version, name: "arbiter:latest", created: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	return tarPath, version, arch
}

func TestImageTarball(t *testing.T) {
	tarPath, version, arch := imageUnderTest(t)
	dir := untar(t, tarPath)
	index, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("%s is not an OCI image layout: %v", tarPath, err)
	}
	manifest, err := index.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(manifest.Manifests) != 1 {
		t.Fatalf("index.json: want one image, got %d", len(manifest.Manifests))
	}
	desc := manifest.Manifests[0]
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != arch {
		t.Errorf("index.json platform: want linux/%s, got %+v", arch, desc.Platform)
	}
	if desc.Annotations[annotationImageName] == "" || desc.Annotations[annotationRefName] == "" {
		t.Errorf("index.json annotations: want the image name and tag, got %v", desc.Annotations)
	}
	img, err := index.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Config.Entrypoint; len(got) != 1 || got[0] != "/manager" {
		t.Errorf("config entrypoint: want [/manager], got %v", got)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("config user: want 65532:65532, got %q", cfg.Config.User)
	}
	if cfg.OS != "linux" || cfg.Architecture != arch {
		t.Errorf("config platform: want linux/%s, got %s/%s", arch, cfg.OS, cfg.Architecture)
	}
	for key, want := range map[string]string{
		labelVersion: version, labelTitle: "arbiter", labelLicenses: "Apache-2.0", labelSource: source,
	} {
		if got := cfg.Config.Labels[key]; got != want {
			t.Errorf("config label %s: want %q, got %q", key, want, got)
		}
	}

	binary := extractManager(t, img)
	if arch != runtime.GOARCH {
		t.Skipf("the image is for %s, this machine is %s: its binary cannot run here", arch, runtime.GOARCH)
	}
	out, err := exec.Command(binary, "--version").Output()
	if err != nil {
		t.Fatalf("/manager --version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != version {
		t.Errorf("/manager --version: want %q, got %q", version, got)
	}
}

// The same binary and version give the same image digest and the same
// tarball, byte for byte; another version gives another digest.
func TestImageIsReproducible(t *testing.T) {
	binary := []byte("#!/bin/true\n")
	s := spec{binary: binary, arch: "arm64", version: "v1.2.3", name: "registry.example/arbiter:v1.2.3", created: time.Unix(1700000000, 0)}
	tarball := func(s spec) ([]byte, v1.Hash) {
		t.Helper()
		index, img, err := build(s)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := writeLayoutTar(&buf, index, img, s.created); err != nil {
			t.Fatal(err)
		}
		digest, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), digest
	}
	first, firstDigest := tarball(s)
	second, secondDigest := tarball(s)
	if firstDigest != secondDigest || !bytes.Equal(first, second) {
		t.Errorf("two builds of one binary differ: %s and %s", firstDigest, secondDigest)
	}
	s.version = "v1.2.4"
	if _, other := tarball(s); other == firstDigest {
		t.Errorf("another version gave the same digest %s", other)
	}
}

// The Dockerfile builds the image `make image` builds: same binary path,
// entrypoint, user and labels, on a static nonroot base.
func TestDockerfileAgrees(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(raw)
	for _, want := range []string{
		"CGO_ENABLED=0",
		`-ldflags "${LDFLAGS}"`,
		"FROM gcr.io/distroless/static:nonroot",
		"COPY --from=builder /workspace/manager " + binaryPath,
		"USER " + imageUser,
		`ENTRYPOINT ["` + binaryPath + `"]`,
		labelTitle + `="` + title + `"`,
		labelVersion + `="${VERSION}"`,
		labelSource + `="` + source + `"`,
		labelLicenses + `="` + licenses + `"`,
	} {
		if !strings.Contains(dockerfile, want) {
			t.Errorf("Dockerfile: no %q", want)
		}
	}
}

func TestTagOf(t *testing.T) {
	for name, want := range map[string]string{
		"arbiter:latest":                   "latest",
		"arbiter":                          "latest",
		"localhost:5000/arbiter":           "latest",
		"localhost:5000/team/arbiter:v1.0": "v1.0",
	} {
		if got := tagOf(name); got != want {
			t.Errorf("tagOf(%q): want %q, got %q", name, want, got)
		}
	}
}

// untar unpacks the layout tarball into a temporary directory.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q escapes the layout", path, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, target, 0o644, tr)
		default:
			t.Fatalf("%s: unexpected entry %q of type %c", path, hdr.Name, hdr.Typeflag)
		}
	}
}

// extractManager writes the image's /manager to a temporary file, after
// checking that it is a root-owned file that every user may run.
func extractManager(t *testing.T, img v1.Image) string {
	t.Helper()
	fs := mutate.Extract(img)
	defer func() { _ = fs.Close() }()
	tr := tar.NewReader(fs)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("the image has no /manager")
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name != "manager" && hdr.Name != "/manager" {
			continue
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Mode&0o555 != 0o555 || hdr.Mode&0o022 != 0 || hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("/manager: want a root-owned regular file, executable by all and writable by none but root; got type %c mode %o owner %d:%d",
				hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid)
		}
		path := filepath.Join(t.TempDir(), "manager")
		writeFile(t, path, 0o755, tr)
		return path
	}
}

// writeFile creates path with mode and copies r into it.
func writeFile(t *testing.T, path string, mode os.FileMode, r io.Reader) {
	t.Helper()
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, r); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
