"""The ADBC Flight SQL driver against Grove's Flight SQL port, as an application
would use it.

Each command prints one JSON document on stdout for the Rust test that ran it to
compare with what it computed itself:
    flight_client.py queries URI               parameters, types, catalogue
    flight_client.py session URI               settings and views kept by cookie
    flight_client.py cancel URI SLOW STATUS    a cancel, seen in /status
    flight_client.py timeout URI SLOW SECONDS  a query under a gRPC deadline
    flight_client.py login URI USER PASSWORD
    flight_client.py tls URI CERT
"""

import json
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions
from adbc_driver_manager import Error


def connect(uri, **options):
    return flight_sql.connect(uri, db_kwargs=options, autocommit=True)


def value(v):
    if isinstance(v, datetime):
        return {"timestamp": v.isoformat(timespec="milliseconds"), "tz": v.tzinfo is not None}
    return v


def rows(table):
    return [[value(v) for v in row.values()] for row in table.to_pylist()]


def error(e):
    return str(e)


def queries(uri):
    out = {}
    with connect(uri) as conn:
        cur = conn.cursor()
        since = datetime(2024, 6, 5, tzinfo=timezone.utc)
        by_country = ("SELECT country, COUNT(*) AS n, SUM(revenue) AS revenue FROM events "
                      "WHERE device = ? AND __time >= ? GROUP BY country ORDER BY country")
        cur.execute(by_country, parameters=("mobile", since))
        out["by_country"] = rows(cur.fetch_arrow_table())
        # The same prepared statement, other values.
        counted = "SELECT COUNT(*) AS n FROM events WHERE status = ? AND latency_ms > ?"
        cur.execute(counted, parameters=(404, 100))
        out["prepared_first"] = cur.fetchone()[0]
        cur.execute(counted, parameters=(200, 1000))
        out["prepared_second"] = cur.fetchone()[0]
        cur.execute(
            "SELECT __time, country, referrer, status, latency_ms, revenue, session_seconds "
            "FROM events ORDER BY __time, user_id LIMIT 5")
        first = cur.fetch_arrow_table()
        out["first_rows"] = rows(first)
        out["first_rows_types"] = [str(t) for t in first.schema.types]
        cur.execute("SELECT * FROM events LIMIT 1")
        out["select_star_schema"] = [[f.name, str(f.type)] for f in cur.fetch_arrow_table().schema]
        out["table_schema"] = [[f.name, str(f.type)] for f in conn.adbc_get_table_schema("events")]
        out["table_types"] = sorted(conn.adbc_get_table_types())
        info = conn.adbc_get_info()
        out["vendor_name"] = info["vendor_name"]
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        out["objects"] = [
            [catalog["catalog_name"], schema["db_schema_name"], table["table_name"],
             table["table_type"], [c["column_name"] for c in table["table_columns"]]]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            for table in schema["db_schema_tables"]
        ]
        filtered = conn.adbc_get_objects(depth="tables", table_name_filter="ev%").read_all()
        out["filtered"] = [
            t["table_name"]
            for catalog in filtered.to_pylist()
            for schema in catalog["catalog_db_schemas"]
            for t in schema["db_schema_tables"]
        ]
        try:
            cur.execute("SELECT * FROM no_such_table")
            cur.fetchall()
        except Error as e:
            out["missing_table"] = error(e)
        try:
            cur.execute("SELEC 1")
        except Error as e:
            out["syntax_error"] = error(e)
        cur.execute("SELECT COUNT(*) FROM events")
        out["after_error"] = cur.fetchone()[0]
    return out


def session(uri):
    out = {}
    with connect(uri, **{DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true"}) as conn:
        cur = conn.cursor()
        cur.execute("CREATE VIEW mobile AS SELECT * FROM events WHERE device = 'mobile'")
        cur.fetchall()
        cur.execute("SET datafusion.execution.batch_size = 123")
        cur.fetchall()
        cur.execute("SELECT COUNT(*) FROM mobile")
        out["view_rows"] = cur.fetchone()[0]
        cur.execute("SHOW datafusion.execution.batch_size")
        out["batch_size"] = cur.fetchall()[0][1]
    # Another client, without the session's cookie, sees neither.
    with connect(uri) as conn:
        cur = conn.cursor()
        try:
            cur.execute("SELECT COUNT(*) FROM mobile")
            out["other_client"] = cur.fetchone()[0]
        except Error as e:
            out["other_client"] = error(e)
        cur.execute("SHOW datafusion.execution.batch_size")
        out["other_batch_size"] = cur.fetchall()[0][1]
    return out


def running(status_url):
    with urllib.request.urlopen(status_url, timeout=10) as response:
        return json.load(response)["front_ends"]["flight_sql_running_queries"]


def wait_running(status_url, n):
    """Polls /status until `n` queries send rows; whether that happened within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if running(status_url) == n:
            return True
        time.sleep(0.05)
    return False


def cancel(uri, slow, status_url):
    out = {}
    with connect(uri) as conn:
        cur = conn.cursor()

        def cancel_when_running():
            out["seen_running"] = wait_running(status_url, 1)
            cur.adbc_cancel()

        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        try:
            cur.execute(slow)
            cur.fetchall()
            out["cancelled"] = "finished"
        except Error as e:
            out["cancelled"] = error(e)
        canceller.join()
        out["stopped_on_server"] = wait_running(status_url, 0)
        cur.execute("SELECT COUNT(*) FROM events")
        out["after_cancel"] = cur.fetchone()[0]
    return out


def timeout(uri, slow, seconds):
    out = {}
    options = {}
    if seconds != "none":
        options[DatabaseOptions.TIMEOUT_FETCH.value] = seconds
    with connect(uri, **options) as conn:
        cur = conn.cursor()
        began = time.monotonic()
        try:
            cur.execute(slow)
            cur.fetchall()
            out["stopped"] = "finished"
        except Error as e:
            out["stopped"] = error(e)
        out["seconds"] = time.monotonic() - began
        cur.execute("SELECT COUNT(*) FROM events")
        out["after"] = cur.fetchone()[0]
    return out


def login(uri, user, password):
    options = {}
    if user:
        options["username"] = user
        options["password"] = password
    try:
        with connect(uri, **options) as conn:
            cur = conn.cursor()
            cur.execute("SELECT COUNT(*) FROM events")
            return {"ok": cur.fetchone()[0]}
    except Error as e:
        return {"refused": error(e)}


def tls(uri, cert):
    with open(cert) as f:
        roots = f.read()
    with connect(uri, **{DatabaseOptions.TLS_ROOT_CERTS.value: roots}) as conn:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM events")
        return {"ok": cur.fetchone()[0]}


def main():
    command, uri = sys.argv[1], sys.argv[2]
    if command == "queries":
        out = queries(uri)
    elif command == "session":
        out = session(uri)
    elif command == "cancel":
        out = cancel(uri, sys.argv[3], sys.argv[4])
    elif command == "timeout":
        out = timeout(uri, sys.argv[3], sys.argv[4])
    elif command == "login":
        out = login(uri, sys.argv[3], sys.argv[4])
    elif command == "tls":
        out = tls(uri, sys.argv[3])
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
