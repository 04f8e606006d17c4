//go:build !linux

package bench

import (
	"context"
	"errors"
)

// Run needs Linux network namespaces.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	return nil, errors.New("the benchmarks need Linux")
}
