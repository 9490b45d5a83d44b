//! Flight SQL on `grove start`, driven by the ADBC Flight SQL driver
//! (`tests/clients/flight_client.py`, in the virtual environment `scripts/deps.sh`
//! makes) and by arrow-flight's own client for what ADBC does not expose: the schema
//! a FlightInfo announces, `CancelFlightInfo`, and malformed requests. Expected values
//! are computed here from the sample CSV.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use arrow_flight::error::FlightError;
use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{CancelStatus, FlightDescriptor, Ticket};
use futures::StreamExt;
use grove_e2e::flight::{
    cancel, channel, client, descriptor, fetch, runtime, statement, status, ticket,
};
use grove_e2e::start::{
    ENDLESS, GroveStart, by_time, check_parameter_queries, csv_rows, int, python_client,
    self_signed,
};
use grove_e2e::{SHELL_SCRIPT, check_shell_session};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;

fn flight_client(args: &[&str]) -> Value {
    python_client("flight_client.py", args)
}

fn uri(g: &GroveStart) -> String {
    format!("grpc://127.0.0.1:{}", g.flight_port)
}

/// Waits until `n` Flight SQL queries send rows.
fn wait_running(g: &GroveStart, n: i64) -> bool {
    g.wait_status(|status| status["front_ends"]["flight_sql_running_queries"] == n)
}

#[test]
fn adbc_binds_parameters_reads_every_type_and_browses_the_catalogue() {
    let g = GroveStart::new(2_000);
    let rows = csv_rows(&g);
    let got = flight_client(&["queries", &uri(&g)]);

    // Parameters of a prepared statement: a string and a timestamp.
    check_parameter_queries(&rows, &got);

    // Every kind of column, dictionary strings still dictionaries.
    let first = by_time(&rows);
    for (i, row) in got["first_rows"].as_array().unwrap().iter().enumerate() {
        let csv = first[i];
        let time = format!("{}+00:00", csv["timestamp"].trim_end_matches('Z'));
        let nullable = |text: &str| match text {
            "" => Value::Null,
            t => json!(t),
        };
        assert_eq!(row[0], json!({ "timestamp": time, "tz": true }), "row {i}");
        assert_eq!(row[1], json!(csv["country"]));
        assert_eq!(row[2], nullable(&csv["referrer"]));
        assert_eq!(row[3], json!(int(csv, "status")));
        assert_eq!(row[4], json!(int(csv, "latency_ms")));
        match csv["revenue"].as_str() {
            "" => assert!(row[5].is_null()),
            r => assert_eq!(row[5], json!(r.parse::<f64>().unwrap())),
        }
        let session: f64 = csv["session_seconds"].parse().unwrap();
        assert!((row[6].as_f64().unwrap() - session).abs() < 1e-3);
    }
    let dictionary = "dictionary<values=string, indices=int32, ordered=0>";
    assert_eq!(
        got["first_rows_types"],
        json!([
            "timestamp[ms, tz=UTC]",
            dictionary,
            dictionary,
            "int64",
            "int64",
            "double",
            "float"
        ])
    );

    // The catalogue: GetTables with its schemas, GetDbSchemas, GetCatalogs.
    assert_eq!(got["table_schema"], got["select_star_schema"]);
    let mut csv_columns: Vec<String> = rows[0].keys().cloned().collect();
    csv_columns.retain(|c| c != "timestamp");
    let objects = got["objects"].as_array().unwrap();
    let events = objects
        .iter()
        .find(|o| o[2] == "events")
        .unwrap_or_else(|| panic!("{objects:?}"));
    assert_eq!(
        events.as_array().unwrap()[0..4],
        [
            json!("druid"),
            json!("druid"),
            json!("events"),
            json!("TABLE")
        ]
    );
    let columns: Vec<&str> = events[4]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(columns[0], "__time");
    for column in &csv_columns {
        assert!(
            columns.contains(&column.as_str()),
            "{column} in {columns:?}"
        );
    }
    assert!(
        objects
            .iter()
            .any(|o| o[1] == "sys" && o[2] == "segments" && o[3] == "SYSTEM TABLE"),
        "{objects:?}"
    );
    assert_eq!(got["filtered"], json!(["events"]));
    assert_eq!(
        got["table_types"],
        json!(["LOCAL TEMPORARY", "SYSTEM TABLE", "TABLE", "VIEW"])
    );
    assert_eq!(got["vendor_name"], json!("Grove"));

    // Errors name what is wrong, and the connection goes on.
    let missing = got["missing_table"].as_str().unwrap();
    assert!(
        missing.contains("INVALID_ARGUMENT") && missing.contains("no_such_table"),
        "{missing}"
    );
    let syntax = got["syntax_error"].as_str().unwrap();
    assert!(syntax.contains("SELEC"), "{syntax}");
    assert_eq!(got["after_error"], json!(rows.len()));
}

