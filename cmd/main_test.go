package main

import (
	"flag"
	"strings"
	"testing"
)

func parse(t *testing.T, args ...string) options {
	t.Helper()
	var o options
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	bindFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestWebhookCertManagement(t *testing.T) {
	o := parse(t)
	if o.webhookCertManagement != "external" {
		t.Errorf("default --webhook-cert-management = %q, want external (local runs and cert-manager)", o.webhookCertManagement)
	}
	if o.webhookCertSecret != "arbiter-webhook-server-cert" || o.webhookService != "arbiter-webhook-service" ||
		o.mutatingWebhookConfig != "arbiter-mutating-webhook-configuration" ||
		o.validatingWebhookConfig != "arbiter-validating-webhook-configuration" {
		t.Errorf("defaults are not the release's names: %+v", o)
	}
	for _, v := range []string{"self", "external"} {
		o := parse(t, "--webhook-cert-management="+v)
		if err := o.validate(); err != nil {
			t.Errorf("--webhook-cert-management=%s: %v", v, err)
		}
	}
	o = parse(t, "--webhook-cert-management=cert-manager")
	err := o.validate()
	if err == nil || !strings.HasPrefix(err.Error(), "--webhook-cert-management:") {
		t.Errorf("--webhook-cert-management=cert-manager: got %v, want an error naming the flag", err)
	}
}
