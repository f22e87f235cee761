package ippkt

import (
	"errors"
	"kvpn/internal/race"
	"net/netip"
	"testing"
)

func ipv4(src, dst string, payload int) []byte {
	p := make([]byte, 20+payload)
	p[0] = 0x45
	total := 20 + payload
	p[2], p[3] = byte(total>>8), byte(total)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func TestAddrsIPv4(t *testing.T) {
	src, dst, err := Addrs(ipv4("10.0.0.2", "10.0.0.1", 8))
	if err != nil || src.String() != "10.0.0.2" || dst.String() != "10.0.0.1" {
		t.Fatalf("got %s %s %v", src, dst, err)
	}
}

func TestAddrsIPv6(t *testing.T) {
	p := make([]byte, 48)
	p[0] = 0x60
	p[5] = 8
	s, d := netip.MustParseAddr("fd00::2").As16(), netip.MustParseAddr("fd00::1").As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	src, dst, err := Addrs(p)
	if err != nil || src.String() != "fd00::2" || dst.String() != "fd00::1" {
		t.Fatalf("got %s %s %v", src, dst, err)
	}
}

func TestAddrsRejects(t *testing.T) {
	long := ipv4("1.1.1.1", "2.2.2.2", 0)
	long[3] = 40 // claims 40 bytes, has 20
	badIHL := ipv4("1.1.1.1", "2.2.2.2", 0)
	badIHL[0] = 0x44
	for name, p := range map[string][]byte{
		"empty":     {},
		"arp-ish":   {0x00, 0x01, 0x08, 0x00},
		"short v4":  {0x45, 0, 0, 20},
		"short v6":  make([]byte, 10),
		"too long":  long,
		"bad ihl":   badIHL,
		"version 5": {0x50, 1, 2, 3},
	} {
		if name == "short v6" {
			p[0] = 0x60
		}
		if _, _, err := Addrs(p); !errors.Is(err, ErrNotIP) {
			t.Errorf("%s: err = %v, want ErrNotIP", name, err)
		}
	}
}

func TestAddrsNoAlloc(t *testing.T) {
	if race.Enabled {
		t.Log("allocation counts are meaningless under -race; the non-race run of scripts/test.sh asserts them")
		return
	}
	p := ipv4("10.0.0.2", "10.0.0.1", 1380)
	if a := testing.AllocsPerRun(1000, func() { Addrs(p) }); a != 0 {
		t.Fatalf("%v allocs per packet", a)
	}
}

func FuzzAddrs(f *testing.F) {
	f.Add(ipv4("10.0.0.2", "10.0.0.1", 4))
	f.Add([]byte{0x60})
	f.Fuzz(func(t *testing.T, p []byte) {
		src, dst, err := Addrs(p)
		if err == nil && (!src.IsValid() || !dst.IsValid()) {
			t.Fatal("accepted packet without valid addresses")
		}
	})
}
