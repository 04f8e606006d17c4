# vnetcni: VNet-native container networking.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS := -X github.com/vnetcni/vnetcni/internal/buildinfo.Version=$(VERSION)
BIN := $(CURDIR)/bin
# The reference plugins the conflist chains (portmap) or runtimes need
# (loopback), and the reference pair the benchmarks compare against.
CNI_PLUGINS := github.com/containernetworking/plugins/plugins/meta/portmap \
	github.com/containernetworking/plugins/plugins/main/loopback \
	github.com/containernetworking/plugins/plugins/main/bridge \
	github.com/containernetworking/plugins/plugins/ipam/host-local

.PHONY: all setup build test unit e2e demo lab-down clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	@mkdir -p $(BIN)
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/azure-vnet ./cmd/azure-vnet-ipam ./cmd/vnetctl
	go build -o $(BIN)/ $(CNI_PLUGINS)

# Every test: unit, kernel (in throwaway namespaces) and end-to-end through
# libcni on the emulated fabric. Needs root.
test: build
	VNETCNI_BIN_DIR=$(BIN) go test -count=1 -timeout 30m ./...

unit:
	go test -count=1 ./internal/nic ./internal/wireserver ./internal/imds ./internal/netconf ./internal/ipam ./internal/store

e2e: build
	VNETCNI_BIN_DIR=$(BIN) go test -count=1 -v ./test/e2e

# The main job: the seed's example cluster on an emulated Azure VNet, pods
# on every VM, the connectivity matrix. MODE=transparent for the other mode.
demo: build
	@./scripts/demo.sh

lab-down:
	$(BIN)/vnetctl lab down

clean:
	rm -rf $(BIN) dist
