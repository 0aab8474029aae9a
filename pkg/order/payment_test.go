package order

import (
	"testing"
	"time"
)

func TestRefusal(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		status Status
		hold   *time.Time
		want   Refusal
	}{
		{StatusConfirmed, ptr(now.Add(time.Second)), ""},
		{StatusConfirmed, ptr(now), RefusedHoldEnded}, // the sweep expires it at hold_until too
		{StatusConfirmed, ptr(now.Add(-time.Second)), RefusedHoldEnded},
		{StatusPending, nil, ""}, // not decided yet: the provider retries
		{StatusExpired, nil, RefusedExpired},
		{StatusCancelled, nil, RefusedCancelled},
		{StatusRejected, nil, RefusedRejected},
		{StatusPaid, nil, RefusedPaid},
	} {
		o := &Order{Status: tc.status, HoldUntil: tc.hold}
		if got := o.Refusal(now); got != tc.want {
			t.Errorf("%s, hold until %v: refusal %q, want %q", tc.status, tc.hold, got, tc.want)
		}
		err := o.Pay(now)
		if (tc.status == StatusConfirmed && tc.want == "") != (err == nil) {
			t.Errorf("%s, hold until %v: pay: %v", tc.status, tc.hold, err)
		}
	}
}
