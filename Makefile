# The README's two commands are `make run` and `make test`; each is exactly
# the go command it names, so either form works on a fresh clone.

GO ?= go

.PHONY: help run test test-kafka lint fuzz build chaos chaos-bugs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

run: ## run the whole registry embedded: go run ./cmd/registry dev
	$(GO) run ./cmd/registry dev

test: ## run every test with the race detector: go test -race ./...
	$(GO) test -race ./...

# The packages whose tests talk to Kafka (through internal/testenv), and the
# launcher's own tests.
KAFKA_PKGS = $$($(GO) list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | awk '/internal\/testenv|stacktest/ {print $$1}') ./internal/kafkalaunch/

test-kafka: ## the Kafka-dependent tests on Apache Kafka from jars, no Docker (TEST_KAFKA=apache; needs java 17+ and mvn)
	TEST_KAFKA=apache $(GO) test -race -timeout 30m $(KAFKA_PKGS)

lint: ## gofmt, go vet, and go mod tidy leaving nothing to change
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags failpoints,chaosbug ./cmd/registry ./projector
	$(GO) mod tidy -diff

fuzz: ## fuzz the username policy (version 2) for a fixed number of runs (FUZZRUNS=2000000x)
	$(GO) test -run='^$$' -fuzz=FuzzNormalize -fuzztime=$(or $(FUZZRUNS),2000000x) ./claims/username/

build: ## build bin/registry
	$(GO) build -o bin/registry ./cmd/registry

chaos: ## fault-injection run with the history checker (SEED=1 DURATION=2m CLIENTS=8 KAFKA=kfake|apache UPGRADE=1); see docs/guarantees.md
	$(GO) build -o bin/chaos ./cmd/chaos
	./bin/chaos --seed $(or $(SEED),1) --duration $(or $(DURATION),2m) --clients $(or $(CLIENTS),8) --kafka $(or $(KAFKA),kfake) --upgrade=$(if $(filter 1,$(UPGRADE)),true,false)

chaos-bugs: ## build -tags failpoints,chaosbug with each deliberate bug (fence, ledger, offset); the checker must report every one (exit status 3)
	@# go run reports any failure of the program as exit status 1, so the
	@# harness is built and run directly: 3 (anomalies) must reach the test.
	@# Every bug runs even after one is missed; the target fails at the end.
	$(GO) build -o bin/chaos ./cmd/chaos
	@summary=""; missed=""; \
	for bug in fence ledger offset; do \
	  ./bin/chaos --bug $$bug --seed $(or $(SEED),1) --duration $(or $(DURATION),45s) --clients $(or $(CLIENTS),8); \
	  st=$$?; if [ $$st -eq 3 ]; then line="$$bug caught"; else line="$$bug NOT caught (exit $$st)"; missed="$$missed $$bug"; fi; \
	  echo "chaos-bugs: $$line"; summary="$$summary\n  $$line"; \
	done; \
	printf "chaos-bugs:$$summary\n"; \
	if [ -n "$$missed" ]; then echo "chaos-bugs: FAIL, not caught:$$missed"; exit 1; fi; \
	echo "chaos-bugs: OK, every deliberate bug caught"
