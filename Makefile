# Tether — the two commands a new user needs are `make run` and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= /var/tmp/tether-target
# 1883 is often taken by another broker (Mosquitto); pass MQTT_ADDR=0.0.0.0:1883 to use it.
MQTT_ADDR ?= 0.0.0.0:1884
HTTP_ADDR ?= 0.0.0.0:8080
GRPC_ADDR ?= 0.0.0.0:50051
DATA_DIR ?= tether-data

.PHONY: help deps build run test lint fmt check-logs chart-check

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install what the tests need (Python device SDK in .venv)
	@bash scripts/deps.sh

build: ## build everything
	cargo build --workspace --all-targets

run: ## run the whole platform in one process (embedded mode)
	cargo run --release -p tether -- run --data-dir $(DATA_DIR) --mqtt-addr $(MQTT_ADDR) --http-addr $(HTTP_ADDR) --grpc-addr $(GRPC_ADDR)

test: deps chart-check ## run every test (installs what they need first); the scenarios run in both modes
	cargo nextest run --workspace --no-fail-fast
	TETHER_TEST_MODE=cluster cargo nextest run -p tether-tests --test skeleton --no-fail-fast --test-threads 4

chart-check: ## lint, render and validate the Helm chart (fetches helm once into ~/.cache/tether-chart)
	@bash scripts/chart-check.sh

lint: check-logs ## formatting, clippy with warnings as errors, log style
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings -D clippy::todo -D clippy::dbg_macro

fmt: ## format the code
	cargo fmt --all

check-logs: ## log messages are lowercase, without trailing period, with no interpolated ids
	@! grep -rnE '(trace|debug|info|warn|error)!\([^;]*"[A-Z][^"]*"' services --include=*.rs || (echo "log messages must start lowercase" && false)
	@! grep -rnE '(trace|debug|info|warn|error)!\([^;]*"[^"]*\.\s*"\s*\)' services --include=*.rs || (echo "log messages must not end with a period" && false)
	@! grep -rnE '(trace|debug|info|warn|error)!\([^;]*"[^"]*\{[a-z_]*\}[^"]*"' services --include=*.rs || (echo "put values in fields, not in the message" && false)
