// Package auth verifies VPN users and issues session cookies.
//
// It has three independent parts:
//
//   - PasswdFile reads an ocserv-compatible password file (as written by
//     ocpasswd) and verifies passwords against argon2id, SHA-512-crypt or
//     SHA-256-crypt hashes. SetPassword and DeleteUser edit such a file.
//   - Cookie and CookieJar issue and look up the random session cookies
//     that a client presents (as webvpn=<hex>) after logging in.
//   - Throttle slows down password guessing per user and per source address.
package auth
