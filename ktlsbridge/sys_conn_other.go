//go:build !linux

package ktlsbridge

import (
	"errors"
	"syscall"
)

const (
	tlsTX = 1
	tlsRX = 2

	typeChangeCipherSpec = 20
	typeAlert            = 21
	typeHandshake        = 22
	typeApplicationData  = 23
)

var errNoKTLS = errors.New("kernel TLS is Linux-only")

func enableULP(int) error              { return errNoKTLS }
func setCrypto(int, int, []byte) error { return errNoKTLS }

type kernelTX struct{ rc syscall.RawConn }

func (*kernelTX) writeRecords([][]byte) error     { return errNoKTLS }
func (*kernelTX) sendControl(uint8, []byte) error { return errNoKTLS }

type kernelRX struct{ rc syscall.RawConn }

func (*kernelRX) read([]byte) (int, uint8, error) { return 0, 0, errNoKTLS }
