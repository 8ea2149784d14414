package main

// What the simulated users do (pure): who talks in which conversations, and message bodies.
// The same plan as before the generator moved to Go: each generator process owns a contiguous
// range of users and every conversation of its users, so all members of a conversation live in
// one process and loss and latency are accounted there without cross-process bookkeeping.
// Every user is in one direct conversation (users paired up) and, when groupSize > 0, in one
// group of groupSize consecutive users.

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
)

const (
	kindDirect = "direct"
	kindGroup  = "group"
)

type plannedConversation struct {
	kind    string
	members []int32 // process-local user indices; the creator is members[0]
}

type plan struct {
	users         int
	conversations []plannedConversation
	directOf      []int32 // user -> index of its direct conversation
	groupOf       []int32 // user -> index of its group (-1: none)
}

func planConversations(users, groupSize int) (*plan, error) {
	if users < 2 {
		return nil, errors.New("at least two users are needed")
	}
	if groupSize == 1 || groupSize < 0 {
		return nil, errors.New("group_size is 0 (no groups) or at least 2")
	}
	p := &plan{users: users, directOf: make([]int32, users), groupOf: make([]int32, users)}
	for a := 0; a+1 < users; a += 2 {
		idx := int32(len(p.conversations))
		p.directOf[a], p.directOf[a+1] = idx, idx
		p.conversations = append(p.conversations, plannedConversation{kindDirect, []int32{int32(a), int32(a + 1)}})
	}
	if users%2 == 1 {
		// The odd one out talks to user 0 (who then has two direct conversations).
		p.directOf[users-1] = int32(len(p.conversations))
		p.conversations = append(p.conversations, plannedConversation{kindDirect, []int32{int32(users - 1), 0}})
	}
	for i := range p.groupOf {
		p.groupOf[i] = -1
	}
	if groupSize > 0 {
		var starts []int
		for s := 0; s < users; s += groupSize {
			starts = append(starts, s)
		}
		if len(starts) > 1 && users-starts[len(starts)-1] < 2 {
			starts = starts[:len(starts)-1] // a one-member remainder joins the previous group
		}
		for n, start := range starts {
			end := users
			if n+1 < len(starts) {
				end = starts[n+1]
			}
			idx := int32(len(p.conversations))
			members := make([]int32, 0, end-start)
			for u := start; u < end; u++ {
				members = append(members, int32(u))
				p.groupOf[u] = idx
			}
			p.conversations = append(p.conversations, plannedConversation{kindGroup, members})
		}
	}
	return p, nil
}

// pickConversation: the conversation a user's next message goes to, its direct one with
// probability directShare.
func (p *plan) pickConversation(user int, directShare float64, rng *rand.Rand) int {
	group := p.groupOf[user]
	if group < 0 || rng.Float64() < directShare {
		return int(p.directOf[user])
	}
	return int(group)
}

// Message bodies: "<message id> <intended send time, CLOCK_MONOTONIC ns> " then padding, valid
// UTF-8, parsed at every recipient without JSON.

func encodeBody(msgID, intendedNs int64, size int) []byte {
	buf := make([]byte, 0, max(size, 40))
	buf = strconv.AppendInt(buf, msgID, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, intendedNs, 10)
	buf = append(buf, ' ')
	for len(buf) < size {
		buf = append(buf, 'x')
	}
	return buf
}

var errBadBody = errors.New("not a load generator body")

func decodeBody(body []byte) (msgID, intendedNs int64, err error) {
	first := bytes.IndexByte(body, ' ')
	if first < 0 {
		return 0, 0, errBadBody
	}
	rest := body[first+1:]
	second := bytes.IndexByte(rest, ' ')
	if second < 0 {
		return 0, 0, errBadBody
	}
	msgID, err1 := strconv.ParseInt(string(body[:first]), 10, 64)
	intendedNs, err2 := strconv.ParseInt(string(rest[:second]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errBadBody
	}
	return msgID, intendedNs, nil
}
