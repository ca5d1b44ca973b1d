package controller_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"jobsuite/api"
)

// TestUIFleet drives the dashboard as an operator running a fleet, in
// headless Chromium, over 1,000 jobs: the jobs page pages through them
// and searches them, with the number of jobs in each state; a job page
// shows a running job's live state, finds text in its log and runs the
// job again; an unknown job stops asking; an agent page drains and
// undrains its agent; the queue page draws its charts; the audit page
// lists who did it all. Signing out hides the data, and 'jobsuite dev's
// sign-in link signs in. Every page is saved as a screenshot in light
// and dark mode and on a phone-width screen ($JOBSUITE_ARTIFACTS, by
// default controller/testdata/artifacts/TestUIFleet-*.png).
func TestUIFleet(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium is not installed (apt-get install -y chromium, or set JOBSUITE_CHROMIUM); skipping the browser test")
	}
	if testing.Short() {
		t.Skip("-short: skipping the browser test")
	}
	c := startCluster(t, "agent-1", "agent-2")
	// Samples for the queue page's charts every 200ms, not every 10s.
	c.stopController()
	c.cfg.StatsInterval = 200 * time.Millisecond
	c.startController()
	c.waitFor("both agents back", func() bool {
		var agents []api.AgentInfo
		c.getJSON("/agents", &agents)
		return len(agents) == 2
	})

	// 1,000 jobs in one batch: most succeed, every tenth fails, some wait
	// for a GPU agent that never comes, three keep running.
	const total = 1000
	var batch []map[string]any
	gpu := 0
	for i := 1; i <= total; i++ {
		j := map[string]any{"name": fmt.Sprintf("build-%04d", i), "command": "true"}
		switch {
		case i == 5, i == 6, i == 7:
			// Running for the whole test: at load 20 it took over the 2
			// minutes these once slept, and the viewer's page then found
			// soak-0005 completed. The agents' stop kills them.
			j["name"] = fmt.Sprintf("soak-%04d", i)
			j["command"] = `for i in $(seq 1 30); do echo "line $i: tick"; done; sleep 1800`
		case i%50 == 3:
			j["name"], j["labels"] = fmt.Sprintf("train-%04d", i), map[string]string{"gpu": "yes"}
			gpu++
		case i%10 == 0:
			j["name"], j["command"] = fmt.Sprintf("test-%04d", i), "echo boom >&2; exit 1"
		}
		batch = append(batch, j)
	}
	body, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	if code, items, b := c.submitBatch(string(body)); code != http.StatusCreated || len(items) != total {
		t.Fatalf("batch of %d: %d, %d items: %.300s", total, code, len(items), b)
	}
	var st api.StatsView
	poll(t, "the batch to run", waitLimit, func() (bool, string) {
		c.getJSON("/stats", &st)
		return st.Jobs["queued"] == gpu && st.Jobs["running"] == 3 && st.Jobs["dispatched"] == 0 && st.Jobs["waiting"] == 0, fmt.Sprint(st.Jobs)
	})
	soak := uint64(0)
	for _, id := range c.listIDs("/jobs?q=soak-0005") {
		soak = id
	}
	if soak == 0 {
		t.Fatal("no soak-0005 job")
	}

	px := startUIProxy(t, c)
	b := startBrowser(t, chromium, "--ignore-certificate-errors-spki-list="+spkiHash(t, c))
	base := px.url
	shots := func(name string) { screenshots(t, b, name) }

	// The jobs page: the newest 50 of 1,000, the counts per state.
	b.navigate(base + "/ui/")
	b.waitJS("the first page", `document.querySelectorAll('#jobs tbody tr[data-job]').length === 50 &&
		document.querySelector('#counts [data-state="all"] .n') !== null`)
	checkJS(t, b, map[string]string{
		"1,000 jobs in all":        `document.querySelector('#counts [data-state="all"] .n').textContent.replace(/\D/g, '') === '1000'`,
		"the failed ones counted":  fmt.Sprintf(`document.querySelector('#counts [data-state="failed"] .n').textContent.replace(/\D/g, '') === '%d'`, total/10),
		"the position in the list": `document.getElementById('page-info').textContent.replace(/[,.]/g, '') === 'jobs 1–50 of 1000'`,
		"newest first":             fmt.Sprintf(`document.querySelector('#jobs tbody tr').dataset.job === '%d'`, total),
		"no newer page":            `document.getElementById('newer').disabled && !document.getElementById('older').disabled`,
		"agents are links":         `document.querySelector('#jobs tbody td a[href^="/ui/agent?name=agent-"]') !== null`,
		"the state select counts":  `document.querySelector('#state option[value="failed"]').textContent.startsWith('failed (')`,
		"output of finished jobs":  `document.querySelector('#jobs tbody tr td.bytes').textContent !== ''`,
		"signed in by certificate": `document.querySelector('.auth-state').textContent === 'client certificate' && document.querySelector('.auth-who').textContent === 'operator · operator'`,
		"the data is shown":        `getComputedStyle(document.querySelector('main')).display !== 'none'`,
	})
	shots("jobs")

	// Older, twice, then Newer.
	b.click("#older")
	b.waitJS("page 2", fmt.Sprintf(`document.querySelector('#jobs tbody tr').dataset.job === '%d' && location.search.includes('cursor=')`, total-50))
	b.click("#older")
	b.waitJS("page 3", `document.getElementById('page-info').textContent.replace(/[,.]/g, '') === 'jobs 101–150 of 1000'`)
	b.click("#newer")
	b.waitJS("page 2 again", fmt.Sprintf(`document.querySelector('#jobs tbody tr').dataset.job === '%d'`, total-50))

	// Search: by name, by label, by state; a state chip.
	b.click("#q")
	b.call("Input.insertText", map[string]any{"text": "train"}, nil)
	b.waitJS("the train jobs", fmt.Sprintf(`document.querySelectorAll('#jobs tbody tr[data-job]').length === %d &&
		[...document.querySelectorAll('#jobs tbody td.name')].every(td => td.textContent.startsWith('train-')) && location.search.includes('q=train')`, gpu))
	shots("jobs-search")
	b.eval(`(() => { const q = document.getElementById('q'); q.value = 'gpu=yes queued'; q.dispatchEvent(new Event('input')); })()`)
	b.waitJS("the jobs labelled gpu=yes", fmt.Sprintf(`location.search.includes('gpu') && document.querySelectorAll('#jobs tbody tr[data-job]').length === %d`, gpu))
	b.eval(`(() => { const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input')); })()`)
	b.click(`#counts [data-state="failed"]`)
	b.waitJS("the failed jobs", `document.getElementById('state').value === 'failed' &&
		document.querySelectorAll('#jobs tbody tr[data-job]').length === 50 &&
		[...document.querySelectorAll('#jobs tbody .badge')].every(s => s.textContent === 'failed')`)

	// A running job: its live state, output so far, a search in its log.
	b.navigate(fmt.Sprintf("%s/ui/job?id=%d", base, soak))
	b.waitJS("the live state", `document.getElementById('job-status').textContent === 'running' &&
		document.getElementById('live-state') !== null && document.getElementById('live-state').textContent.includes('Elapsed') &&
		document.getElementById('log').textContent.includes('line 30: tick')`)
	checkJS(t, b, map[string]string{
		"output so far":          `/Output[\s\S]*\d+ B so far/.test(document.getElementById('fields').textContent)`,
		"absolute times":         `/Created\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(/.test(document.getElementById('fields').textContent)`,
		"the agent is a link":    `document.querySelector('#attempts td a[href^="/ui/agent?name=agent-"]') !== null`,
		"the RSS from the agent": `/Memory \(RSS\)\d/.test(document.getElementById('live-state').textContent)`,
		"a compact log pane":     `document.getElementById('log').clientHeight <= window.innerHeight * 0.71`,
	})
	b.click("#log-search")
	b.call("Input.insertText", map[string]any{"text": "TICK"}, nil)
	b.waitJS("30 matches", `document.getElementById('log-matches').textContent === '1 of 30'`)
	b.click("#log-next")
	b.waitJS("the second match", `document.getElementById('log-matches').textContent === '2 of 30'`)
	if !b.evalBool(`CSS.highlights.get('log-match').size === 30 && CSS.highlights.get('log-current').size === 1`) {
		t.Error("the matches are not highlighted")
	}
	shots("job-live")

	// Run again: a new job like this one.
	b.click("#again")
	b.waitJS("the copy", fmt.Sprintf(`location.pathname === '/ui/job' && location.search !== '?id=%d' && document.getElementById('job-title').textContent.includes('soak-0005')`, soak))

	// An unknown job: said once, not retried.
	b.navigate(base + "/ui/job?id=999999")
	b.waitJS("no such job", `document.getElementById('banner').textContent.includes('No job 999999') &&
		document.getElementById('log-state').textContent === 'no such job'`)
	if got := b.evalString(`document.getElementById('job-status').textContent`); got != "not found" {
		t.Errorf("the status of an unknown job: %q", got)
	}

	// An agent's page: its jobs, drain and undrain.
	b.navigate(base + "/ui/agent?name=agent-1")
	b.waitJS("agent-1", `document.getElementById('agent-title').textContent === 'Agent agent-1' &&
		document.querySelectorAll('#recent tbody tr[data-job]').length === 20 && !document.getElementById('drain').hidden`)
	b.click("#drain")
	b.waitJS("agent-1 draining", `document.getElementById('agent-state').textContent === 'draining' && !document.getElementById('undrain').hidden`)
	shots("agent-draining")
	b.click("#undrain")
	b.waitJS("agent-1 active", `document.getElementById('agent-state').textContent === 'active' && document.getElementById('undrain').hidden`)
	var running []uint64
	var a api.AgentInfo
	c.getJSON("/agents/agent-1", &a)
	running = a.Jobs
	if len(running) > 0 {
		b.waitJS("its running jobs, live", fmt.Sprintf(`document.querySelector('#running tr[data-job="%d"] td:nth-child(4)').textContent !== '-'`, running[0]))
	}
	shots("agent")

	b.navigate(base + "/ui/agents")
	b.waitJS("the agents", `document.querySelectorAll('#agents tbody a[href="/ui/agent?name=agent-2"]').length === 1`)
	shots("agents")

	// The queue page: counts and two charts.
	b.navigate(base + "/ui/queue")
	b.waitJS("the charts", `document.querySelectorAll('#chart-depth path[data-series]').length === 4 &&
		document.querySelectorAll('#chart-rate path[data-series]').length === 2 &&
		document.querySelector('#cards [data-state="completed"] .n').textContent.replace(/\D/g, '') !== '0'`)
	c.getJSON("/stats", &st)
	checkJS(t, b, map[string]string{
		"the slots":  fmt.Sprintf(`document.getElementById('slots').textContent.startsWith('%d of 8 slots busy on 2 agents')`, st.Agents.SlotsUsed),
		"the queued": fmt.Sprintf(`document.getElementById('depth').textContent.startsWith('high 0, mid %d')`, gpu),
	})
	shots("queue")

	// The audit page: the drain, the undrain, the resubmission.
	b.navigate(base + "/ui/audit")
	b.waitJS("the audit entries", `['drain', 'undrain', 'resubmit', 'submit'].every(a => document.querySelector('#audit tr[data-action="' + a + '"]') !== null)`)
	shots("audit")

	// Straight to the controller without a certificate: not signed in,
	// nothing shown. A sign-in link's token signs in, and leaves the
	// address bar; signing out hides the data again.
	viewerTok, operatorTok := createToken(t, c, "viewer"), createToken(t, c, "operator")
	b.navigate(c.base + "/ui/")
	b.waitJS("not signed in", `document.querySelector('.auth-state').textContent === 'not signed in' &&
		getComputedStyle(document.querySelector('main')).display === 'none' && !document.getElementById('signin').hidden &&
		document.getElementById('banner').textContent.includes('in the field above')`)
	shots("signed-out")
	// (On the page already open: only the fragment changes, no load.)
	b.call("Page.navigate", map[string]any{"url": c.base + "/ui/#token=" + operatorTok}, nil)
	b.waitJS("signed in by the link", `location.hash === '' && document.querySelector('.auth-state').textContent === 'signed in with a token' &&
		document.querySelector('.auth-who').textContent === 'ui-operator · operator' && document.querySelectorAll('#jobs tbody tr[data-job]').length === 50`)
	b.click(".auth button") // sign out
	b.waitJS("signed out, the jobs hidden", `sessionStorage.getItem('jobsuite.token') === null &&
		document.querySelector('.auth-state').textContent === 'not signed in' && getComputedStyle(document.querySelector('main')).display === 'none'`)

	// A viewer sees everything but the buttons that change things.
	b.click("#token")
	b.call("Input.insertText", map[string]any{"text": viewerTok}, nil)
	b.click("#signin button[type=submit]")
	b.navigate(fmt.Sprintf("%s/ui/job?id=%d", c.base, soak))
	b.waitJS("the job as a viewer", `document.querySelector('.auth-who').textContent === 'ui-viewer · viewer' &&
		document.getElementById('job-status').textContent === 'running' && document.getElementById('cancel').hidden && document.getElementById('again').hidden`)

	if errs := b.failures(); len(errs) > 0 {
		t.Errorf("the browser reported errors:\n%s", strings.Join(errs, "\n"))
	}
}

