package main

// Latency histograms in microseconds, HdrHistogram V2 compressed and base64 encoded: the format
// (and range) bench/hist.py decodes and merges.

import (
	"github.com/HdrHistogram/hdrhistogram-go"
)

const (
	lowestUs          = 1
	highestUs         = 3_600 * 1_000_000 // one hour: anything slower is clamped, not dropped
	significantDigits = 3
)

type latency struct{ h *hdrhistogram.Histogram }

func newLatency() latency {
	return latency{hdrhistogram.New(lowestUs, highestUs, significantDigits)}
}

func (l latency) recordNs(elapsedNs int64) {
	us := min(max(elapsedNs/1000, lowestUs), highestUs)
	_ = l.h.RecordValue(us) // cannot fail: clamped to the range
}

func (l latency) count() int64 { return l.h.TotalCount() }

func (l latency) encode() string {
	buf, err := l.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		panic(err) // only for an unknown encoding version
	}
	return string(buf)
}
