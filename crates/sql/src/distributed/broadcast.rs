//! The build side of a join shipped inside fragments: [`BroadcastRowsExec`], a leaf
//! holding the rows themselves, so a historical joins its segments with them and fact
//! rows never cross the network.
//!
//! The broker runs the build side once per query, encodes its rows once as an Arrow
//! IPC stream (each batch's dictionaries keeping only the values its rows use, see
//! [`compact_dictionaries`]) and puts them in every fragment that probes them. On the
//! wire the leaf is
//! `b"GROVEBRD" | version: u8 = 1 | Arrow IPC stream`, inside the plan's extension
//! node (see `codec`, which checks its types like a scan's). A decoder reads no
//! compressed body and at most [`MAX_BROADCAST_ROWS`] rows, checked in the messages'
//! headers before any is decoded.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow_select::dictionary::garbage_collect_any_dictionary;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use grove_segment::scan::compact_dictionary;

use super::leaf;

const MAGIC: &[u8; 8] = b"GROVEBRD";

/// The most rows broadcast rows may hold: a build side that large is joined on the
/// broker long before (`grove.broadcast_bytes`), and a column of NULLs costs no bytes
/// per row, so the message size alone does not bound them.
pub const MAX_BROADCAST_ROWS: i64 = 1 << 24;

/// Checks an Arrow IPC stream's messages before anything is decoded: no compressed
/// bodies (a compressed body declares its own decompressed length), and at most
/// [`MAX_BROADCAST_ROWS`] rows in all, in every column.
fn check_stream(mut ipc: &[u8]) -> std::result::Result<(), String> {
    let word = |bytes: &[u8]| -> std::result::Result<i32, String> {
        let four: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("truncated")?;
        Ok(i32::from_le_bytes(four))
    };
    let mut rows: i64 = 0;
    while !ipc.is_empty() {
        let mut length = word(ipc)?;
        ipc = &ipc[4..];
        if length == -1 {
            // The continuation marker, then the length.
            length = word(ipc)?;
            ipc = &ipc[4..];
        }
        if length == 0 {
            break;
        }
        let length = usize::try_from(length).map_err(|_| "a negative message length")?;
        let metadata = ipc.get(..length).ok_or("truncated")?;
        let message = datafusion::arrow::ipc::root_as_message(metadata)
            .map_err(|e| format!("a message that does not parse: {e}"))?;
        let body = usize::try_from(message.bodyLength()).map_err(|_| "a negative body")?;
        ipc = ipc
            .get(length..)
            .and_then(|rest| rest.get(body..))
            .ok_or("truncated")?;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        let Some(batch) = batch else {
            continue;
        };
        if batch.compression().is_some() {
            return Err("compressed bodies are not taken".into());
        }
        rows = rows.saturating_add(batch.length());
        let columns = batch.nodes().into_iter().flatten();
        let longest = columns.map(|n| n.length()).max().unwrap_or(0);
        if batch.length() < 0 || rows > MAX_BROADCAST_ROWS || longest > MAX_BROADCAST_ROWS {
            return Err(format!("more than {MAX_BROADCAST_ROWS} rows"));
        }
    }
    Ok(())
}
pub const BROADCAST_NODE_VERSION: u8 = 1;

/// Rows a fragment carries: the build side of a join broadcast to the historicals.
/// One partition, as a join that collects its build side wants. On the broker it
/// also stands for a build side joined there, in memory.
#[derive(Debug)]
pub struct BroadcastRowsExec {
    batches: Arc<Vec<RecordBatch>>,
    /// The rows as an Arrow IPC stream, made once, when first encoded.
    ipc: OnceLock<Vec<u8>>,
    properties: Arc<PlanProperties>,
}

impl BroadcastRowsExec {
    /// The rows of `batches`, all of `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        BroadcastRowsExec {
            batches: Arc::new(batches),
            ipc: OnceLock::new(),
            properties: leaf::properties(schema, 1),
        }
    }

    /// The memory the rows take.
    pub fn bytes(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }

    fn ipc(&self) -> Result<&[u8]> {
        if let Some(ipc) = self.ipc.get() {
            return Ok(ipc);
        }
        let mut ipc = Vec::new();
        let mut writer = StreamWriter::try_new(&mut ipc, &self.schema())?;
        for batch in self.batches.iter() {
            writer.write(batch)?;
        }
        writer.finish()?;
        drop(writer);
        Ok(self.ipc.get_or_init(|| ipc))
    }

    /// The node's encoding (see the module documentation).
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<()> {
        let ipc = self.ipc()?;
        buf.extend_from_slice(MAGIC);
        buf.push(BROADCAST_NODE_VERSION);
        buf.extend_from_slice(ipc);
        Ok(())
    }

    /// Whether `buf` is this node's encoding rather than a scan's.
    pub fn is_encoding(buf: &[u8]) -> bool {
        buf.starts_with(MAGIC)
    }

    /// Decodes [`encode`](Self::encode)'s output.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        let invalid =
            |what: String| DataFusionError::Plan(format!("invalid broadcast rows: {what}"));
        let rest = buf
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| invalid("bad magic".into()))?;
        let (&version, ipc) = rest
            .split_first()
            .ok_or_else(|| invalid("truncated".into()))?;
        if version != BROADCAST_NODE_VERSION {
            return Err(invalid(format!(
                "version {version} (this build reads {BROADCAST_NODE_VERSION})"
            )));
        }
        check_stream(ipc).map_err(invalid)?;
        let reader = StreamReader::try_new(ipc, None).map_err(|e| invalid(e.to_string()))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid(e.to_string()))?;
        let rows = Self::new(schema, batches);
        let _ = rows.ipc.set(ipc.to_vec());
        Ok(rows)
    }
}