// checkJS evaluates each check in the page and reports those not true.
func checkJS(t *testing.T, b *browser, checks map[string]string) {
	t.Helper()
	for what, expr := range checks {
		if !b.evalBool(expr) {
			t.Errorf("%s: false: %s", what, expr)
		}
	}
}

// screenshots saves the page as NAME-light.png, NAME-dark.png and
// NAME-phone.png (390 CSS pixels wide, light).
func screenshots(t *testing.T, b *browser, name string) {
	t.Helper()
	settle := `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`
	scheme := func(s string) {
		b.call("Emulation.setEmulatedMedia", map[string]any{"features": []map[string]string{{"name": "prefers-color-scheme", "value": s}}}, nil)
	}
	scheme("light")
	b.waitJS("the page to settle", settle)
	b.screenshot(name + "-light.png")
	scheme("dark")
	b.waitJS("dark mode", `matchMedia('(prefers-color-scheme: dark)').matches`)
	b.waitJS("the page to settle", settle)
	b.screenshot(name + "-dark.png")
	scheme("light")
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}, nil)
	b.waitJS("a phone's width", `window.innerWidth === 390`)
	b.waitJS("the page to settle", settle)
	b.screenshot(name + "-phone.png")
	b.call("Emulation.clearDeviceMetricsOverride", nil, nil)
	b.waitJS("the desktop width again", `window.innerWidth > 390`)
}
