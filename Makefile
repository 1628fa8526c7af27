# mailguard — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Build outputs and downloads live outside the clone, so reruns (and CI) are fast.
export MAILGUARD_CACHE ?= $(HOME)/.cache/mailguard
export CARGO_TARGET_DIR ?= $(MAILGUARD_CACHE)/target
KAFKA_PORT ?= 9092
CONFIG ?= config/local.toml

.PHONY: help deps kafka-up kafka-down kafka-status kafka-logs topics build run test test-only lint bench bench-e2e clean-state

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

deps: ## Install what a fresh machine lacks (system packages, Kafka jars)
	@scripts/ensure-deps
	@scripts/kafka-local fetch

kafka-up: deps ## Start the local broker on KAFKA_PORT (default 9092)
	scripts/kafka-local up --port $(KAFKA_PORT)

kafka-down: ## Stop the local broker
	scripts/kafka-local down --port $(KAFKA_PORT)

kafka-status: ## Is the local broker running?
	scripts/kafka-local status --port $(KAFKA_PORT)

kafka-logs: ## Tail the local broker's log
	scripts/kafka-local logs --port $(KAFKA_PORT)

build: deps ## Build mailguard
	cargo build --bin mailguard

topics: build ## Create every topic of CONFIG on the local broker
	MAILGUARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) topics

run: kafka-up build ## Run mailguard against the local broker (topics created); Ctrl-C stops it
	MAILGUARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) topics
	MAILGUARD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:$(KAFKA_PORT) exec $(CARGO_TARGET_DIR)/debug/mailguard --config $(CONFIG) run

test: deps ## Everything: fmt, clippy, unit, property and integration tests on a fresh broker
	scripts/test-all

lint: ## rustfmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench: deps ## criterion benches (policy, Avro decode, RocksDB) and the end-to-end bench
	cargo bench --bench policy --bench avro_decode --bench store
	scripts/bench-e2e

clean-state: ## Delete local RocksDB state of `make run` (it is a cache of Kafka)
	rm -rf data/state
