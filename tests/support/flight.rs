//! arrow-flight's own Flight SQL client, for what ADBC does not expose.

use arrow_flight::error::FlightError;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightClient,
    FlightDescriptor, FlightInfo, Ticket,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use prost::Message;

use crate::start::GroveStart;

/// A connection to `g`'s Flight SQL port.
pub async fn channel(g: &GroveStart) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", g.flight_port))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A client of `g`'s Flight SQL port that takes answers of up to 64 MiB (a
/// FlightInfo's ticket holds the statement's text).
pub async fn client(g: &GroveStart) -> FlightClient {
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel(g).await)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    FlightClient::new_from_inner(inner)
}

pub fn descriptor(command: &impl ProstMessageExt) -> FlightDescriptor {
    FlightDescriptor::new_cmd(command.as_any().encode_to_vec())
}

pub fn statement(sql: &str) -> FlightDescriptor {
    descriptor(&CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    })
}

pub fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(status) => *status,
        other => panic!("not a gRPC status: {other:?}"),
    }
}

pub fn ticket(info: &FlightInfo) -> Ticket {
    info.endpoint[0].ticket.clone().expect("a ticket")
}

/// The rows of a FlightInfo's ticket, and the schema they came with.
pub async fn fetch(client: &mut FlightClient, info: &FlightInfo) -> (SchemaRef, Vec<RecordBatch>) {
    let mut stream = client.do_get(ticket(info)).await.unwrap();
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.unwrap());
    }
    (stream.schema().cloned().expect("a schema"), batches)
}

/// `CancelFlightInfo` for `info`: what the server says it did.
pub async fn cancel(client: &mut FlightClient, info: &FlightInfo) -> CancelStatus {
    let action = Action {
        r#type: "CancelFlightInfo".into(),
        body: CancelFlightInfoRequest::new(info.clone())
            .encode_to_vec()
            .into(),
    };
    let answers: Vec<_> = client.do_action(action).await.unwrap().collect().await;
    let body = answers[0].as_ref().expect("an answer").clone();
    CancelFlightInfoResult::decode(body).unwrap().status()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
