package bench

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIperf(t *testing.T) {
	got, err := parseIperf([]byte(`{"start":{},"end":{"sum_sent":{"bits_per_second":5.1e9},"sum_received":{"bits_per_second":5e9}}}`))
	if err != nil || got != 5 {
		t.Errorf("parseIperf = %v, %v; want 5 Gbit/s", got, err)
	}
	if _, err := parseIperf([]byte(`{"error":"unable to connect to server: Connection refused"}`)); err == nil {
		t.Error("parseIperf of an error report: no error")
	}
	if _, err := parseIperf([]byte("iperf3: error")); err == nil {
		t.Error("parseIperf of text: no error")
	}
}

// sockperfOutput is sockperf 3.7's ping-pong summary, colours included.
const sockperfOutput = "sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=102303; ReceivedMessages=102302\n" +
	"sockperf: \x1b[2;35m====> avg-rtt=19.415 (std-dev=28.894)\x1b[0m\n" +
	"sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n" +
	"sockperf: ---> percentile 99.990 =  801.078\n" +
	"sockperf: ---> percentile 99.000 =   58.871\n" +
	"sockperf: ---> percentile 50.000 =   17.533\n"

func TestParseSockperf(t *testing.T) {
	avg, p99, err := parseSockperf([]byte(sockperfOutput))
	if err != nil || avg != 19.415 || p99 != 58.871 {
		t.Errorf("parseSockperf = %v, %v, %v; want 19.415, 58.871, nil", avg, p99, err)
	}
	if _, _, err := parseSockperf([]byte("sockperf: ERROR: connect: Connection refused")); err == nil {
		t.Error("parseSockperf of a failure: no error")
	}
}

func TestParseTrace(t *testing.T) {
	stderr := "something else\nazure-vnet trace ADD config=0.120ms state=1.500ms veth=2.000ms kernel=0.010ms total=4.000ms\n"
	got, ok := parseTrace(stderr, "ADD")
	want := []tracePhase{{"config", 0.12}, {"state", 1.5}, {"veth", 2}, {"kernel", 0.01}, {"total", 4}}
	if !ok || !cmp.Equal(got, want, cmp.AllowUnexported(tracePhase{})) {
		t.Errorf("parseTrace = %v, %v; want %v", got, ok, want)
	}
	if _, ok := parseTrace(stderr, "DEL"); ok {
		t.Error("parseTrace found a DEL line in an ADD trace")
	}
}
