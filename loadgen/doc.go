// Package loadgen runs many OpenConnect sessions from one process, without
// TUN devices, against a vpnd or a stock ocserv: per session a TLS dial,
// the XML login openconnect does, CONNECT with the headers openconnect
// sends for PSK-NEGOTIATE DTLS, a DTLS channel (kvpn's own dtls.Dial),
// DPD and keepalive answered on both channels, and optional ICMP echo
// traffic to the server's own tunnel address, whose kernel answers it.
//
// Memory per session is kept small so that 10,000 sessions fit in one
// process: frames are read into a buffer of one tunnel MTU, DTLS runs
// without the GRO reader (1 MiB each), and one goroutine drives every
// session's keepalive and DPD timers instead of a ticker per channel.
package loadgen
