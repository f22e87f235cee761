package session

// WaitReadBufferHeld reports whether the channel holds a frame buffer.
func (c *CSTPChannel) WaitReadBufferHeld() bool { return c.fr.buf != nil }

// WaitReadRelease drops the frame last read, as the next read would.
func (c *CSTPChannel) WaitReadRelease() { c.fr.discard() }
