package main

import (
	"reflect"
	"testing"
)

const second = int64(1_000_000_000)

func TestScheduleIssuesMessagesAtTheirIntendedTimesRegardlessOfWhenAsked(t *testing.T) {
	s, err := newOpenLoopSchedule(100, second, 1.0)
	if err != nil || s.total != 100 {
		t.Fatalf("schedule %+v %v", s, err)
	}
	if got := s.due(second-1, nil); len(got) != 0 {
		t.Fatalf("due before the start: %v", got)
	}
	if got := s.due(second, nil); !reflect.DeepEqual(got, []int64{second}) {
		t.Fatalf("first %v", got)
	}
	// Asked late (a stall of 105 ms): everything due meanwhile comes at once, with its original
	// intended time: the stall shows up as latency, not as a lower rate.
	late := s.due(second+105_000_000, nil)
	var want []int64
	for i := int64(1); i <= 10; i++ {
		want = append(want, second+i*10_000_000)
	}
	if !reflect.DeepEqual(late, want) {
		t.Fatalf("late %v", late)
	}
	if next, ok := s.nextDueNs(); !ok || next != second+110_000_000 || s.next != 11 {
		t.Fatalf("next %d %v issued %d", next, ok, s.next)
	}
}

func TestScheduleFinishesAfterRateTimesDurationMessages(t *testing.T) {
	s, _ := newOpenLoopSchedule(250, 0, 2.0)
	if got := s.due(10*second, nil); len(got) != 500 {
		t.Fatalf("%d messages", len(got))
	}
	if _, ok := s.nextDueNs(); ok || !s.finished() || len(s.due(20*second, nil)) != 0 {
		t.Fatal("not finished")
	}
}

func TestScheduleWithFractionalIntervalKeepsTheAverageRate(t *testing.T) {
	s, _ := newOpenLoopSchedule(3, 0, 10.0)
	times := s.due(10*second, nil)
	if len(times) != 30 || times[3] != second { // 3 per second: message 3 starts the second second
		t.Fatalf("times %v", times)
	}
}

func TestScheduleRejectsANonPositiveRate(t *testing.T) {
	if _, err := newOpenLoopSchedule(0, 0, 1); err == nil {
		t.Fatal("rate 0 accepted")
	}
}
