"""The other engines of the benchmark suite, run by `grove-bench suite`:

    engines.py run ENGINE --parquet DIR --work DIR --threads N --runs N < queries.json
        ENGINE: duckdb (over the Parquet files), duckdb-native (its own tables),
                chdb (ClickHouse over the Parquet files), chdb-mergetree (MergeTree tables)
        queries.json: [{"name": ..., "statements": [...], "answer": index}, ...]
        prints {"engine", "version", "load_seconds", "queries": {name: {"ms": [...],
                "columns": [...], "rows": [[...]]} or {"error": ...}}}
    engines.py chart RESULTS.json OUT.png

Each query runs once to warm up, then `runs` times; the rows are those of the last
run. Values are written as JSON numbers or text (dates as YYYY-MM-DD) for the runner
to compare with the other engines' answers.
"""

import datetime
import decimal
import json
import os
import re
import sys
import time

TABLES = ["lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region"]
# The date column each native table is sorted by, as Grove partitions them.
SORT_KEYS = {"lineitem": "l_shipdate", "orders": "o_orderdate"}


def value(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, datetime.datetime):
        return v.isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    return v


class DuckDb:
    def __init__(self, parquet, work, threads, native):
        import duckdb
        self.version = duckdb.__version__
        path = os.path.join(work, "duckdb-native.db") if native else ":memory:"
        done = os.path.join(work, "duckdb-native.done")
        began = time.monotonic()
        self.conn = duckdb.connect(path)
        self.conn.execute(f"SET threads = {threads}")
        if not native or not os.path.exists(done):
            kind = "TABLE" if native else "VIEW"
            for table in TABLES:
                source = os.path.join(parquet, f"{table}.parquet")
                order = f" ORDER BY {SORT_KEYS[table]}" if native and table in SORT_KEYS else ""
                self.conn.execute(
                    f"CREATE OR REPLACE {kind} {table} AS SELECT * FROM read_parquet('{source}'){order}")
            if native:
                self.conn.execute("CHECKPOINT")
                open(done, "w").close()
        self.load_seconds = time.monotonic() - began

    def run(self, statements, answer):
        rows, columns = None, None
        for i, statement in enumerate(statements):
            cursor = self.conn.execute(statement)
            if i == answer:
                rows = cursor.fetchall()
                columns = [d[0] for d in cursor.description]
        return columns, rows


def decimal_literals(text):
    """ClickHouse reads `0.06` as a Float64, so that `.06 + 0.01` is not `0.07` (TPC-H
    Q6 then misses rows), and refuses `.06` without its leading digit: each literal
    with a point becomes the exact decimal it denotes, as in standard SQL."""
    def exact(match):
        literal = match.group(1)
        whole, fraction = literal.split(".")
        return f"toDecimal128('{whole or 0}.{fraction}', {len(fraction)})"
    return re.sub(r"(?<![\w.'])(\d*\.\d+)(?![\w.])", exact, text)


class ChDb:
    def __init__(self, parquet, work, threads, mergetree):
        import chdb
        from chdb import session
        self.version = chdb.__version__
        path = os.path.join(work, "chdb-mergetree") if mergetree else None
        done = os.path.join(work, "chdb-mergetree.done")
        began = time.monotonic()
        self.session = session.Session(path) if path else session.Session()
        # Standard SQL: NULL, not 0, for an outer join's row without a match and for
        # the SUM of no rows.
        self.settings = (f"SETTINGS max_threads = {threads}, join_use_nulls = 1, "
                         "aggregate_functions_null_for_empty = 1")
        if not mergetree or not os.path.exists(done):
            for table in TABLES:
                source = os.path.join(parquet, f"{table}.parquet")
                if mergetree:
                    key = SORT_KEYS.get(table, "tuple()")
                    self.session.query(f"DROP TABLE IF EXISTS {table}")
                    self.session.query(
                        f"CREATE TABLE {table} ENGINE = MergeTree ORDER BY {key} "
                        f"AS SELECT * FROM file('{source}', Parquet)")
                else:
                    self.session.query(
                        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM file('{source}', Parquet)")
            if mergetree:
                for table in TABLES:
                    self.session.query(f"OPTIMIZE TABLE {table} FINAL")
                open(done, "w").close()
        self.load_seconds = time.monotonic() - began

    def run(self, statements, answer):
        rows, columns = None, None
        for i, statement in enumerate(statements):
            text = decimal_literals(statement.strip().rstrip(";"))
            if i == answer:
                result = self.session.query(f"{text} {self.settings}", "JSONCompact")
                data = json.loads(result.bytes() or b"{}")
                columns = [c["name"] for c in data.get("meta", [])]
                rows = data.get("data", [])
            else:
                self.session.query(text)
        return columns, rows


def run(engine, parquet, work, threads, runs):
    queries = json.load(sys.stdin)
    os.makedirs(work, exist_ok=True)
    if engine in ("duckdb", "duckdb-native"):
        db = DuckDb(parquet, work, threads, native=engine == "duckdb-native")
    elif engine in ("chdb", "chdb-mergetree"):
        db = ChDb(parquet, work, threads, mergetree=engine == "chdb-mergetree")
    else:
        raise SystemExit(f"unknown engine {engine}")
    out = {"engine": engine, "version": db.version, "load_seconds": db.load_seconds,
           "threads": threads, "queries": {}}
    for query in queries:
        times = []
        try:
            for i in range(runs + 1):
                began = time.monotonic()
                columns, rows = db.run(query["statements"], query["answer"])
                if i > 0:
                    times.append((time.monotonic() - began) * 1000.0)
            out["queries"][query["name"]] = {
                "ms": times, "columns": columns,
                "rows": [[value(v) for v in row] for row in rows],
            }
        except Exception as e:  # An engine that cannot run a query: reported, not fatal.
            out["queries"][query["name"]] = {"error": str(e).splitlines()[0][:300]}
        print(f"{engine} {query['name']}: {out['queries'][query['name']].get('ms', 'error')}",
              file=sys.stderr)
    json.dump(out, sys.stdout)


def chart(results_path, out_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_path) as f:
        results = json.load(f)
    engines = results["engines"]
    queries = [q["name"] for q in results["queries"]]
    width = 0.8 / len(engines)
    fig, ax = plt.subplots(figsize=(max(12, len(queries) * 0.6), 6))
    for i, engine in enumerate(engines):
        heights = [q["median_ms"].get(engine) or 0 for q in results["queries"]]
        ax.bar([x + i * width for x in range(len(queries))], heights, width, label=engine)
    ax.set_yscale("log")
    ax.set_ylabel("median ms (log scale)")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(queries))])
    ax.set_xticklabels(queries, rotation=60, ha="right", fontsize=8)
    machine = results["machine"]
    ax.set_title(f"TPC-H SF{results['scale']} and Druid's benchmark, {machine['cores']} cores, "
                 f"{results['threads']} threads per engine ({results['date']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


def main():
    if sys.argv[1] == "run":
        args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        run(sys.argv[2], args["--parquet"], args["--work"], int(args["--threads"]),
            int(args["--runs"]))
    elif sys.argv[1] == "chart":
        chart(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
