package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// parseIperf reads the receiver's throughput from iperf3's JSON report.
func parseIperf(b []byte) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return 0, fmt.Errorf("parse iperf3 report: %w", err)
	}
	if r.Error != "" {
		return 0, errors.New("iperf3: " + r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

var (
	ansi         = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	sockperfAvg  = regexp.MustCompile(`avg-rtt=\s*([0-9.]+)`)
	sockperfP99  = regexp.MustCompile(`percentile 99\.000 =\s*([0-9.]+)`)
	sockperfLat  = regexp.MustCompile(`avg-lat=\s*([0-9.]+)`) // without --full-rtt
	errNoSummary = errors.New("no round-trip summary in sockperf's output")
)

// parseSockperf reads the average and p99 round trip from sockperf's
// ping-pong summary.
func parseSockperf(b []byte) (avg, p99 float64, err error) {
	s := ansi.ReplaceAllString(string(b), "")
	m := sockperfAvg.FindStringSubmatch(s)
	if m == nil {
		m = sockperfLat.FindStringSubmatch(s)
	}
	if m == nil {
		return 0, 0, errNoSummary
	}
	avg, _ = strconv.ParseFloat(m[1], 64)
	if m := sockperfP99.FindStringSubmatch(s); m != nil {
		p99, _ = strconv.ParseFloat(m[1], 64)
	}
	return avg, p99, nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = "..." + s[len(s)-300:]
	}
	return s
}
