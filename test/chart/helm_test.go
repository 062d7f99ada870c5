// Package chart tests the Helm chart charts/arbiter with the pinned bin/helm:
// helm lint --strict, what `helm template` renders for the main values
// combinations (compared with the generated manifests in config/), and a
// server-side apply of the rendered objects to a real kube-apiserver.
package chart

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/arbiter-dev/arbiter/test/util"
)

const (
	// releaseName is the release name that names objects as the release
	// manifests do (arbiter-controller-manager, ...).
	releaseName = "arbiter"
	// namespace is the release namespace of the release manifests.
	namespace = "arbiter-system"
)

// chartDir is the chart under test.
func chartDir() string { return util.Path("charts", "arbiter") }

// helmBin is bin/helm; it fails the test, naming the command that builds it,
// when it is missing.
func helmBin(t *testing.T) string {
	t.Helper()
	bin := util.Path("bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found: run `make tools` (or `make test`, which builds it)", bin)
	}
	return bin
}

// helm runs bin/helm with args and returns its standard output, or an error
// carrying its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Dir = util.RepoRoot()
	return util.Output(cmd, "helm "+strings.Join(args, " "))
}

// renderRaw is the output of `helm template` for the release arbiter in
// arbiter-system with the given values flags (--set, --set-json, -f).
func renderRaw(t *testing.T, valueArgs ...string) (string, error) {
	t.Helper()
	args := append([]string{"template", releaseName, chartDir(), "--namespace", namespace}, chartValues(valueArgs)...)
	return helm(t, args...)
}

// rendered is what one `helm template` run produced.
type rendered struct {
	objects []*unstructured.Unstructured
}

// render runs `helm template` and decodes every object; it fails the test
// when helm refuses the values.
func render(t *testing.T, valueArgs ...string) rendered {
	t.Helper()
	out, err := renderRaw(t, valueArgs...)
	if err != nil {
		t.Fatal(err)
	}
	objects, err := decodeObjects([]byte(out))
	if err != nil {
		t.Fatalf("helm template output is not YAML: %v", err)
	}
	return rendered{objects: objects}
}

// decodeObjects decodes a multi-document YAML stream, skipping empty
// documents. Numbers decode as int64, as the API machinery decodes them.
func decodeObjects(raw []byte) ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(js)) == 0 || string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			return nil, fmt.Errorf("%w in\n%s", err, doc)
		}
		objects = append(objects, u)
	}
}

// decodeFile decodes the objects of a file under the repository root.
func decodeFile(t *testing.T, parts ...string) []*unstructured.Unstructured {
	t.Helper()
	raw, err := os.ReadFile(util.Path(parts...))
	if err != nil {
		t.Fatal(err)
	}
	objects, err := decodeObjects(raw)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(parts, "/"), err)
	}
	return objects
}

// find is the rendered object of that kind and name, or nil.
func (r rendered) find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// get is the rendered object of that kind and name; it fails the test when
// there is none.
func (r rendered) get(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := r.find(kind, name)
	if o == nil {
		t.Fatalf("no %s %s rendered; have %v", kind, name, r.names())
	}
	return o
}

// ofKind is every rendered object of that kind.
func (r rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r.objects {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// names lists "Kind/name" of every rendered object, for failure messages.
func (r rendered) names() []string {
	out := make([]string, 0, len(r.objects))
	for _, o := range r.objects {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}
