# kvpn: the two commands a fresh machine needs are `sudo make demo` and
# `sudo make test` (see README.md).
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

.PHONY: all build deps test demo clean

all: build

build:
	$(GO) build -o bin/ ./cmd/vpnd ./cmd/vpnc

deps:
	./scripts/install-deps.sh

test: deps
	./scripts/test.sh

demo: deps build
	./scripts/demo.sh

clean:
	rm -rf bin
