//go:build !linux

package tun

import (
	"errors"
	"fmt"
)

// kvpn's data path is Linux-only (IFF_VNET_HDR, TUNSETOFFLOAD, rtnetlink).
func createOffload(name string, mtu int) (Device, error) {
	return nil, fmt.Errorf("tun: offload backend: %w", errors.ErrUnsupported)
}

func createPlain(name string, mtu int) (Device, error) {
	return nil, fmt.Errorf("tun: plain backend: %w", errors.ErrUnsupported)
}
