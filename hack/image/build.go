package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What every arbiter image is, whichever way it is built: the Dockerfile
// says the same (image_test.go holds them together).
const (
	binaryPath = "/manager"
	imageUser  = "65532:65532"
	imageOS    = "linux"
	title      = "arbiter"
	licenses   = "Apache-2.0"
	source     = "https://github.com/arbiter-dev/arbiter"
)

// OCI annotation and label keys.
const (
	labelTitle    = "org.opencontainers.image.title"
	labelVersion  = "org.opencontainers.image.version"
	labelSource   = "org.opencontainers.image.source"
	labelLicenses = "org.opencontainers.image.licenses"
	// annotationRefName is the tag of the image in the layout's index.
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is the full name containerd, and so `docker load`
	// and `ctr import`, give the image.
	annotationImageName = "io.containerd.image.name"
)

// spec says what image to build.
type spec struct {
	// binary is the static linux manager binary to put at /manager.
	binary []byte
	arch   string
	// version is stamped into the labels; the binary carries it too.
	version string
	// name is the image reference recorded in the layout, e.g. arbiter:latest.
	name string
	// created is every timestamp in the image: fixed, so that the same
	// binary gives the same digest.
	created time.Time
}

// build returns the image and its index: one layer holding the binary, on
// an empty base, with OCI media types.
func build(s spec) (v1.ImageIndex, v1.Image, error) {
	layerTar, err := binaryLayer(s.binary, s.created)
	if err != nil {
		return nil, nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, nil, fmt.Errorf("making the layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: s.created}, CreatedBy: "make image", Comment: "the arbiter manager, " + s.version,
	}})
	if err != nil {
		return nil, nil, fmt.Errorf("adding the layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = imageOS, s.arch
	cfg.Created = v1.Time{Time: s.created}
	cfg.Config.Entrypoint = []string{binaryPath}
	cfg.Config.User = imageUser
	cfg.Config.Labels = labels(s.version)
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("setting the config: %w", err)
	}
	index := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: imageOS, Architecture: s.arch},
			Annotations: map[string]string{annotationRefName: tagOf(s.name), annotationImageName: s.name},
		},
	})
	return index, img, nil
}

func labels(version string) map[string]string {
	return map[string]string{
		labelTitle:    title,
		labelVersion:  version,
		labelSource:   source,
		labelLicenses: licenses,
	}
}

// tagOf is the tag of an image reference: what follows the last colon
// after the last slash, or "latest".
func tagOf(name string) string {
	for i := len(name) - 1; i >= 0 && name[i] != '/'; i-- {
		if name[i] == ':' {
			return name[i+1:]
		}
	}
	return "latest"
}

// binaryLayer is an uncompressed layer tar holding the binary at /manager,
// owned by root and executable by all, so that user 65532 runs it but
// cannot change it.
func binaryLayer(binary []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     binaryPath[1:],
		Mode:     0o755,
		Size:     int64(len(binary)),
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeLayoutTar writes index as an OCI image layout in a tar (what
// `docker load`, `podman load` and `skopeo copy oci-archive:` read): the
// oci-layout file, index.json and every blob, in a fixed order with fixed
// headers, so that the same image gives the same bytes.
func writeLayoutTar(w io.Writer, index v1.ImageIndex, img v1.Image, mtime time.Time) error {
	files := map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)}
	rawIndex, err := index.RawManifest()
	if err != nil {
		return err
	}
	files["index.json"] = rawIndex
	blob := func(h v1.Hash, raw []byte) { files["blobs/"+h.Algorithm+"/"+h.Hex] = raw }

	rawManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	blob(digest, rawManifest)
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	blob(configName, rawConfig)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		raw, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			return err
		}
		blob(h, raw)
	}

	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, name := range names {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(files[name])), ModTime: mtime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeImage builds the image s describes and writes its layout tar to path.
func writeImage(path string, s spec) (v1.Hash, error) {
	index, img, err := build(s)
	if err != nil {
		return v1.Hash{}, err
	}
	f, err := os.Create(path)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := writeLayoutTar(f, index, img, s.created); err != nil {
		_ = f.Close()
		return v1.Hash{}, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}
