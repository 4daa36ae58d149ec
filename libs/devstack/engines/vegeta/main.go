//go:build tools

// Package tools pins the vegeta load generator (its command is the module's root package),
// built with `go build github.com/tsenart/vegeta/v12` against this go.mod and go.sum, so
// that `make bench` needs nothing but the Go module proxy. The benchmarks in bench/ drive it.
package tools

import (
	_ "github.com/tsenart/vegeta/v12"
)
