//! Building rows: log records into Arrow batches per table ([`RowBuilder`], [`RowSink`]),
//! and the stages that run a step's building and writing on their own threads
//! ([`write_rows`]): one builder, [`PARQUET_WRITERS`] Parquet writers fed in table order,
//! so the files are the same bytes as from one thread.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::writer::TableOutput;
use super::{schema_for, Codec, FileEntry, ProjectError, TABLES};
use crate::event::{EventType, FieldKind, FieldValue, Record};

/// Rows buffered per table before they are handed to the Parquet writer as one batch.
pub(super) const BATCH_ROWS: usize = 8_192;

/// Threads encoding Parquet in a projection step, each with its own tables: encoding
/// (dictionaries, snappy, hashing the file) is the largest part of a rebuild, more than
/// one core's worth when decoding and building run beside it.
pub(super) const PARQUET_WRITERS: usize = 2;

/// Arrow batches queued for each Parquet writer thread (~3 MB each at [`BATCH_ROWS`]): enough
/// to even out the two threads' pace, little memory.
const WRITER_QUEUE_BATCHES: usize = 4;

enum Col {
    Str(StringBuilder),
    I64(Int64Builder),
    I16(Int16Builder),
    F32(Float32Builder),
}

/// Arrow builders for one table's rows.
struct RowBuilder {
    event_type: EventType,
    schema: SchemaRef,
    raw_event: StringBuilder,
    timestamp: StringBuilder,
    accept: StringBuilder,
    host: StringBuilder,
    user_agent: StringBuilder,
    event_type_col: StringBuilder,
    fields: Vec<Col>,
    log_offset: Int64Builder,
    event_id: StringBuilder,
    player_id: StringBuilder,
    session_id: StringBuilder,
    event_time: TimestampMicrosecondBuilder,
    /// Tables from a topic: each row's partition.
    log_partition: Option<Int32Builder>,
    rows: usize,
    /// Reused buffer for formatting times.
    scratch: String,
    /// String builders made again from batches the writer is done with, by column: the
    /// next batch fills the same memory instead of fresh pages (see [`RowBuilder::recycle`]).
    spare: Vec<Option<StringBuilder>>,
}

impl RowBuilder {
    fn new(t: EventType, partitioned: bool) -> RowBuilder {
        RowBuilder::new_reusing(t, partitioned, Vec::new())
    }

    fn new_reusing(t: EventType, partitioned: bool, mut spare: Vec<Option<StringBuilder>>) -> RowBuilder {
        let fields_count = t.fields().len();
        let mut string = |column: usize, bytes_per_row: usize| {
            spare
                .get_mut(column)
                .and_then(Option::take)
                .unwrap_or_else(|| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * bytes_per_row))
        };
        // Columns in schema order: raw_event, timestamp, accept, host, user_agent,
        // event_type, the type fields, log_offset, event_id, player_id, session_id, ...
        let (raw_event, timestamp, accept, host, user_agent, event_type_col) =
            (string(0, 256), string(1, 24), string(2, 24), string(3, 24), string(4, 24), string(5, 24));
        let (event_id, player_id, session_id) = (string(7 + fields_count, 24), string(8 + fields_count, 24), string(9 + fields_count, 24));
        let fields = t
            .fields()
            .iter()
            .enumerate()
            .map(|(i, (_, k))| match k {
                FieldKind::Id => Col::I64(Int64Builder::with_capacity(BATCH_ROWS)),
                FieldKind::Text => Col::Str(string(6 + i, 16)),
                FieldKind::SmallInt => Col::I16(Int16Builder::with_capacity(BATCH_ROWS)),
                FieldKind::Cost => Col::F32(Float32Builder::with_capacity(BATCH_ROWS)),
            })
            .collect();

