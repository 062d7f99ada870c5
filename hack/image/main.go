// Command image builds arbiter's container image as an OCI image layout
// tarball, the way ko does: the static manager binary as the one layer of an
// empty base, with its entrypoint, user and labels. No container engine and
// no registry are needed. `make image` runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	var (
		binary  = flag.String("binary", "", "Static linux manager binary to put at /manager.")
		output  = flag.String("output", "", "Path of the OCI image layout tarball to write.")
		arch    = flag.String("arch", "", "Architecture of the binary (GOARCH), recorded in the image config.")
		version = flag.String("version", "", "Version the binary was stamped with, recorded in the image labels.")
		name    = flag.String("name", "arbiter:latest", "Image reference recorded in the layout (IMG).")
	)
	flag.Parse()
	if err := run(*binary, *output, *arch, *version, *name); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary, output, arch, version, name string) error {
	for flagName, value := range map[string]string{"--binary": binary, "--output": output, "--arch": arch, "--version": version, "--name": name} {
		if value == "" {
			return fmt.Errorf("%s is required", flagName)
		}
	}
	created, err := sourceDate()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(binary)
	if err != nil {
		return fmt.Errorf("--binary: %w", err)
	}
	digest, err := writeImage(output, spec{binary: raw, arch: arch, version: version, name: name, created: created})
	if err != nil {
		return err
	}
	fmt.Printf("Wrote %s: %s linux/%s %s\n", output, name, arch, digest)
	return nil
}

// sourceDate is every timestamp in the image: SOURCE_DATE_EPOCH (the
// Makefile sets the last commit's time), else the Unix epoch.
func sourceDate() (time.Time, error) {
	raw := os.Getenv("SOURCE_DATE_EPOCH")
	if raw == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	seconds, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || seconds < 0 {
		return time.Time{}, errors.New("SOURCE_DATE_EPOCH: must be a number of seconds since the Unix epoch, got " + strconv.Quote(raw))
	}
	return time.Unix(seconds, 0).UTC(), nil
}
