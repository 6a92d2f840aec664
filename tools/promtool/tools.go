//go:build tools

// Package tools pins promtool's module for `go build`.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
