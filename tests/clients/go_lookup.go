// Tiny lookup client for the real-client tests (tests/real_clients.rs): Go's pure resolver.
// Built by the test with CGO_ENABLED=0, so net.DefaultResolver always uses the Go resolver
// (src/net/dnsclient_unix.go) whatever resolv.conf and nsswitch.conf say.
//
// usage: go_lookup NAME [inet|inet6|unspec]
// prints "canon NAME" and one "addr ADDRESS" line per result and exits 0, or prints
// "error MESSAGE" and exits 2.
//
// LookupIP does not say which candidate of the search list answered, so the resolver's UDP
// sockets are wrapped (DefaultResolver.Dial) to note the question of the first reply that
// carried answer records: the walk stops at that candidate, so it is the resolved name.
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
)

var (
	mu        sync.Mutex
	canonical string
)

// noting is a UDP socket that reads replies like the resolver does and notes the first one
// with answers. Embedding *net.UDPConn keeps it a net.PacketConn, so the resolver still
// speaks UDP (not the TCP framing) over it.
type noting struct{ *net.UDPConn }

func (c noting) Read(b []byte) (int, error) {
	n, err := c.UDPConn.Read(b)
	if err == nil {
		note(b[:n])
	}
	return n, err
}

// note records the question name of a NOERROR reply with ANCOUNT > 0 (RFC 1035 §4.1).
func note(m []byte) {
	if len(m) < 12 || m[3]&0x0f != 0 || binary.BigEndian.Uint16(m[6:8]) == 0 {
		return
	}
	var labels []string
	for i := 12; i < len(m); {
		l := int(m[i])
		if l == 0 || l > 63 || i+1+l > len(m) {
			break
		}
		labels = append(labels, string(m[i+1:i+1+l]))
		i += 1 + l
	}
	mu.Lock()
	if canonical == "" {
		canonical = strings.ToLower(strings.Join(labels, ".")) + "."
	}
	mu.Unlock()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go_lookup NAME [inet|inet6|unspec]")
		os.Exit(64)
	}
	network := "ip"
	if len(os.Args) > 2 {
		switch os.Args[2] {
		case "inet":
			network = "ip4"
		case "inet6":
			network = "ip6"
		}
	}
	net.DefaultResolver.PreferGo = true
	net.DefaultResolver.Dial = func(ctx context.Context, nw, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, nw, addr)
		if u, ok := c.(*net.UDPConn); ok && err == nil {
			return noting{u}, nil
		}
		return c, err
	}
	ips, err := net.DefaultResolver.LookupIP(context.Background(), network, os.Args[1])
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	mu.Lock()
	fmt.Printf("canon %s\n", canonical)
	mu.Unlock()
	for _, ip := range ips {
		fmt.Printf("addr %s\n", ip)
	}
}