#[test]
fn a_session_kept_by_its_cookie_keeps_views_and_settings_for_that_client_only() {
    let g = GroveStart::new(1_000);
    let mobile = csv_rows(&g)
        .iter()
        .filter(|r| r["device"] == "mobile")
        .count();
    let got = flight_client(&["session", &uri(&g)]);
    assert_eq!(got["view_rows"], json!(mobile));
    assert_eq!(got["batch_size"], json!("123"));
    let other = got["other_client"].as_str().unwrap();
    assert!(
        other.contains("mobile") && other.contains("not found"),
        "{other}"
    );
    assert_eq!(got["other_batch_size"], json!("8192"));
}

/// A statement is planned once, at GetFlightInfo, in the session it was asked in: its
/// first DoGet (by the same user, whatever the session) runs that plan; a later one
/// plans the text again, in its own session.
#[test]
fn the_first_fetch_runs_the_plan_made_for_the_flight_info() {
    let g = GroveStart::new(1_000);
    let mobile = csv_rows(&g)
        .iter()
        .filter(|r| r["device"] == "mobile")
        .count();
    runtime().block_on(async {
        // A view in a session of its own, kept by its cookie.
        let mut owner = client(&g).await;
        let created = owner
            .inner_mut()
            .get_flight_info(statement(
                "CREATE VIEW mine AS SELECT * FROM events WHERE device = 'mobile'",
            ))
            .await
            .unwrap();
        let cookie = created
            .metadata()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("the session's cookie")
            .to_string();
        owner.add_header("cookie", &cookie).unwrap();
        let info = owner
            .get_flight_info(statement("SELECT COUNT(*) AS n FROM mine"))
            .await
            .unwrap();

        // Another client, without the cookie: its session has no view `mine`, yet
        // the first fetch answers, from the plan made in the owner's session.
        let mut other = client(&g).await;
        let (_, batches) = fetch(&mut other, &info).await;
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .expect("a count")
            .value(0);
        assert_eq!(n as usize, mobile);
        // The plan is used once: fetched again, the text is planned in the fetching
        // session, which has no such view.
        let again = other.do_get(ticket(&info)).await.map(|_| ()).unwrap_err();
        let again = status(again);
        assert!(again.message().contains("mine"), "{again:?}");
    });
}

#[test]
fn the_flight_info_schema_is_the_schema_the_rows_come_with() {
    let g = GroveStart::new(1_000);
    let rows = csv_rows(&g);
    runtime().block_on(async {
        let mut client = client(&g).await;
        for sql in [
            "SELECT * FROM events",
            "SELECT country, COUNT(*) AS n, MAX(__time) AS last FROM events GROUP BY country",
            "SELECT __time, revenue, session_seconds FROM events WHERE status = -1",
            "SELECT COUNT(*) AS n FROM events",
            "SELECT * FROM sys.segments",
            "SELECT CAST(1.5 AS DECIMAL(10, 2)) AS d, 'x' AS s, NULL AS nothing",
        ] {
            let info = client.get_flight_info(statement(sql)).await.unwrap();
            let announced = info.clone().try_decode_schema().unwrap();
            let (schema, batches) = fetch(&mut client, &info).await;
            assert_eq!(&announced, schema.as_ref(), "{sql}");
            for batch in &batches {
                assert_eq!(batch.schema().as_ref(), &announced, "{sql}");
            }
            if sql == "SELECT * FROM events" {
                let n: usize = batches.iter().map(|b| b.num_rows()).sum();
                assert_eq!(n, rows.len());
            }
        }
    });
}