        RowBuilder {
            event_type: t,
            schema: schema_for(t, partitioned),
            raw_event,
            timestamp,
            accept,
            host,
            user_agent,
            event_type_col,
            fields,
            log_offset: Int64Builder::with_capacity(BATCH_ROWS),
            event_id,
            player_id,
            session_id,
            event_time: TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC"),
            log_partition: partitioned.then(|| Int32Builder::with_capacity(BATCH_ROWS)),
            rows: 0,
            scratch: String::with_capacity(32),
            spare,
        }
    }

    /// Keeps the memory of a batch of this table that the writer is done with, for the
    /// next batch's string columns (most of a batch's bytes). A batch freed on the writer
    /// thread went back to the allocator of the thread that made it only lazily, so every
    /// batch was built in fresh pages the kernel had to zero: a fifth of a rebuild's time.
    fn recycle(&mut self, batch: RecordBatch) {
        let (_, columns, _) = batch.into_parts();
        self.spare.resize_with(columns.len(), || None);
        for (column, array) in columns.into_iter().enumerate() {
            if self.spare[column].is_some() || array.data_type() != &DataType::Utf8 {
                continue;
            }
            let data = array.to_data();
            drop(array);
            let (offsets, values, _) = arrow::array::StringArray::from(data).into_parts();
            if let (Ok(mut offsets), Ok(values)) = (offsets.into_inner().into_inner().into_mutable(), values.into_mutable()) {
                offsets.clear();
                offsets.push(0i32);
                // SAFETY: one offset, 0, and no values (new_from_buffer drops the bytes past
                // the last offset): the empty array, a valid one, whatever the buffers held.
                self.spare[column] = Some(unsafe { StringBuilder::new_from_buffer(offsets, values, None) });
            }
        }
    }

    fn push<S: AsRef<str>, M: AsRef<str>>(&mut self, offset: u64, partition: u32, r: &Record<S, M>) {
        use crate::event::opt_str;
        debug_assert_eq!(r.event.builtin(), Some(self.event_type));
        self.raw_event.append_value(r.raw_event.as_ref());
        self.scratch.clear();
        crate::event::push_time_us(&mut self.scratch, r.received_at_us);
        self.timestamp.append_value(&self.scratch);
        self.accept.append_option(opt_str(&r.meta.accept));
        self.host.append_option(opt_str(&r.meta.host));
        self.user_agent.append_option(opt_str(&r.meta.user_agent));
        self.event_type_col.append_value(self.event_type.as_str());
        let mut cols = self.fields.iter_mut();
        r.event.payload.visit_fields(|_, v| match (cols.next(), v) {
            (Some(Col::I64(b)), FieldValue::Int(x)) => b.append_value(x),
            (Some(Col::I16(b)), FieldValue::Small(x)) => b.append_value(x),
            (Some(Col::F32(b)), FieldValue::Float(x)) => b.append_value(x),
            (Some(Col::Str(b)), FieldValue::Text(x)) => b.append_value(x),
            _ => unreachable!("payload fields follow EventType::fields order"),
        });
        self.log_offset.append_value(offset as i64);
        self.event_id.append_option(opt_str(&r.event.event_id));
        self.player_id.append_option(opt_str(&r.event.player_id));
        self.session_id.append_option(opt_str(&r.event.session_id));
        self.event_time.append_option(r.event.event_time_us);
        if let Some(b) = &mut self.log_partition {
            b.append_value(partition as i32);
        }
        self.rows += 1;
    }

    /// The rows pushed so far as one batch; the builders start again with their full
    /// capacity. (An Arrow builder's `finish` leaves it with none, so every batch after the
    /// first grew its buffers by doubling: reallocation copies and fresh pages were a third
    /// of this thread's time.)
    fn finish(&mut self) -> Result<RecordBatch, ProjectError> {
        let partitioned = self.log_partition.is_some();
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(self, RowBuilder::new_reusing(self.event_type, partitioned, spare)).into_batch()
    }

    fn into_batch(mut self) -> Result<RecordBatch, ProjectError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.raw_event.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.accept.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.event_type_col.finish()),
        ];
        for c in &mut self.fields {
            cols.push(match c {
                Col::Str(b) => Arc::new(b.finish()),
                Col::I64(b) => Arc::new(b.finish()),
                Col::I16(b) => Arc::new(b.finish()),
                Col::F32(b) => Arc::new(b.finish()),
            });
        }
        cols.push(Arc::new(self.log_offset.finish()));
        cols.push(Arc::new(self.event_id.finish()));
        cols.push(Arc::new(self.player_id.finish()));
        cols.push(Arc::new(self.session_id.finish()));
        cols.push(Arc::new(self.event_time.finish()));
        if let Some(b) = &mut self.log_partition {
            cols.push(Arc::new(b.finish()));
        }
        Ok(RecordBatch::try_new(self.schema, cols)?)
    }
}

/// Where a step's rows go: each table's rows are built into Arrow batches here and handed
/// to the Parquet writer thread of [`write_rows`].
pub(super) struct RowSink {
    builders: Vec<Building>,
    /// One queue per Parquet writer thread.
    txs: Vec<std::sync::mpsc::SyncSender<ToWriter>>,
    /// Batches the writers are done with, by table.
    recycled: std::sync::mpsc::Receiver<(usize, RecordBatch)>,
}

impl RowSink {
    /// Adds a row to table `i`: the record at `position` in the step's order (what file
    /// names are cut at), stored with `offset` and `partition` (tables from a topic).
    pub(super) fn push<S: AsRef<str>, M: AsRef<str>>(
        &mut self,
        i: usize,
        position: u64,
        offset: u64,
        partition: u32,
        record: &Record<S, M>,
    ) -> Result<(), ProjectError> {
        let b = &mut self.builders[i];
        b.rows.push(offset, partition, record);
        b.first = b.first.min(position);
        b.last = position;
        if b.rows.rows >= BATCH_ROWS {
            self.send(i)?;
        }
        Ok(())
    }

