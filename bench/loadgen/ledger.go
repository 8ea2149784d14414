package main

// Loss and order accounting of one measurement step (pure, no I/O).
//
// Every message sent is registered with the sessions that must get it: the conversation's other
// members whose session was live (synced) at send time. The ack settles the sender's side; each
// delivery removes its recipient. A message acknowledged by the server and still owed to a
// recipient after the drain period is lost. Messages the server refused (an error frame) are owed
// to nobody; messages never acked nor refused are reported as unacked (the client cannot know
// whether they were stored).

import "fmt"

type delivery int

const (
	deliveryFirst delivery = iota
	deliveryDuplicate
	deliveryUnexpected // unknown message, or a session that was not owed it
)

type record struct {
	intendedNs int64
	expected   []int32
	got        []bool // parallel to expected
	remaining  int
	acked      bool
	failed     bool
}

func (r *record) settled() bool { return r.failed || (r.acked && r.remaining == 0) }

// lossReport: the same fields, in the same order, as the report the Python runner merges.
type lossReport struct {
	Sent               int64 `json:"sent"`
	Acked              int64 `json:"acked"`
	Failed             int64 `json:"failed"`
	Unacked            int64 `json:"unacked"`
	ExpectedDeliveries int64 `json:"expected_deliveries"` // sum over acked messages of the sessions owed it
	Delivered          int64 `json:"delivered"`           // first deliveries of acked messages
	Lost               int64 `json:"lost"`                // expected_deliveries - delivered
	Duplicates         int64 `json:"duplicates"`
	Unexpected         int64 `json:"unexpected"`
	DeliveredUnacked   int64 `json:"delivered_unacked"` // deliveries of messages whose ack never came
}

type lossLedger struct {
	messages   map[int64]*record
	order      []int64 // registration order, trimmed from the front once settled
	head       int
	duplicates int64
	unexpected int64
	unsettled  int
}

func newLossLedger() *lossLedger { return &lossLedger{messages: make(map[int64]*record)} }

func (l *lossLedger) sent(msgID, intendedNs int64, recipients []int32) error {
	if _, ok := l.messages[msgID]; ok {
		return fmt.Errorf("message %d registered twice", msgID)
	}
	l.messages[msgID] = &record{
		intendedNs: intendedNs,
		expected:   recipients,
		got:        make([]bool, len(recipients)),
		remaining:  len(recipients),
	}
	l.order = append(l.order, msgID)
	l.unsettled++
	return nil
}

// acked marks the message acknowledged; false for an unknown message or a repeated ack.
func (l *lossLedger) acked(msgID int64) bool {
	r := l.messages[msgID]
	if r == nil || r.acked || r.failed {
		return false
	}
	r.acked = true
	if r.settled() {
		l.unsettled--
	}
	return true
}

func (l *lossLedger) failed(msgID int64) {
	r := l.messages[msgID]
	if r != nil && !r.acked && !r.failed {
		r.failed = true
		l.unsettled--
	}
}

func (l *lossLedger) delivered(msgID int64, recipient int32) delivery {
	r := l.messages[msgID]
	if r == nil || r.failed {
		l.unexpected++
		return deliveryUnexpected
	}
	for i, e := range r.expected {
		if e != recipient {
			continue
		}
		if r.got[i] {
			l.duplicates++
			return deliveryDuplicate
		}
		r.got[i] = true
		r.remaining--
		if r.settled() {
			l.unsettled--
		}
		return deliveryFirst
	}
	l.unexpected++
	return deliveryUnexpected
}

func (l *lossLedger) intendedNs(msgID int64) (int64, bool) {
	r := l.messages[msgID]
	if r == nil {
		return 0, false
	}
	return r.intendedNs, true
}

// oldestOutstandingNs: intended send time of the oldest message not yet acked-and-delivered.
func (l *lossLedger) oldestOutstandingNs() (int64, bool) {
	for l.head < len(l.order) && l.messages[l.order[l.head]].settled() {
		l.head++
	}
	if l.head == len(l.order) {
		return 0, false
	}
	return l.messages[l.order[l.head]].intendedNs, true
}

// outstanding: messages not yet acked-and-delivered (nor refused).
func (l *lossLedger) outstanding() int { return l.unsettled }

func (l *lossLedger) report() lossReport {
	var out lossReport
	for _, r := range l.messages {
		got := int64(len(r.expected) - r.remaining)
		switch {
		case r.acked:
			out.Acked++
			out.ExpectedDeliveries += int64(len(r.expected))
			out.Delivered += got
		case r.failed:
			out.Failed++
		default:
			out.DeliveredUnacked += got
		}
	}
	out.Sent = int64(len(l.messages))
	out.Unacked = out.Sent - out.Acked - out.Failed
	out.Lost = out.ExpectedDeliveries - out.Delivered
	out.Duplicates = l.duplicates
	out.Unexpected = l.unexpected
	return out
}

// orderTracker: per (session, conversation) the seqs a session is given must be consecutive. A
// session's own sends come back as acks and other members' as messages; both advance the
// position, so together they must count 1, 2, 3, ...
type orderTracker struct {
	last    map[orderKey]uint64
	gaps    int64
	repeats int64
}

type orderKey struct {
	session      int32
	conversation string
}

func newOrderTracker() *orderTracker { return &orderTracker{last: make(map[orderKey]uint64)} }

// observe: true if seq is the next one (or the first seen); counts gaps and repeats otherwise.
func (o *orderTracker) observe(session int32, conversation string, seq uint64) bool {
	key := orderKey{session, conversation}
	last, seen := o.last[key]
	if !seen || seq == last+1 {
		o.last[key] = seq
		return true
	}
	if seq <= last {
		o.repeats++
		return false
	}
	o.gaps++
	o.last[key] = seq
	return false
}

func (o *orderTracker) position(session int32, conversation string) uint64 {
	return o.last[orderKey{session, conversation}]
}
