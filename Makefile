# mailguard — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build outputs and downloads live outside the clone, so reruns (and CI) are fast.
export MAILGUARD_CACHE ?= $(HOME)/.cache/mailguard
export CARGO_TARGET_DIR ?= $(MAILGUARD_CACHE)/target
KAFKA_PORT ?= 9092
REGISTRY_PORT ?= 8081
CONFIG ?= config/local.toml
# `make run` talks to the local broker and registry whatever CONFIG says about them.
LOCAL_ENV = MAILGUARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) \
	MAILGUARD_REGISTRY__URL=http://127.0.0.1:$(REGISTRY_PORT)/apis/ccompat/v7

.PHONY: help deps kafka-up kafka-down kafka-status kafka-logs registry-up registry-down topics build run test lint ops-check image bench fuzz fuzz-merge clean-state

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

deps: ## Install what a fresh machine lacks (system packages, Kafka and registry jars)
	@scripts/ensure-deps
	@scripts/kafka-local fetch
	@scripts/registry-local fetch

kafka-up: deps ## Start the local broker on KAFKA_PORT (default 9092)
	scripts/kafka-local up --port $(KAFKA_PORT)

kafka-down: ## Stop the local broker
	scripts/kafka-local down --port $(KAFKA_PORT)

kafka-status: ## Is the local broker running?
	scripts/kafka-local status --port $(KAFKA_PORT)

kafka-logs: ## Tail the local broker's log
	scripts/kafka-local logs --port $(KAFKA_PORT)

registry-up: deps ## Start the local schema registry on REGISTRY_PORT (default 8081)
	scripts/registry-local up --port $(REGISTRY_PORT)

registry-down: ## Stop the local schema registry
	scripts/registry-local down --port $(REGISTRY_PORT)

build: deps ## Build mailguard
	cargo build --bin mailguard

topics: build ## Create every topic of CONFIG on the local broker
	$(LOCAL_ENV) $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) topics

HTTP_PORT ?= 8080

run: kafka-up registry-up build ## Run mailguard on the local broker and registry (topics created, API on with a dev token); Ctrl-C stops it
	$(LOCAL_ENV) $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) topics
	@echo "make run: admin API on http://127.0.0.1:$(HTTP_PORT)/v1, token (SUPPORT, every tenant) in $$(scripts/dev-token --path)"
	$(LOCAL_ENV) MAILGUARD_HTTP__LISTEN=127.0.0.1:$(HTTP_PORT) MAILGUARD_API__ENABLED=true \
		MAILGUARD_API__TOKENS='$(shell scripts/dev-token)' \
		exec $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) run

test: deps ## Everything: fmt, clippy, golden vectors, unit, property, integration and interop tests on fresh brokers and registry
	scripts/test-all

ops-check: ## Alert rule tests (promtool), dashboard queries, helm lint/template + kubernetes-validate, hadolint
	scripts/check-ops

image: ## Build the container image (needs a Docker-compatible builder: IMAGE_BUILDER, default docker)
	$(or $(IMAGE_BUILDER),docker) build -t mailguard:$$(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1) .

lint: ## rustfmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --all-targets --profile test -- -D warnings

bench: deps ## criterion benches (policy, Avro decode, RocksDB), the end-to-end, backtest, hand-over and API view benches
	cargo bench --bench policy --bench avro_decode --bench store
	scripts/bench-e2e
	scripts/bench-handover
	scripts/bench-view

fuzz: ## Fuzz every decoder for FUZZ_RUNS inputs each (default 1 M; needs nightly and cargo-fuzz, installed if missing)
	nice -n 10 scripts/fuzz

fuzz-merge: ## Add the coverage of the last `make fuzz` working corpus to the committed fuzz/corpus
	scripts/fuzz --merge

clean-state: ## Delete local RocksDB state of `make run` (it is a cache of Kafka)
	rm -rf data/state