#[test]
fn cancel_flight_info_and_a_dropped_stream_stop_the_query_on_the_server() {
    let g = GroveStart::new(1_000);
    let runtime = runtime();
    let (mut client, info) = runtime.block_on(async {
        let mut client = client(&g).await;
        let info = client.get_flight_info(statement(ENDLESS)).await.unwrap();
        (client, info)
    });
    let mut rows = runtime.block_on(client.do_get(ticket(&info))).unwrap();
    let reading = runtime.spawn(async move { rows.next().await });
    assert!(wait_running(&g, 1));
    let cancelled = runtime.block_on(cancel(&mut client, &info));
    assert_eq!(cancelled, CancelStatus::Cancelled);
    let stopped = runtime.block_on(reading).unwrap().expect("an answer");
    let stopped = status(stopped.unwrap_err());
    assert_eq!(stopped.code(), Code::Cancelled);
    assert_eq!(stopped.message(), "the query was cancelled");
    // It no longer runs: a second cancel finds nothing.
    let again = runtime.block_on(cancel(&mut client, &info));
    assert_eq!(again, CancelStatus::NotCancellable);
    assert!(wait_running(&g, 0));

    // ADBC cancels by dropping the stream: the server stops the query too.
    let got = flight_client(&["cancel", &uri(&g), ENDLESS, &g.status_url()]);
    assert_eq!(got["seen_running"], json!(true), "{got}");
    assert!(
        got["cancelled"].as_str().unwrap().contains("CANCELLED"),
        "{got}"
    );
    assert_eq!(got["stopped_on_server"], json!(true), "{got}");
    assert_eq!(got["after_cancel"], json!(1_000));
}

#[test]
fn the_server_timeout_applies_unless_the_call_has_its_own_deadline() {
    let g = GroveStart::with(1_000, &["--query-timeout", "PT1S"]);
    let got = flight_client(&["timeout", &uri(&g), ENDLESS, "none"]);
    let stopped = got["stopped"].as_str().unwrap();
    assert!(
        stopped.contains("the query did not finish within its timeout"),
        "{got}"
    );
    assert_eq!(got["after"], json!(1_000));
    // A 3 s deadline of the call replaces the server's 1 s.
    let got = flight_client(&["timeout", &uri(&g), ENDLESS, "3"]);
    assert!(
        got["stopped"].as_str().unwrap().contains("TIMEOUT"),
        "{got}"
    );
    assert!(got["seconds"].as_f64().unwrap() >= 2.5, "{got}");
    assert!(wait_running(&g, 0));
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// Sends, by hand, a `GetFlightInfo` call whose gRPC length prefix claims 2 GiB and
/// then only a few bytes; returns the (type, stream) of the frames the server sends
/// back within 10 s.
fn claim_two_gib(port: u16) -> Vec<(u8, u32)> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (
            ":path",
            "/arrow.flight.protocol.FlightService/GetFlightInfo",
        ),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // HPACK: a literal field without indexing, new name, no Huffman coding.
        block.push(0);
        block.push(name.len() as u8);
        block.extend(name.as_bytes());
        block.push(value.len() as u8);
        block.extend(value.as_bytes());
    }
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    request.extend(frame(0x4, 0, 0, &[]));
    request.extend(frame(HEADERS, 0x4, 1, &block));
    request.extend(frame(0x0, 0, 1, &[0, 0x80, 0, 0, 0, 1, 2, 3]));
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.write_all(&request).unwrap();
    let mut frames = Vec::new();
    let mut header = [0u8; 9];
    while socket.read_exact(&mut header).is_ok() {
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        frames.push((header[3], stream));
        let mut payload = vec![0u8; length];
        if socket.read_exact(&mut payload).is_err() || header[3] == RST_STREAM {
            break;
        }
        if header[3] == HEADERS && header[4] & 0x1 != 0 {
            // END_STREAM: the call's answer is complete.
            break;
        }
    }
    frames
}

