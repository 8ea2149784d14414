package main

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"unicode/utf8"
)

func members(p *plan, kind string) [][]int32 {
	var out [][]int32
	for _, c := range p.conversations {
		if c.kind == kind {
			out = append(out, c.members)
		}
	}
	return out
}

func TestEveryUserHasOneDirectAndOneGroup(t *testing.T) {
	p, err := planConversations(10, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := members(p, kindDirect); !reflect.DeepEqual(got, [][]int32{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}}) {
		t.Fatalf("directs %v", got)
	}
	if got := members(p, kindGroup); !reflect.DeepEqual(got, [][]int32{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}) {
		t.Fatalf("groups %v", got)
	}
}

func TestOddUserCountsAndSingleMemberRemaindersAreAbsorbed(t *testing.T) {
	p, err := planConversations(9, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.conversations[p.directOf[8]].members; !reflect.DeepEqual(got, []int32{8, 0}) {
		t.Fatalf("odd one out %v", got)
	}
	if got := members(p, kindGroup); !reflect.DeepEqual(got, [][]int32{{0, 1, 2, 3}, {4, 5, 6, 7, 8}}) {
		t.Fatalf("groups %v", got)
	}
}

func TestInvalidPlansAreRefused(t *testing.T) {
	for _, c := range [][2]int{{1, 0}, {10, 1}, {10, -2}} {
		if _, err := planConversations(c[0], c[1]); err == nil {
			t.Fatalf("plan %v accepted", c)
		}
	}
}

func TestPickConversationFollowsTheDirectShare(t *testing.T) {
	p, _ := planConversations(100, 5)
	rng := rand.New(rand.NewPCG(7, 7))
	direct := 0
	for range 10_000 {
		switch p.pickConversation(3, 0.7, rng) {
		case int(p.directOf[3]):
			direct++
		case int(p.groupOf[3]):
		default:
			t.Fatal("picked a conversation the user is not in")
		}
	}
	if share := float64(direct) / 10_000; share < 0.67 || share > 0.73 {
		t.Fatalf("direct share %v", share)
	}
	noGroups, _ := planConversations(4, 0)
	if noGroups.pickConversation(2, 0, rng) != int(noGroups.directOf[2]) {
		t.Fatal("without groups the direct conversation is the only choice")
	}
}

func TestBodyRoundTripPadsToSizeAndStaysUTF8(t *testing.T) {
	body := encodeBody(123456, 987654321012, 64)
	if len(body) != 64 || !utf8.Valid(body) {
		t.Fatalf("body %q", body)
	}
	id, ns, err := decodeBody(body)
	if err != nil || id != 123456 || ns != 987654321012 {
		t.Fatalf("decoded %d %d %v", id, ns, err)
	}
	// A body shorter than its header is never truncated.
	if id, ns, err := decodeBody(encodeBody(1, 2, 0)); err != nil || id != 1 || ns != 2 {
		t.Fatalf("short body decoded %d %d %v", id, ns, err)
	}
	for _, foreign := range []string{"hello there", "hello", "1 x y", ""} {
		if _, _, err := decodeBody([]byte(foreign)); err == nil {
			t.Fatalf("foreign body %q accepted", foreign)
		}
	}
}
