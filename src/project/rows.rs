//! Building rows: log records into Arrow batches per table ([`RowBuilder`], [`RowSink`]),
//! and the stages that run a step's building and writing on their own threads
//! ([`write_rows`]): one builder, [`PARQUET_WRITERS`] Parquet writers fed in table order,
//! so the files are the same bytes as from one thread.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::writer::TableOutput;
use super::{Codec, FileEntry, ProjectError, TableDef};
use crate::event::{CustomPayload, CustomValue, FieldValue, Payload, Record};
use crate::schema::ColumnType;

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
    I32(Int32Builder),
    I16(Int16Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
}

impl Col {
    fn append_null(&mut self) {
        match self {
            Col::Str(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
        }
    }

    /// Whether the column takes a registered type's value: a null, or a value of its type
    /// in its range (which every checked event's values are).
    fn takes<S>(&self, value: Option<&CustomValue<S>>) -> bool {
        match (self, value) {
            (_, None | Some(CustomValue::Null | CustomValue::Absent)) => true,
            (Col::I64(_), Some(CustomValue::Int(_))) => true,
            (Col::I32(_), Some(CustomValue::Int(v))) => i32::try_from(*v).is_ok(),
            (Col::I16(_), Some(CustomValue::Int(v))) => i16::try_from(*v).is_ok(),
            (Col::F32(_), Some(CustomValue::Float(_))) | (Col::F64(_), Some(CustomValue::Double(_))) => true,
            (Col::Str(_), Some(CustomValue::Text(_) | CustomValue::Json(_))) => true,
            (Col::Time(_), Some(CustomValue::Timestamp(_))) | (Col::Bool(_), Some(CustomValue::Bool(_))) => true,
            _ => false,
        }
    }

    /// Appends a value [`Col::takes`] accepted (anything else as null).
    fn append_custom<S: AsRef<str>>(&mut self, value: Option<&CustomValue<S>>) {
        match (self, value) {
            (Col::I64(b), Some(CustomValue::Int(v))) => b.append_value(*v),
            (Col::I32(b), Some(CustomValue::Int(v))) => b.append_option(i32::try_from(*v).ok()),
            (Col::I16(b), Some(CustomValue::Int(v))) => b.append_option(i16::try_from(*v).ok()),
            (Col::F32(b), Some(CustomValue::Float(v))) => b.append_value(*v),
            (Col::F64(b), Some(CustomValue::Double(v))) => b.append_value(*v),
            (Col::Str(b), Some(CustomValue::Text(v) | CustomValue::Json(v))) => b.append_value(v.as_ref()),
            (Col::Time(b), Some(CustomValue::Timestamp(v))) => b.append_value(*v),
            (Col::Bool(b), Some(CustomValue::Bool(v))) => b.append_value(*v),
            (c, _) => c.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
        }
    }
}

/// Arrow builders for one table's rows.
struct RowBuilder {
    def: Arc<TableDef>,
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
    /// A registered type's table: per version of its events met, the field of the event
    /// that goes into each property column (`None`: a column added after that version).
    layouts: Vec<([u32; 3], Vec<Option<usize>>)>,
    /// String builders made again from batches the writer is done with, by column: the
    /// next batch fills the same memory instead of fresh pages (see [`RowBuilder::recycle`]).
    spare: Vec<Option<StringBuilder>>,
}

impl RowBuilder {
    fn new(def: &Arc<TableDef>, partitioned: bool) -> RowBuilder {
        RowBuilder::new_reusing(def, partitioned, Vec::new())
    }