    // A send fails only when the writer stopped on an error, which joining returns.
    fn send(&mut self, table: usize) -> Result<(), ProjectError> {
        while let Ok((i, batch)) = self.recycled.try_recv() {
            self.builders[i].rows.recycle(batch);
        }
        let b = &mut self.builders[table];
        let batch = b.rows.finish()?;
        let (first, last) = (b.first, b.last);
        b.first = u64::MAX;
        let writer = table % self.txs.len();
        self.txs[writer].send(ToWriter::Batch { table, batch, first, last }).map_err(|_| ProjectError::WriterStopped)
    }

    fn finish(&mut self) -> Result<(), ProjectError> {
        for i in 0..self.builders.len() {
            if self.builders[i].rows.rows > 0 {
                self.send(i)?;
            }
        }
        for tx in &self.txs {
            tx.send(ToWriter::Finish).map_err(|_| ProjectError::WriterStopped)?;
        }
        Ok(())
    }
}

/// Runs `feed`, which pushes rows into a [`RowSink`], and writes them into files in
/// `dirs`: a table's rows in the order pushed.
pub(super) fn write_rows(
    dirs: &[PathBuf],
    codec: Codec,
    partitioned: bool,
    writers: usize,
    feed: impl FnOnce(&mut RowSink) -> Result<(), ProjectError>,
) -> Result<Vec<Vec<FileEntry>>, ProjectError> {
    // Three stages on their own threads, so that the two cores share the work: decoding
    // the log (for_each_prefetched's helper, or the Kafka client's), building Arrow
    // batches (this thread), and encoding and compressing them into Parquet (the writer
    // below), which alone took about half of this thread's time. Each table's batches
    // reach the writer in order, so the files are the same bytes as when written on one
    // thread.
    std::thread::scope(|scope| -> Result<Vec<Vec<FileEntry>>, ProjectError> {
        // Batches the writers are done with come back here, to be built into again.
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<(usize, RecordBatch)>();
        let count = writers.clamp(1, PARQUET_WRITERS);
        let mut txs = Vec::with_capacity(count);
        let mut writers = Vec::with_capacity(count);
        for w in 0..count {
            let (tx, rx) = std::sync::mpsc::sync_channel::<ToWriter>(WRITER_QUEUE_BATCHES);
            let recycle_tx = recycle_tx.clone();
            txs.push(tx);
            writers.push(scope.spawn(move || -> Result<Vec<(usize, Vec<FileEntry>)>, ProjectError> {
                // Each writer has its own tables: table `i` goes to writer `i % count`.
                let mut outs: Vec<(usize, TableOutput)> = TABLES
                    .iter()
                    .zip(dirs)
                    .enumerate()
                    .filter(|(i, _)| i % count == w)
                    .map(|(i, (def, dir))| (i, TableOutput::new(def, dir.clone(), codec, 0, partitioned)))
                    .collect();
                for message in rx {
                    match message {
                        ToWriter::Batch { table, batch, first, last } => {
                            let out = outs.iter_mut().find(|(i, _)| *i == table).map(|(_, o)| o).ok_or(ProjectError::WriterStopped)?;
                            out.write_batch(&batch, first, last)?;
                            let _ = recycle_tx.send((table, batch));
                        }
                        ToWriter::Finish => return outs.into_iter().map(|(i, o)| Ok((i, o.finish()?))).collect(),
                    }
                }
                // The builder stopped on an error: dropping the outputs deletes their files.
                Err(ProjectError::WriterStopped)
            }));
        }
        drop(recycle_tx);
        let builders =
            TABLES.iter().map(|def| Building { rows: RowBuilder::new(def.event_type, partitioned), first: u64::MAX, last: 0 }).collect();
        let mut sink = RowSink { builders, txs, recycled: recycle_rx };
        let built = feed(&mut sink).and_then(|()| sink.finish());
        drop(sink);
        let mut written: Result<Vec<Vec<FileEntry>>, ProjectError> = Ok(vec![Vec::new(); TABLES.len()]);
        for writer in writers {
            match (writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), &mut written) {
                (Ok(files), Ok(all)) => {
                    for (i, f) in files {
                        all[i] = f;
                    }
                }
                (Err(e), Ok(_)) => written = Err(e),
                // A writer that failed on its own (a full disk, say) stopped the step;
                // the others then only saw the builder stop. Report the cause.
                (Err(e), Err(ProjectError::WriterStopped)) if !matches!(e, ProjectError::WriterStopped) => written = Err(e),
                (_, Err(_)) => {}
            }
        }
        match (built, written) {
            // The writer's own error says why it stopped taking batches.
            (Err(ProjectError::WriterStopped), Err(e)) => Err(e),
            (Err(e), _) => Err(e),
            (Ok(()), written) => written,
        }
    })
}

/// One table's rows being built into the next batch, with their log offsets.
struct Building {
    rows: RowBuilder,
    first: u64,
    last: u64,
}

/// What the row builder hands the Parquet writer thread.
enum ToWriter {
    Batch {
        table: usize,
        batch: RecordBatch,
        first: u64,
        last: u64,
    },
    /// Every row was sent: close the files and return them.
    Finish,
}
