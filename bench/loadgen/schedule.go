package main

// Open loop: message i of a step is due at start + i/rate whether or not earlier sends were
// answered, and latency is measured from that intended time, so a slow system shows up as latency
// (and a growing backlog) instead of silently lowering the offered rate ("coordinated omission").

import (
	"errors"
	"math"
)

type openLoopSchedule struct {
	startNs    int64
	total      int64
	intervalNs float64
	next       int64
}

func newOpenLoopSchedule(ratePerS float64, startNs int64, durationS float64) (*openLoopSchedule, error) {
	if ratePerS <= 0 {
		return nil, errors.New("rate must be positive")
	}
	return &openLoopSchedule{
		startNs:    startNs,
		total:      int64(math.Floor(ratePerS * durationS)),
		intervalNs: 1e9 / ratePerS,
	}, nil
}

func (s *openLoopSchedule) finished() bool { return s.next >= s.total }

func (s *openLoopSchedule) intendedNs(i int64) int64 {
	return s.startNs + int64(math.Round(float64(i)*s.intervalNs))
}

// due appends the intended times of every message due by nowNs and not yet issued (in order).
func (s *openLoopSchedule) due(nowNs int64, out []int64) []int64 {
	if nowNs < s.startNs {
		return out
	}
	last := min(s.total, int64(math.Floor(float64(nowNs-s.startNs)/s.intervalNs))+1)
	for i := s.next; i < last; i++ {
		out = append(out, s.intendedNs(i))
	}
	s.next = max(s.next, last)
	return out
}

// nextDueNs: the intended time of the next message; false once finished.
func (s *openLoopSchedule) nextDueNs() (int64, bool) {
	if s.finished() {
		return 0, false
	}
	return s.intendedNs(s.next), true
}