#[test]
fn bad_input_on_the_flight_sql_port_fails_that_client_only() {
    let g = GroveStart::new(1_000);
    // Garbage bytes, and a connection that stops halfway through its preface.
    let mut garbage = TcpStream::connect(("127.0.0.1", g.flight_port)).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(1000))
        .unwrap();
    let mut answer = Vec::new();
    // The server hangs up (a reset, or an orderly close) rather than waiting.
    if let Err(e) = garbage.read_to_end(&mut answer) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    let mut hanging = TcpStream::connect(("127.0.0.1", g.flight_port)).unwrap();
    hanging.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    // A gRPC message claiming 2 GiB is refused from its length prefix, at once.
    let frames = claim_two_gib(g.flight_port);
    assert!(
        frames
            .iter()
            .any(|&(kind, stream)| stream == 1 && (kind == HEADERS || kind == RST_STREAM)),
        "no answer to the oversized message: {frames:?}"
    );

    runtime().block_on(async {
        let mut client = client(&g).await;
        let refused = |e: FlightError, code: Code, text: &str| {
            let s = status(e);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(s.message().contains(text), "{text} in {s:?}");
        };
        // Tickets that are not this server's.
        let e = client
            .do_get(Ticket::new(b"\x0a\xff garbage".to_vec()))
            .await;
        refused(e.err().unwrap(), Code::InvalidArgument, "");
        let forged = TicketStatementQuery {
            statement_handle: b"{\"id\": 1}".to_vec().into(),
        };
        let e = client
            .do_get(Ticket::new(forged.as_any().encode_to_vec()))
            .await;
        refused(
            e.err().unwrap(),
            Code::InvalidArgument,
            "not a ticket of this server",
        );
        // A descriptor whose command is garbage, an invalid statement, an unknown
        // prepared statement.
        let e = client
            .get_flight_info(FlightDescriptor::new_cmd(b"nonsense".to_vec()))
            .await;
        refused(e.err().unwrap(), Code::InvalidArgument, "");
        let e = client
            .get_flight_info(statement("SELEC * FROM events"))
            .await;
        refused(e.err().unwrap(), Code::InvalidArgument, "SELEC");
        let unknown = CommandPreparedStatementQuery {
            prepared_statement_handle: b"nope".to_vec().into(),
        };
        let e = client.get_flight_info(descriptor(&unknown)).await;
        refused(
            e.err().unwrap(),
            Code::NotFound,
            "prepared statement nope is unknown",
        );
        let e = client
            .get_flight_info(statement("SELECT 1; SELECT 2"))
            .await;
        refused(
            e.err().unwrap(),
            Code::InvalidArgument,
            "several statements",
        );
        // A 4 MiB statement is answered.
        let huge = format!(
            "SELECT COUNT(*) AS n FROM events WHERE country <> '{}'",
            "x".repeat(4 << 20)
        );
        assert!(huge.len() > 4 << 20);
        let info = client.get_flight_info(statement(&huge)).await.unwrap();
        let (_, batches) = fetch(&mut client, &info).await;
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 1_000);
    });
    // Meanwhile, others are served.
    let got = flight_client(&["login", &uri(&g), "", ""]);
    assert_eq!(got, json!({ "ok": 1000 }));
    drop(hanging);
}

#[test]
fn with_users_configured_flight_sql_clients_log_in_for_a_bearer_token() {
    let keys = grove_e2e::Sandbox::default();
    let hashed = keys.grove(&["passwd"], "s3cret pass\n");
    assert!(hashed.ok, "{}", hashed.stderr);
    let config = keys.path("start.toml");
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"alice\"\npassword = \"{}\"\n",
            hashed.stdout.trim()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let g = GroveStart::with_user(1_000, &["--config", &config], "alice", "s3cret pass");
    let uri = uri(&g);
    assert_eq!(
        flight_client(&["login", &uri, "alice", "s3cret pass"]),
        json!({ "ok": 1000 })
    );
    for (user, password) in [("", ""), ("alice", "s3cret"), ("mallory", "s3cret pass")] {
        let got = flight_client(&["login", &uri, user, password]);
        let refused = got["refused"]
            .as_str()
            .unwrap_or_else(|| panic!("{user}: {got}"));
        assert!(refused.contains("UNAUTHENTICATED"), "{user}: {refused}");
    }
    runtime().block_on(async {
        let mut client = client(&g).await;
        let e = client
            .get_flight_info(statement("SELECT 1"))
            .await
            .err()
            .unwrap();
        assert_eq!(status(e).code(), Code::Unauthenticated);
        client.add_header("authorization", "Bearer forged").unwrap();
        let e = client
            .get_flight_info(statement("SELECT 1"))
            .await
            .err()
            .unwrap();
        assert!(status(e).message().contains("unknown or expired"));
        client
            .add_header("authorization", &grove_e2e::start::basic("alice", "nope"))
            .unwrap();
        let e = client.handshake(Vec::new()).await.err().unwrap();
        assert_eq!(status(e).code(), Code::Unauthenticated);
        client
            .add_header(
                "authorization",
                &grove_e2e::start::basic("alice", "s3cret pass"),
            )
            .unwrap();
        let token = client.handshake(Vec::new()).await.unwrap();
        let token = String::from_utf8(token.to_vec()).unwrap();
        client
            .add_header("authorization", &format!("Bearer {token}"))
            .unwrap();
        let info = client
            .get_flight_info(statement("SELECT COUNT(*) AS n FROM events"))
            .await
            .unwrap();
        let (_, batches) = fetch(&mut client, &info).await;
        assert_eq!(batches[0].num_rows(), 1);
    });
}