/// A segment's string column is a slice of keys over the whole segment's dictionary;
/// sent as it is, every batch would carry every value of the segment (dictionaries
/// are resent per batch). Each batch's dictionaries keep only the values its rows use
/// (the scan compacts its own batches; a filter above it keeps fewer rows over the
/// same dictionary).
pub fn compact_dictionaries(batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::datatypes::Int32Type;
    let needs = |c: &Arc<dyn Array>| {
        c.as_any_dictionary_opt()
            .is_some_and(|d| d.values().len() > d.keys().len())
    };
    if !batch.columns().iter().any(needs) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !needs(column) {
                return Ok(Arc::clone(column));
            }
            match column.as_dictionary_opt::<Int32Type>() {
                Some(keyed) => compact_dictionary(keyed),
                None => match column.as_any_dictionary_opt() {
                    Some(any) => Ok(garbage_collect_any_dictionary(any)?),
                    None => Ok(Arc::clone(column)),
                },
            }
        })
        .collect::<Result<Vec<_>, DataFusionError>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

impl DisplayAs for BroadcastRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let rows: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        write!(f, "BroadcastRowsExec: rows={rows}")
    }
}

impl ExecutionPlan for BroadcastRowsExec {
    fn name(&self) -> &str {
        "BroadcastRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        leaf::childless(self, children)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "BroadcastRowsExec has one partition, not {}",
                partition + 1
            )));
        }
        Ok(Box::pin(MemoryStream::try_new(
            self.batches.to_vec(),
            self.schema(),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        (schema, vec![batch.clone(), batch.slice(1, 2)])
    }

    #[test]
    fn rows_travel_as_they_are() {
        let (schema, batches) = rows();
        let sent = BroadcastRowsExec::new(schema.clone(), batches.clone());
        let mut buf = Vec::new();
        sent.encode(&mut buf).unwrap();
        assert!(BroadcastRowsExec::is_encoding(&buf));
        let received = BroadcastRowsExec::decode(&buf).unwrap();
        assert_eq!(received.schema(), schema);
        assert_eq!(*received.batches, batches);
        let mut again = Vec::new();
        received.encode(&mut again).unwrap();
        assert_eq!(again, buf);
    }

    #[test]
    fn damaged_rows_are_an_error_that_says_so() {
        let (schema, batches) = rows();
        let mut buf = Vec::new();
        BroadcastRowsExec::new(schema, batches)
            .encode(&mut buf)
            .unwrap();
        for cut in [3, 9, 20, buf.len() - 9] {
            let e = BroadcastRowsExec::decode(&buf[..cut]).unwrap_err();
            assert!(
                e.to_string().contains("invalid broadcast rows"),
                "{cut}: {e}"
            );
        }
        // A body that says it is compressed, and more rows than taken.
        let compressed = {
            use datafusion::arrow::ipc::CompressionType;
            use datafusion::arrow::ipc::writer::IpcWriteOptions;
            let options = IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::LZ4_FRAME))
                .unwrap();
            let (schema, batches) = rows();
            let mut ipc = Vec::new();
            let mut writer =
                StreamWriter::try_new_with_options(&mut ipc, &schema, options).unwrap();
            writer.write(&batches[0]).unwrap();
            writer.finish().unwrap();
            drop(writer);
            [MAGIC.as_slice(), &[BROADCAST_NODE_VERSION], &ipc].concat()
        };
        let e = BroadcastRowsExec::decode(&compressed).unwrap_err();
        assert!(e.to_string().contains("compressed bodies"), "{e}");
        let nulls = {
            use datafusion::arrow::array::NullArray;
            let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
                datafusion::arrow::datatypes::Field::new("n", DataType::Null, true),
            ]));
            let huge = (MAX_BROADCAST_ROWS + 1) as usize;
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(NullArray::new(huge))]).unwrap();
            let mut buf = Vec::new();
            BroadcastRowsExec::new(schema, vec![batch])
                .encode(&mut buf)
                .unwrap();
            buf
        };
        assert!(nulls.len() < 1024, "{} bytes", nulls.len());
        let e = BroadcastRowsExec::decode(&nulls).unwrap_err();
        assert!(e.to_string().contains("more than 16777216 rows"), "{e}");

        let mut newer = buf.clone();
        newer[8] = 2;
        let e = BroadcastRowsExec::decode(&newer).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
    }
}
