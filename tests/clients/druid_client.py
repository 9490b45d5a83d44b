"""pydruid against Grove's Druid HTTP API, as a Druid user's scripts and Superset use it.

Each command prints one JSON document on stdout for the Rust test that ran it to
compare with what it computed itself:
    druid_client.py sql PORT        pydruid's DB-API and its SQLAlchemy dialect
    druid_client.py native PORT     pydruid's native client, answers as pandas frames
"""

import json
import sys

import sqlalchemy
from pydruid.db import connect
from pydruid.db.exceptions import ProgrammingError
from sqlalchemy import inspect, text


def dbapi(port):
    out = {}
    conn = connect(host="127.0.0.1", port=port, path="/druid/v2/sql/", scheme="http")
    cur = conn.cursor()
    cur.execute("SELECT device, COUNT(*) AS n FROM events GROUP BY device ORDER BY device")
    out["by_device"] = [list(row) for row in cur.fetchall()]
    out["description"] = [d[0] for d in cur.description]
    cur.execute("SELECT COUNT(*) FROM events WHERE device = %(device)s", {"device": "mobile"})
    out["mobile"] = cur.fetchone()[0]
    try:
        cur.execute("SELECT nope FROM events")
        out["error"] = None
    except ProgrammingError as e:
        out["error"] = str(e)
    return out


def type_name(t):
    """A SQLAlchemy type's name, whether the dialect gave the class or an instance."""
    return t.__name__ if isinstance(t, type) else type(t).__name__


def dialect(port):
    out = {}
    engine = sqlalchemy.create_engine(f"druid://127.0.0.1:{port}/druid/v2/sql/")
    inspector = inspect(engine)
    out["schemas"] = sorted(inspector.get_schema_names())
    out["tables"] = sorted(inspector.get_table_names(schema="druid"))
    out["has_events"] = bool(inspector.has_table("events"))
    out["has_nothing"] = bool(inspector.has_table("nothing"))
    out["columns"] = [
        {"name": c["name"], "type": type_name(c["type"]), "nullable": c["nullable"],
         "default": c["default"]}
        for c in inspector.get_columns("events", schema="druid")
    ]
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT TIME_FLOOR(__time, 'P1D') AS day, COUNT(*) AS n FROM events "
            "GROUP BY 1 ORDER BY 1"))
        out["by_day"] = [[str(r.day), r.n] for r in rows]
        try:
            connection.execute(text("SELEC 1"))
            out["error"] = None
        except sqlalchemy.exc.DBAPIError as e:
            out["error"] = str(e.orig)
    return out


def native(port):
    from pydruid.client import PyDruid
    from pydruid.utils.aggregators import count, longsum
    from pydruid.utils.filters import Dimension

    client = PyDruid(f"http://127.0.0.1:{port}", "druid/v2")
    out = {}
    days = client.timeseries(
        datasource="events",
        granularity="day",
        intervals="2000-01-01/2100-01-01",
        aggregations={"rows": count("count"), "latency": longsum("latency_ms")},
        filter=Dimension("device") == "mobile",
    )
    out["days"] = days.export_pandas().sort_values("timestamp").to_dict(orient="records")
    top = client.topn(
        datasource="events",
        granularity="all",
        intervals="2000-01-01/2100-01-01",
        aggregations={"rows": count("count")},
        dimension="device",
        metric="rows",
        threshold=2,
    )
    out["top"] = top.export_pandas().to_dict(orient="records")
    boundary = client.time_boundary(datasource="events")
    out["boundary"] = boundary.result
    return out


def main():
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "sql":
        print(json.dumps({"dbapi": dbapi(port), "dialect": dialect(port)}))
    elif command == "native":
        print(json.dumps(native(port), default=str))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
