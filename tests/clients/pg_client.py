"""psycopg against Grove's Postgres port, as an application would use it.

Each command prints one JSON document on stdout for the Rust test that ran it to
compare with what it computed itself:
    pg_client.py queries PORT           parameters, column types, catalogue browsing
    pg_client.py cancel PORT SLOW_SQL   a cancel request and a statement timeout
    pg_client.py login PORT USER PASSWORD
    pg_client.py stream PORT SQL        the rows of a large answer, read as they come
"""

import json
import sys
import threading
from datetime import datetime, timezone

import psycopg


def connect(port, **kwargs):
    return psycopg.connect(host="127.0.0.1", port=port, dbname="druid",
                           user=kwargs.pop("user", "grove"), connect_timeout=10, **kwargs)


def value(v):
    if isinstance(v, datetime):
        return {"timestamp": v.isoformat(timespec="milliseconds"), "tz": v.tzinfo is not None}
    return v


def rows(cursor):
    return [[value(v) for v in row] for row in cursor.fetchall()]


def queries(port):
    out = {}
    # Not autocommit: psycopg wraps the statements in BEGIN ... and Grove must accept it.
    with connect(port) as conn:
        cur = conn.cursor()
        since = datetime(2024, 6, 5, tzinfo=timezone.utc)
        cur.execute(
            "SELECT country, COUNT(*) AS n, SUM(revenue) AS revenue FROM events "
            "WHERE device = %s AND __time >= %s GROUP BY country ORDER BY country",
            ("mobile", since),
        )
        out["by_country"] = rows(cur)
        out["by_country_columns"] = [c.name for c in cur.description]
        # The same statement again, prepared on the server this time, other values.
        cur.execute(
            "SELECT COUNT(*) FROM events WHERE status = %s AND latency_ms > %s",
            (404, 100), prepare=True)
        out["prepared_first"] = cur.fetchone()[0]
        cur.execute(
            "SELECT COUNT(*) FROM events WHERE status = %s AND latency_ms > %s",
            (200, 1000), prepare=True)
        out["prepared_second"] = cur.fetchone()[0]
        cur.execute(
            "SELECT __time, country, referrer, status, latency_ms, revenue, session_seconds "
            "FROM events ORDER BY __time, user_id LIMIT 5")
        out["first_rows"] = rows(cur)
        out["first_rows_types"] = [c.type_code for c in cur.description]
        binary = conn.cursor(binary=True)
        binary.execute(
            "SELECT __time, country, referrer, status, revenue FROM events "
            "ORDER BY __time, user_id LIMIT 5")
        out["first_rows_binary"] = rows(binary)
        cur.execute("SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema = 'druid' ORDER BY table_name")
        out["tables"] = rows(cur)
        cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'events' ORDER BY ordinal_position")
        out["columns"] = rows(cur)
        # What a JDBC / DBeaver catalogue browse asks first.
        cur.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'v') AND n.nspname = 'druid' ORDER BY 2")
        out["pg_class"] = rows(cur)
        cur.execute("SELECT a.attname FROM pg_catalog.pg_attribute a "
                    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                    "WHERE c.relname = 'events' AND a.attnum > 0 ORDER BY a.attnum")
        out["pg_attribute"] = [r[0] for r in cur.fetchall()]
        cur.execute("SHOW server_version")
        out["server_version"] = cur.fetchone()[0]
        try:
            cur.execute("SELECT * FROM no_such_table")
        except psycopg.Error as e:
            out["missing_table"] = {"sqlstate": e.sqlstate, "message": str(e)}
        conn.rollback()
        cur.execute("SELECT COUNT(*) FROM events")
        out["after_error"] = cur.fetchone()[0]
    return out


def stopped(cur, slow):
    """Runs `slow`, which must be stopped: the reason it was, or "finished"."""
    try:
        cur.execute(slow)
        return "finished"
    except psycopg.errors.QueryCanceled as e:
        return str(e)


def cancel(port, slow):
    out = {}
    with connect(port, autocommit=True) as conn:
        cur = conn.cursor()
        threading.Timer(1.0, conn.cancel).start()
        out["cancelled"] = stopped(cur, slow)
        cur.execute("SELECT COUNT(*) FROM events")
        out["after_cancel"] = cur.fetchone()[0]
        cur.execute("SET statement_timeout = '500ms'")
        cur.execute("SHOW statement_timeout")
        out["statement_timeout"] = cur.fetchone()[0]
        out["timed_out"] = stopped(cur, slow)
        cur.execute("SET statement_timeout = 0")
        cur.execute("SELECT COUNT(*) FROM events")
        out["after_timeout"] = cur.fetchone()[0]
    return out


def login(port, user, password):
    try:
        with connect(port, user=user, password=password or None) as conn:
            return {"ok": conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
    except psycopg.OperationalError as e:
        return {"refused": str(e)}


def stream(port, sql):
    """Reads the answer row by row (libpq's single-row mode), keeping none."""
    rows, chars = 0, 0
    with connect(port, autocommit=True) as conn:
        for row in conn.cursor().stream(sql):
            rows += 1
            chars += sum(len(str(v)) for v in row)
    return {"rows": rows, "chars": chars}


def main():
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "queries":
        out = queries(port)
    elif command == "cancel":
        out = cancel(port, sys.argv[3])
    elif command == "stream":
        out = stream(port, sys.argv[3])
    elif command == "login":
        out = login(port, sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(f"unknown command {command}")
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
