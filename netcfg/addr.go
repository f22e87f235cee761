package netcfg

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RemoveAddr removes addr from the named link, for a client whose server
// handed out a different address on reconnect. It is not recorded: the
// SetLink that added addr already has an undo step, which treats an
// address that is gone as done. An address that is not there is no error.
func RemoveAddr(name string, addr netip.Prefix) error {
	if !addr.IsValid() {
		return nil // no address was held (a tunnel without IPv6, say)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netcfg: RemoveAddr %s: %w", name, err)
	}
	err = netlink.AddrDel(link, &netlink.Addr{IPNet: ipNet(addr)})
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("netcfg: remove address %s from %s: %w", addr, name, err)
	}
	return nil
}
