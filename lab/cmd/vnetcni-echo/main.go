// Command vnetcni-echo is the lab's test workload: a static binary baked
// into a local image. "serve" answers HTTP with who it is and who called;
// "client" polls a URL and logs what answered.
//
//	vnetcni-echo serve [:8080]
//	vnetcni-echo client URL [interval]
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve"}
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	switch args[0] {
	case "serve":
		addr := ":8080"
		if len(args) > 1 {
			addr = args[1]
		}
		serve(addr)
	case "client":
		if len(args) < 2 {
			fmt.Fprintln(os.Stderr, "usage: vnetcni-echo client URL [interval]")
			os.Exit(2)
		}
		every := 5 * time.Second
		if len(args) > 2 {
			if d, err := time.ParseDuration(args[2]); err == nil {
				every = d
			}
		}
		client(args[1], every)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q (serve or client)\n", args[0])
		os.Exit(2)
	}
}

// Answer is what serve replies.
type Answer struct {
	Pod    string `json:"pod"`
	Server string `json:"server"`
	Client string `json:"client"`
}

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		local := ""
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			local = a.String()
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Answer{Pod: host, Server: local, Client: r.RemoteAddr})
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	fmt.Printf("serving on %s as %s\n", addr, host)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func client(url string, every time.Duration) {
	c := &http.Client{Timeout: 3 * time.Second}
	for {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			fmt.Printf("%s GET %s: %v\n", start.Format(time.RFC3339), url, err)
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			fmt.Printf("%s GET %s: %d in %s: %s", start.Format(time.RFC3339), url, resp.StatusCode, time.Since(start).Round(time.Millisecond), b)
		}
		time.Sleep(every)
	}
}