#[test]
fn flight_sql_and_http_are_served_over_tls_when_a_certificate_is_configured() {
    let keys = grove_e2e::Sandbox::default();
    let (cert, key) = self_signed(&keys);
    let g = GroveStart::with(1_000, &["--tls-cert", &cert, "--tls-key", &key]);
    let secure = format!("grpc+tls://127.0.0.1:{}", g.flight_port);
    assert_eq!(
        flight_client(&["tls", &secure, &cert]),
        json!({ "ok": 1000 })
    );
    let plain = flight_client(&["login", &uri(&g), "", ""]);
    assert!(plain["refused"].is_string(), "{plain}");
    let run = g.sandbox.grove(
        &[
            "sql",
            "--connect",
            &secure,
            "--tls-ca",
            &cert,
            "-c",
            "SELECT COUNT(*) AS n FROM events",
        ],
        "",
    );
    assert!(
        run.ok && run.stdout.contains("| 1000 |"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn the_shell_runs_on_a_server_over_flight_sql_in_one_session() {
    let g = GroveStart::new(1_000);
    let rows = csv_rows(&g);
    let mobile = rows.iter().filter(|r| r["device"] == "mobile").count();
    let url = uri(&g);
    let run = g.sandbox.grove(&["sql", "--connect", &url], SHELL_SCRIPT);
    check_shell_session(&run, mobile as u64);

    // One-shot, as CSV: the rows of every country, as the CSV counts them.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *expected.entry(row["country"].clone()).or_default() += 1;
    }
    let run = g.sandbox.grove(
        &[
            "sql",
            "--connect",
            &url,
            "--format",
            "csv",
            "-c",
            "SELECT country, COUNT(*) AS n FROM events GROUP BY country ORDER BY country",
        ],
        "",
    );
    assert!(run.ok, "{}", run.stderr);
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("country,n"));
    let got: BTreeMap<String, usize> = lines
        .map(|line| {
            let (country, n) = line.split_once(',').unwrap();
            (country.to_string(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, expected);

    // A failing statement fails the command, naming the problem.
    let run = g
        .sandbox
        .grove(&["sql", "--connect", &url, "-c", "SELECT * FROM nope"], "");
    assert!(!run.ok && run.stderr.contains("nope"), "{}", run.stderr);
    let run = g.sandbox.grove(
        &["sql", "--connect", "grpc://127.0.0.1:1", "-c", "SELECT 1"],
        "",
    );
    assert!(
        !run.ok && run.stderr.contains("cannot connect to grpc://127.0.0.1:1"),
        "{}",
        run.stderr
    );
}

#[test]
fn tickets_keep_their_values_cancels_reach_unfetched_queries_and_lost_updates_are_refused() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    let g = GroveStart::new(1_000);
    let rows = csv_rows(&g);
    let count = |status: i64| rows.iter().filter(|r| int(r, "status") == status).count() as i64;
    let runtime = runtime();
    runtime.block_on(async {
        let mut sql = FlightSqlServiceClient::new(channel(&g).await);
        let mut flight = client(&g).await;
        let status_is = |status: i64| {
            let schema = Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)]));
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![status]))]).unwrap()
        };
        let first_value = |batches: &[RecordBatch]| {
            let column = batches[0].column(0);
            column
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        };

        // A prepared statement's FlightInfo reads the values bound when it was asked
        // for, whatever is bound later.
        let mut prepared = sql
            .prepare(
                "SELECT COUNT(*) AS n FROM events WHERE status = ?".into(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
        prepared.set_parameters(status_is(404)).unwrap();
        let for_404 = prepared.execute().await.unwrap();
        prepared.set_parameters(status_is(200)).unwrap();
        let for_200 = prepared.execute().await.unwrap();
        let (_, batches) = fetch(&mut flight, &for_404).await;
        assert_eq!(first_value(&batches), count(404));
        let (_, batches) = fetch(&mut flight, &for_200).await;
        assert_eq!(first_value(&batches), count(200));
        // Without placeholders, the prepared statement's schema is the rows' schema.
        let mut plain = sql
            .prepare(
                "SELECT country, COUNT(*) AS n FROM events GROUP BY country".into(),
                None,
            )
            .await
            .unwrap();
        let announced = plain.dataset_schema().unwrap().clone();
        let info = plain.execute().await.unwrap();
        let (schema, _) = fetch(&mut flight, &info).await;
        assert_eq!(&announced, schema.as_ref());

        // A cancel before the fetch: the fetch never runs.
        let info = flight
            .get_flight_info(statement("SELECT COUNT(*) FROM events"))
            .await
            .unwrap();
        assert_eq!(cancel(&mut flight, &info).await, CancelStatus::Cancelled);
        let Err(refused) = flight.do_get(ticket(&info)).await else {
            panic!("a cancelled query must not be fetched");
        };
        assert_eq!(status(refused).code(), Code::Cancelled);

        // An update that would change a session nobody keeps is refused.
        let lost = sql
            .execute_update("SET datafusion.execution.batch_size = 10".into(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(lost.contains("run it as a query"), "{lost}");
    });
}
