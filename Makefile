# jobsuite — targets a newcomer can guess.
GO        ?= go
BIN       ?= bin/jobsuite
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X jobsuite/cli.Version=$(VERSION) -X jobsuite/agent.Version=$(VERSION)
FUZZTIME  ?= 30s

.PHONY: build dev test bench bench-go fuzz lint clean

build: ## build bin/jobsuite
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

dev: build ## controller + 2 local agents + throwaway PKI in .jobsuite-dev
	$(BIN) dev

test: ## the full test suite, as CI runs it
	$(GO) test -race -timeout 25m ./...

bench: ## the benchmark table vs this machine's limits (BENCHFLAGS=-full: 1M jobs, 10k agents); see BENCHMARKS.md
	$(GO) run ./bench/cmd/jobsuite-bench $(BENCHFLAGS)

bench-go: ## the packages' Go micro-benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz: ## each fuzz target for FUZZTIME (a duration, or a count such as 20000x; CI uses a count: golang/go#75804)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./protocol/
	$(GO) test -run '^$$' -fuzz '^FuzzReadLog$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeCursor$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJobFast$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEventFast$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeAuditFast$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzAppendString$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmit$$' -fuzztime $(FUZZTIME) ./controller/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSubmitFast$$' -fuzztime $(FUZZTIME) ./controller/
	$(GO) test -run '^$$' -fuzz '^FuzzFirstWords$$' -fuzztime $(FUZZTIME) ./controller/
	$(GO) test -run '^$$' -fuzz '^FuzzValidUTF8$$' -fuzztime $(FUZZTIME) ./controller/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRound$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRoundBody$$' -fuzztime $(FUZZTIME) ./controller/store/
	$(GO) test -run '^$$' -fuzz '^FuzzReadSnapshot$$' -fuzztime $(FUZZTIME) ./controller/cluster/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./controller/cronspec/
	$(GO) test -run '^$$' -fuzz '^FuzzJSONString$$' -fuzztime $(FUZZTIME) ./agent/

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