    fn new_reusing(def: &Arc<TableDef>, partitioned: bool, mut spare: Vec<Option<StringBuilder>>) -> RowBuilder {
        let columns = def.property_columns();
        let fields_count = columns.len();
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
        let fields = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.column {
                ColumnType::BigInt => Col::I64(Int64Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Int => Col::I32(Int32Builder::with_capacity(BATCH_ROWS)),
                ColumnType::SmallInt => Col::I16(Int16Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Float => Col::F32(Float32Builder::with_capacity(BATCH_ROWS)),
                ColumnType::Double => Col::F64(Float64Builder::with_capacity(BATCH_ROWS)),
                ColumnType::String | ColumnType::Json => Col::Str(string(6 + i, 16)),
                ColumnType::Boolean => Col::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
                ColumnType::Timestamp => Col::Time(TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC")),
            })
            .collect();

        RowBuilder {
            def: def.clone(),
            schema: def.arrow_schema(partitioned),
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
            layouts: Vec::new(),
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

    fn push<S: AsRef<str>, M: AsRef<str>>(&mut self, offset: u64, partition: u32, r: &Record<S, M>) -> Result<(), ProjectError> {
        use crate::event::opt_str;
        debug_assert_eq!(r.event.type_name(), self.def.event_type());
        if let Payload::Custom(c) = &r.event.payload {
            // Checked before anything is appended, so a refused event leaves no half row.
            self.push_custom(offset, c)?;
        }
        self.raw_event.append_value(r.raw_event.as_ref());
        self.scratch.clear();
        crate::event::push_time_us(&mut self.scratch, r.received_at_us);
        self.timestamp.append_value(&self.scratch);
        self.accept.append_option(opt_str(&r.meta.accept));
        self.host.append_option(opt_str(&r.meta.host));
        self.user_agent.append_option(opt_str(&r.meta.user_agent));
        self.event_type_col.append_value(self.def.event_type());
        if r.event.builtin().is_some() {
            let mut cols = self.fields.iter_mut();
            r.event.payload.visit_fields(|_, v| match (cols.next(), v) {
                (Some(Col::I64(b)), FieldValue::Int(x)) => b.append_value(x),
                (Some(Col::I16(b)), FieldValue::Small(x)) => b.append_value(x),
                (Some(Col::F32(b)), FieldValue::Float(x)) => b.append_value(x),
                (Some(Col::Str(b)), FieldValue::Text(x)) => b.append_value(x),
                _ => unreachable!("payload fields follow EventType::fields order"),
            });
        }
        self.log_offset.append_value(offset as i64);
        self.event_id.append_option(opt_str(&r.event.event_id));
        self.player_id.append_option(opt_str(&r.event.player_id));
        self.session_id.append_option(opt_str(&r.event.session_id));
        self.event_time.append_option(r.event.event_time_us);
        if let Some(b) = &mut self.log_partition {
            b.append_value(partition as i32);
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends a registered type's properties to their columns, by name: a column its
    /// version does not have (an ADDITION after it) takes a null.
    fn push_custom<S: AsRef<str>>(&mut self, offset: u64, c: &CustomPayload<S>) -> Result<(), ProjectError> {
        let k = match self.layouts.iter().position(|(v, _)| *v == c.version) {
            Some(k) => k,
            None => {
                let columns = self.def.property_columns();
                let layout = columns.iter().map(|col| c.fields.iter().position(|(n, _)| n.as_ref() == col.name)).collect();
                self.layouts.push((c.version, layout));
                self.layouts.len() - 1
            }
        };
        let layout = &self.layouts[k].1;
        let value = |field: &Option<usize>| field.and_then(|i| c.fields.get(i)).map(|(_, v)| v);
        // Every value is checked before any is appended: a refused event leaves no column
        // longer than another.
        if let Some(j) = layout.iter().zip(&self.fields).position(|(field, col)| !col.takes(value(field))) {
            let column = self.def.property_columns().get(j).map_or_else(String::new, |c| c.name.clone());
            return Err(ProjectError::Schema {
                table: self.def.name.clone(),
                reason: format!(
                    "the event at log offset {offset} has a value its column {column} does not take: the log's schema records do not match its events"
                ),
            });
        }
        for (field, col) in layout.iter().zip(&mut self.fields) {
            col.append_custom(value(field));
        }
        Ok(())
    }

    /// The rows pushed so far as one batch; the builders start again with their full
    /// capacity. (An Arrow builder's `finish` leaves it with none, so every batch after the
    /// first grew its buffers by doubling: reallocation copies and fresh pages were a third
    /// of this thread's time.)
    fn finish(&mut self) -> Result<RecordBatch, ProjectError> {
        let partitioned = self.log_partition.is_some();
        let spare = std::mem::take(&mut self.spare);
        let def = self.def.clone();
        std::mem::replace(self, RowBuilder::new_reusing(&def, partitioned, spare)).into_batch()
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
            cols.push(c.finish());
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
        b.rows.push(offset, partition, record)?;
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
/// `dirs`: table `i` (`defs[i]`, with those columns) gets its rows in the order pushed.
pub(super) fn write_rows(
    defs: &[Arc<TableDef>],
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
                let mut outs: Vec<(usize, TableOutput)> = defs
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
        assert_eq!(defs.len(), dirs.len(), "a directory per table");
        let builders = defs.iter().map(|def| Building { rows: RowBuilder::new(def, partitioned), first: u64::MAX, last: 0 }).collect();
        let mut sink = RowSink { builders, txs, recycled: recycle_rx };
        let built = feed(&mut sink).and_then(|()| sink.finish());
        drop(sink);
        let mut written: Result<Vec<Vec<FileEntry>>, ProjectError> = Ok(vec![Vec::new(); defs.len()]);
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
