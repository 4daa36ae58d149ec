// Command kustomize is the kustomize CLI, built from its Go module at the version pinned in
// go.mod (checksums from go.sum), so that `make engines` needs nothing but the Go module proxy.
// It renders deploy/overlays/* for the deployment checks in tests/deploy.
package main

import (
	"os"

	"sigs.k8s.io/kustomize/kustomize/v5/commands"
)

func main() {
	if err := commands.NewDefaultCommand().Execute(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}
