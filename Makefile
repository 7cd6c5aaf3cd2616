# outflow — the two quick-start targets are `make demo` and `make test`.
# Both install what they need on a fresh Debian machine with Rust (libpcap-dev via apt-get
# when pkg-config cannot find libpcap; rustfmt/clippy via rustup when missing).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)
BENCH_FILE ?= target/bench/mixed-1g.pcap
BENCH_SIZE ?= 1G

.PHONY: deps test-deps demo test bench bench-e2e clean

deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libpcap; then \
		echo "libpcap not found by pkg-config: installing libpcap-dev"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq pkg-config libpcap-dev; \
	fi
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

## The live-capture test needs tcpreplay and iproute2 (it skips itself when not root).
test-deps: deps
	@if [ "$$(id -u)" = 0 ] && { ! command -v tcpreplay >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; }; then \
		echo "installing tcpreplay and iproute2 for the live-capture test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpreplay iproute2; \
	fi
## tests/ipfix.rs exports a replay to real IPFIX collectors: nfdump's nfcapd and pmacct's
## nfacctd (it skips itself when they are absent).
	@if [ "$$(id -u)" = 0 ] && { ! command -v nfcapd >/dev/null 2>&1 || ! command -v nfacctd >/dev/null 2>&1; }; then \
		echo "installing nfdump and pmacct for the IPFIX export test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nfdump pmacct; } || \
			echo "nfdump/pmacct unavailable: tests/ipfix.rs will skip its collector checks"; \
	fi
## tests/bus.rs runs sensors and correlators against a real NATS JetStream server
## (nats-server -js on a loopback port; it skips itself when the server is absent).
	@if [ "$$(id -u)" = 0 ] && ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then \
		echo "installing nats-server for the event-bus test"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; } || \
			echo "nats-server unavailable: tests/bus.rs will skip its bus checks"; \
	fi
## tests/monitoring.rs checks deploy/prometheus/ with promtool. It is taken out of Debian's
## prometheus package without installing that (no service started, no web-UI dependencies):
## one static binary in target/tools.
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x target/tools/promtool ]; then \
		echo "fetching promtool from Debian's prometheus package into target/tools"; \
		rm -rf target/tools/deb && mkdir -p target/tools/deb && cd target/tools/deb && \
		{ apt-get download prometheus >/dev/null 2>&1 || \
		  { $(SUDO) apt-get update -qq && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool ../promtool && \
		cd .. && rm -rf deb || echo "promtool unavailable: tests/monitoring.rs will skip its promtool checks"; \
	fi

## Replay the bundled demo capture: a 150 MB upload among ordinary traffic.
demo: deps
	$(CARGO) build --release --bin outflow
	./target/release/outflow replay --alerts-out - pcaps/demo.pcap

## Formatting, lints and the whole test suite.
test: test-deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets
	$(CARGO) test --doc

## Criterion micro-benchmarks (decode + flow update).
bench: deps
	$(CARGO) bench --bench pipeline

## End-to-end cost in CPU-seconds on the flow-heavy, flood and mixed captures: the libpcap
## read-only floor, softflowd and outflow replay (scripts/bench-e2e.sh; ROUNDS, TIMEOUT,
## CAPTURES, FLOWS_OUT pass through). softflowd comes from Debian's package, installed only
## when root or with sudo; without it the script skips its rows.
bench-e2e: deps
	@if ! command -v softflowd >/dev/null 2>&1 && [ ! -x /usr/sbin/softflowd ]; then \
		if [ "$$(id -u)" = 0 ] || [ -n "$(SUDO)" ]; then \
			echo "softflowd not found: installing it"; \
			$(SUDO) apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq softflowd || \
			echo "softflowd unavailable: bench-e2e will skip it"; \
		else \
			echo "softflowd not found and not root (no sudo): bench-e2e will skip it"; \
		fi; \
	fi
	BENCH_FILE=$(BENCH_FILE) BENCH_SIZE=$(BENCH_SIZE) ./scripts/bench-e2e.sh

clean:
	$(CARGO) clean
