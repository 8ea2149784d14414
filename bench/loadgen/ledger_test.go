package main

import "testing"

func mustSend(t *testing.T, l *lossLedger, id, intended int64, recipients ...int32) {
	t.Helper()
	if err := l.sent(id, intended, recipients); err != nil {
		t.Fatal(err)
	}
}

func TestAckedMessageMissingAtARecipientIsLost(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10, 7, 8, 9)
	if !l.acked(1) {
		t.Fatal("first ack refused")
	}
	if l.delivered(1, 7) != deliveryFirst || l.delivered(1, 9) != deliveryFirst {
		t.Fatal("first deliveries not counted as first")
	}
	r := l.report()
	if r.ExpectedDeliveries != 3 || r.Delivered != 2 || r.Lost != 1 || l.outstanding() != 1 {
		t.Fatalf("report %+v outstanding %d", r, l.outstanding())
	}
}

func TestEveryRecipientServedMeansNothingLostAndNothingOutstanding(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10, 2, 3)
	mustSend(t, l, 2, 20, 4)
	if l.delivered(1, 2) != deliveryFirst { // deliveries may overtake the ack
		t.Fatal("delivery before ack not first")
	}
	l.acked(1)
	l.delivered(1, 3)
	l.acked(2)
	l.delivered(2, 4)
	r := l.report()
	if r.Lost != 0 || r.Delivered != 3 || r.Acked != 2 || l.outstanding() != 0 {
		t.Fatalf("report %+v", r)
	}
	if _, ok := l.oldestOutstandingNs(); ok {
		t.Fatal("something still outstanding")
	}
}

func TestDuplicatesAndUnexpectedDeliveriesAreCountedNotCredited(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10, 2)
	l.acked(1)
	got := []delivery{l.delivered(1, 2), l.delivered(1, 2), l.delivered(1, 5), l.delivered(99, 2)}
	want := []delivery{deliveryFirst, deliveryDuplicate, deliveryUnexpected, deliveryUnexpected}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("delivery %d: got %v want %v", i, got[i], want[i])
		}
	}
	r := l.report()
	if r.Delivered != 1 || r.Duplicates != 1 || r.Unexpected != 2 || r.Lost != 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestRefusedAndUnackedMessagesAreOwedToNobody(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10, 2, 3)
	l.failed(1) // an error frame: the server did not take it
	mustSend(t, l, 2, 20, 2, 3)
	l.delivered(2, 2) // stored and delivered, but the ack never came
	r := l.report()
	if r.Failed != 1 || r.Unacked != 1 || r.Acked != 0 || r.ExpectedDeliveries != 0 || r.Lost != 0 || r.DeliveredUnacked != 1 {
		t.Fatalf("report %+v", r)
	}
	if l.delivered(1, 2) != deliveryUnexpected {
		t.Fatal("delivery of a refused message credited")
	}
}

func TestAnAckCountsOnceAndFailureAfterAckIsIgnored(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10)
	if !l.acked(1) || l.acked(1) {
		t.Fatal("ack not counted exactly once")
	}
	l.failed(1)
	if r := l.report(); r.Acked != 1 || r.Failed != 0 {
		t.Fatalf("report %+v", r)
	}
	if l.acked(42) {
		t.Fatal("ack of an unknown message accepted")
	}
}

func TestOldestOutstandingFollowsSendOrder(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 100, 5)
	mustSend(t, l, 2, 200)
	mustSend(t, l, 3, 300, 6)
	expect := func(want int64) {
		t.Helper()
		if got, ok := l.oldestOutstandingNs(); !ok || got != want {
			t.Fatalf("oldest outstanding %d (%v), want %d", got, ok, want)
		}
	}
	expect(100)
	l.acked(1)
	l.delivered(1, 5)
	l.acked(3)
	expect(200) // 2 still waits for its ack
	l.acked(2)
	expect(300) // 3 still owed to 6
	if l.outstanding() != 1 {
		t.Fatalf("outstanding %d", l.outstanding())
	}
}

func TestRegisteringAMessageTwiceIsABug(t *testing.T) {
	l := newLossLedger()
	mustSend(t, l, 1, 10)
	if err := l.sent(1, 11, nil); err == nil {
		t.Fatal("second registration accepted")
	}
}

func TestOrderTrackerCountsGapsAndRepeatsPerSessionAndConversation(t *testing.T) {
	o := newOrderTracker()
	steps := []struct {
		session int32
		seq     uint64
		want    bool
	}{
		{1, 5, true},  // first seen: any start
		{1, 6, true},  //
		{2, 1, true},  // another session has its own position
		{1, 6, false}, // repeat
		{1, 9, false}, // gap
		{1, 10, true},
	}
	for i, s := range steps {
		if got := o.observe(s.session, "c", s.seq); got != s.want {
			t.Fatalf("step %d: observe = %v", i, got)
		}
	}
	if o.gaps != 1 || o.repeats != 1 || o.position(1, "c") != 10 || o.position(1, "other") != 0 {
		t.Fatalf("gaps %d repeats %d", o.gaps, o.repeats)
	}
}
