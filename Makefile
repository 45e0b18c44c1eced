# The README's two commands are `make run` and `make test`; each is exactly
# the go command it names, so either form works on a fresh clone.

GO ?= go

.PHONY: help run test lint fuzz build chaos chaos-bugs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

run: ## run the whole registry embedded: go run ./cmd/registry dev
	$(GO) run ./cmd/registry dev

test: ## run every test with the race detector: go test -race ./...
	$(GO) test -race ./...

lint: ## gofmt, go vet, and go mod tidy leaving nothing to change
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags failpoints,chaosbug ./cmd/registry ./projector
	$(GO) mod tidy -diff

fuzz: ## fuzz the username policy (version 2) for a fixed number of runs (FUZZRUNS=2000000x)
	$(GO) test -run='^$$' -fuzz=FuzzNormalize -fuzztime=$(or $(FUZZRUNS),2000000x) ./claims/username/

build: ## build bin/registry
	$(GO) build -o bin/registry ./cmd/registry

chaos: ## fault-injection run with the history checker (SEED=1 DURATION=2m CLIENTS=8); see docs/guarantees.md
	$(GO) run ./cmd/chaos --seed $(or $(SEED),1) --duration $(or $(DURATION),2m) --clients $(or $(CLIENTS),8)

chaos-bugs: ## build -tags failpoints,chaosbug with each deliberate bug (fence, ledger, offset); the checker must report every one
	@for bug in fence ledger offset; do \
	  $(GO) run ./cmd/chaos --bug $$bug --seed $(or $(SEED),1) --duration $(or $(DURATION),60s) --clients $(or $(CLIENTS),8); \
	  st=$$?; if [ $$st -eq 3 ]; then echo "chaos-bugs: $$bug caught"; else echo "chaos-bugs: $$bug NOT caught (exit $$st)"; exit 1; fi; \
	done
