# make bench [SF=1] [RUNS=3]: the benchmark suite (benchmarks/run.sh).
# make test: the whole test suite (scripts/test.sh).
SF ?= 1
RUNS ?= 3

.PHONY: bench test
bench:
	benchmarks/run.sh $(SF) $(RUNS)

test:
	scripts/test.sh
