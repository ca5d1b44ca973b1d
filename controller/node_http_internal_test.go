package controller

import (
	"net/http/httptest"
	"testing"
)

// TestFencedRead: the leader fences the reads of the cluster's state
// (jobs, logs and their WebSocket, agents, schedules, audit, tokens,
// stats), not writes, and not what says nothing about jobs.
func TestFencedRead(t *testing.T) {
	for name, tt := range map[string]struct {
		method, path string
		fenced       bool
	}{
		"a job":            {"GET", "/jobs/7", true},
		"the list":         {"GET", "/jobs", true},
		"a log":            {"GET", "/jobs/7/logs", true},
		"a log follow":     {"GET", "/ws/jobs/7/logs", true},
		"head of a job":    {"HEAD", "/jobs/7", true},
		"agents":           {"GET", "/agents", true},
		"schedules":        {"GET", "/schedules", true},
		"audit":            {"GET", "/audit", true},
		"a submit":         {"POST", "/jobs", false},
		"a cancel":         {"DELETE", "/jobs/7", false},
		"health":           {"GET", "/health", false},
		"metrics":          {"GET", "/metrics", false},
		"the API":          {"GET", "/openapi.json", false},
		"whoami":           {"GET", "/whoami", false},
		"members":          {"GET", "/operator/members", false},
		"the dashboard":    {"GET", "/ui", false},
		"a dashboard file": {"GET", "/ui/job.js", false},
	} {
		if got := fencedRead(httptest.NewRequest(tt.method, tt.path, nil)); got != tt.fenced {
			t.Errorf("%s: %s %s fenced = %v, want %v", name, tt.method, tt.path, got, tt.fenced)
		}
	}
}
