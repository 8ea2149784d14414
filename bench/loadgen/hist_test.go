package main

import (
	"testing"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

func TestLatencyEncodesMicrosecondsClampedToTheRange(t *testing.T) {
	l := newLatency()
	l.recordNs(2_500_000)      // 2.5 ms
	l.recordNs(10)             // below 1 µs: clamped up
	l.recordNs(5 * 3600 * 1e9) // five hours: clamped down, not dropped
	decoded, err := hdrhistogram.Decode([]byte(l.encode()))
	if err != nil {
		t.Fatal(err)
	}
	if decoded.TotalCount() != 3 || decoded.Min() != lowestUs || !decoded.ValuesAreEquivalent(decoded.Max(), highestUs) {
		t.Fatalf("count %d min %d max %d", decoded.TotalCount(), decoded.Min(), decoded.Max())
	}
	if v := decoded.ValueAtQuantile(50); !decoded.ValuesAreEquivalent(v, 2500) {
		t.Fatalf("median %d µs", v)
	}
}

func TestCodeNamesReadLikePythons(t *testing.T) {
	for code, want := range map[codes.Code]string{
		codes.Unavailable:       "UNAVAILABLE",
		codes.DeadlineExceeded:  "DEADLINE_EXCEEDED",
		codes.Canceled:          "CANCELLED",
		codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	} {
		if got := codeName(code); got != want {
			t.Fatalf("%v: %q, want %q", code, got, want)
		}
	}
}
