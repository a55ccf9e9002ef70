//! The tables of the store: the seed's five ([`SEED_TABLES`], contract 5.2) and one per
//! registered type's model (contract 13.4), as a [`TableSet`] made from the log's schema
//! records in force at an offset; and their Arrow schemas, the same for every writer and
//! reader.
//!
//! Invariants: a set at a later offset extends the set at an earlier one: the same tables
//! at the same indices (the five first, then registered tables in the order their first
//! version was recorded), each with the same columns or more (an ADDITION's properties
//! appended after the type's earlier ones). A table's columns never change type or order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::ProjectError;
use crate::event::{EventType, FieldKind};
use crate::log::{EventLog, SchemaRecord};
use crate::schema::ColumnType;

/// A seed table of the contract: its name for SQL and Hive, its directory, its event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedTable {
    pub name: &'static str,
    pub location: &'static str,
    pub event_type: EventType,
}

/// The five seed tables, in contract order (`EventType::index`).
pub const SEED_TABLES: [SeedTable; 5] = [
    SeedTable { name: "guild_joins", location: "guild_joins", event_type: EventType::JoinGuild },
    SeedTable { name: "enemy_kills", location: "enemies_killed", event_type: EventType::KillEnemy },
    SeedTable { name: "quests", location: "quest_accept", event_type: EventType::AcceptQuest },
    SeedTable { name: "take_damage", location: "damage_taken", event_type: EventType::TakeDamage },
    SeedTable { name: "transactions", location: "transactions", event_type: EventType::BuyAsset },
];

pub fn table_for(t: EventType) -> &'static SeedTable {
    &SEED_TABLES[t.index()]
}

/// One table: its name for SQL and Hive, its directory under the tables' root, and what it
/// holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    pub location: String,
    pub kind: TableKind,
    /// The first log offset that can hold one of its events: 0 for the seed's tables, the
    /// `from_offset` of its model's first version for a registered type's. A table not
    /// written yet reaches this offset (it holds every event of its type before it: none).
    pub from_offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableKind {
    Seed(EventType),
    Registered(RegisteredTable),
}

/// The table of one model of a registered type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredTable {
    pub event_type: String,
    pub model: u32,
    /// The first version's properties in its order, then each ADDITION's new ones.
    pub columns: Vec<PropertyColumn>,
    /// How many of `columns` are the first version's: the table as it is made.
    pub first_columns: usize,
}

/// A property's column in a registered type's table (docs/CONTRACT.md 13.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyColumn {
    pub name: String,
    pub column: ColumnType,
    pub nullable: bool,
}

impl TableDef {
    pub fn seed(t: EventType) -> TableDef {
        let s = table_for(t);
        TableDef { name: s.name.to_string(), location: s.location.to_string(), kind: TableKind::Seed(t), from_offset: 0 }
    }

    /// The seed type this table holds, if it is one of the five.
    pub fn builtin(&self) -> Option<EventType> {
        match &self.kind {
            TableKind::Seed(t) => Some(*t),
            TableKind::Registered(_) => None,
        }
    }

    pub fn registered(&self) -> Option<&RegisteredTable> {
        match &self.kind {
            TableKind::Seed(_) => None,
            TableKind::Registered(r) => Some(r),
        }
    }

    /// The `event_type` every row of it holds.
    pub fn event_type(&self) -> &str {
        match &self.kind {
            TableKind::Seed(t) => t.as_str(),
            TableKind::Registered(r) => &r.event_type,
        }
    }

    /// The columns of the type's properties, in table order, with their column types and
    /// nullability (the seed's as their built-in schemas map them).
    pub fn property_columns(&self) -> Vec<PropertyColumn> {
        match &self.kind {
            TableKind::Seed(t) => t
                .fields()
                .iter()
                .map(|(name, kind)| PropertyColumn {
                    name: name.to_string(),
                    column: match kind {
                        FieldKind::Id => ColumnType::BigInt,
                        FieldKind::Text => ColumnType::String,
                        FieldKind::SmallInt => ColumnType::SmallInt,
                        FieldKind::Cost => ColumnType::Float,
                    },
                    nullable: false,
                })
                .collect(),
            TableKind::Registered(r) => r.columns.clone(),
        }
    }

    /// The Arrow schema of the table; `partitioned` (projected from a Kafka topic) adds
    /// `log_partition` after the contract's columns.
    pub fn arrow_schema(&self, partitioned: bool) -> SchemaRef {
        match &self.kind {
            TableKind::Seed(t) => schema_for(*t, partitioned),
            TableKind::Registered(r) => {
                envelope_schema(r.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.column), c.nullable)), partitioned)
            }
        }
    }

    /// The table without the columns after its first `properties` (a registered table as
    /// it was before an ADDITION); a seed table as it is.
    pub fn with_properties(&self, properties: usize) -> TableDef {
        let mut narrower = self.clone();
        if let TableKind::Registered(r) = &mut narrower.kind {
            r.columns.truncate(properties);
        }
        narrower
    }
}

/// The tables in force at one log offset: the five, then registered tables (see the
/// module's invariants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSet {
    defs: Vec<Arc<TableDef>>,
    /// Registered tables by type name: (model, index).
    by_type: HashMap<String, Vec<(u32, usize)>>,
}

impl Default for TableSet {
    fn default() -> TableSet {
        TableSet::seed()
    }
}

impl TableSet {
    /// The five seed tables alone (a log with no registered type, or a Kafka log).
    pub fn seed() -> TableSet {
        TableSet { defs: EventType::ALL.iter().map(|t| Arc::new(TableDef::seed(*t))).collect(), by_type: HashMap::new() }
    }

    /// The tables of the log's schema records in force at offset `at` (those recorded with
    /// `from_offset <= at`): what a projection reaching `at` holds.
    pub fn from_records(records: &[SchemaRecord], at: u64) -> Result<TableSet, ProjectError> {
        let mut set = TableSet::seed();
        for r in records.iter().filter(|r| r.from_offset <= at) {
            let s = crate::schema::Schema::from_record(&r.content, &r.hash)
                .map_err(|e| ProjectError::Schema { table: r.hash.clone(), reason: e.to_string() })?;
            let name = s.table_name();
            match set.defs.iter().position(|d| d.name == name) {
                None => {
                    let columns: Vec<PropertyColumn> = s
                        .properties
                        .iter()
                        .map(|p| PropertyColumn { name: p.name.clone(), column: p.column, nullable: p.nullable() })
                        .collect();
                    set.by_type.entry(s.name.clone()).or_default().push((s.version.model, set.defs.len()));
                    set.defs.push(Arc::new(TableDef {
                        location: name.clone(),
                        name,
                        kind: TableKind::Registered(RegisteredTable {
                            event_type: s.name.clone(),
                            model: s.version.model,
                            first_columns: columns.len(),
                            columns,
                        }),
                        from_offset: r.from_offset,
                    }));
                }
                Some(i) => {
                    let mut def = (*set.defs[i]).clone();
                    if let TableKind::Registered(t) = &mut def.kind {
                        for p in &s.properties {
                            if !t.columns.iter().any(|c| c.name == p.name) {
                                // An ADDITION's property is optional: its column nullable.
                                t.columns.push(PropertyColumn { name: p.name.clone(), column: p.column, nullable: true });
                            }
                        }
                    }
                    set.defs[i] = Arc::new(def);
                }
            }
        }
        Ok(set)
    }

    /// The set of `defs` (tables as a projector has them open, in set order).
    pub fn of(defs: &[Arc<TableDef>]) -> TableSet {
        let mut by_type: HashMap<String, Vec<(u32, usize)>> = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            if let Some(r) = d.registered() {
                by_type.entry(r.event_type.clone()).or_default().push((r.model, i));
            }
        }
        TableSet { defs: defs.to_vec(), by_type }
    }

    /// The tables of `log` in force at offset `at`.
    pub fn from_log(log: &dyn EventLog, at: u64) -> Result<TableSet, ProjectError> {
        TableSet::from_records(&log.schemas()?, at)
    }

    pub fn defs(&self) -> &[Arc<TableDef>] {
        &self.defs
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn get(&self, i: usize) -> &Arc<TableDef> {
        &self.defs[i]
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Arc<TableDef>> {
        self.defs.iter()
    }

    /// The index of the table of a registered type's `model`.
    pub fn registered_index(&self, event_type: &str, model: u32) -> Option<usize> {
        self.by_type.get(event_type)?.iter().find(|(m, _)| *m == model).map(|(_, i)| *i)
    }

    /// The table a record of `payload` goes to: its seed type's, or its registered type's
    /// model's (an error, naming the record by `at`, when none of this set's schema records
    /// has that model); `None` for a payload of no table.
    pub fn table_of<S: AsRef<str>>(
        &self,
        payload: &crate::event::Payload<S>,
        at: impl Fn() -> String,
    ) -> Result<Option<usize>, ProjectError> {
        match payload {
            crate::event::Payload::Custom(c) => {
                let (name, model) = (c.event_type.as_ref(), c.version[0]);
                self.registered_index(name, model).map(Some).ok_or_else(|| ProjectError::Schema {
                    table: format!("{name}_{model}"),
                    reason: format!(
                        "{} is of type {name} version {}, which no schema record in force there has",
                        at(),
                        c.version.map(|v| v.to_string()).join("-")
                    ),
                })
            }
            p => Ok(p.builtin().map(|t| t.index())),
        }
    }
}

fn envelope_schema(properties: impl Iterator<Item = Field>, partitioned: bool) -> SchemaRef {
    let utf8 = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    let mut fields = vec![
        utf8("raw_event", false),
        utf8("timestamp", false),
        utf8("accept", true),
        utf8("host", true),
        utf8("user_agent", true),
        utf8("event_type", false),
    ];
    fields.extend(properties);
    fields.push(Field::new("log_offset", DataType::Int64, false));
    fields.push(utf8("event_id", true));
    fields.push(utf8("player_id", true));
    fields.push(utf8("session_id", true));
    fields.push(Field::new("event_time", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true));
    if partitioned {
        fields.push(Field::new("log_partition", DataType::Int32, false));
    }
    Arc::new(Schema::new(fields))
}

/// The Arrow schema of a seed table projected from the sled log, in contract column order.
pub fn schema(t: EventType) -> SchemaRef {
    schema_for(t, false)
}

/// The Arrow schema of a seed table; `partitioned` (projected from a Kafka topic) adds
/// `log_partition` after the contract's columns.
pub fn schema_for(t: EventType, partitioned: bool) -> SchemaRef {
    let fields = t.fields().iter().map(|(name, kind)| {
        let dt = match kind {
            FieldKind::Id => DataType::Int64,
            FieldKind::Text => DataType::Utf8,
            FieldKind::SmallInt => DataType::Int16,
            FieldKind::Cost => DataType::Float32,
        };
        Field::new(*name, dt, false)
    });
    envelope_schema(fields, partitioned)
}

/// The Arrow type of a schema's column type (docs/CONTRACT.md 13.2).
pub fn arrow_type(c: ColumnType) -> DataType {
    match c {
        ColumnType::SmallInt => DataType::Int16,
        ColumnType::Int => DataType::Int32,
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Boolean => DataType::Boolean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's five types written as schemas map to exactly today's columns: the same
    /// names, Arrow types and nullability (SMALLINT stays SMALLINT, FLOAT stays FLOAT).
    #[test]
    fn the_builtin_schemas_map_to_the_seed_columns() {
        for (t, s) in EventType::ALL.into_iter().zip(crate::schema::builtin::schemas()) {
            let table = schema(t);
            let fields = &table.fields()[6..6 + t.fields().len()];
            let from_schema: Vec<(String, DataType, bool)> =
                s.properties.iter().map(|p| (p.name.clone(), arrow_type(p.column), p.nullable())).collect();
            let today: Vec<(String, DataType, bool)> =
                fields.iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
            assert_eq!(from_schema, today, "{t}");
        }
    }

    fn record(from_offset: u64, file: &str) -> SchemaRecord {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("replay/schemas").join(file);
        let s = crate::schema::Schema::parse(&std::fs::read(path).unwrap()).unwrap();
        SchemaRecord { from_offset, hash: s.hash(), content: s.canonical().as_bytes().to_vec(), from_partitions: Vec::new() }
    }

    fn names(set: &TableSet) -> Vec<(&str, u64, Vec<String>)> {
        set.iter().map(|d| (d.name.as_str(), d.from_offset, d.property_columns().into_iter().map(|c| c.name).collect())).collect()
    }

    /// The tables in force at an offset: the seed's five, then one per model in the order
    /// recorded; an ADDITION widens its model's table from its offset on (the set before
    /// it is the table without the column), a new MODEL is a table of its own.
    #[test]
    fn the_tables_in_force_follow_the_schema_records() {
        let records = [
            record(0, "level_up-1-0-0.json"),
            record(0, "match_end-1-0-0.json"),
            record(100, "level_up-1-0-1.json"),
            record(250, "match_end-2-0-0.json"),
        ];
        assert_eq!(TableSet::from_records(&[], u64::MAX).unwrap(), TableSet::seed());
        let seed: Vec<&str> = SEED_TABLES.iter().map(|t| t.name).collect();
        let end = TableSet::from_records(&records, u64::MAX).unwrap();
        let got = names(&end);
        assert_eq!(got.iter().map(|(n, _, _)| *n).collect::<Vec<_>>()[..5], seed[..]);
        let level = vec!["level", "class", "reached_at", "won_boss", "loadout"];
        let mut level_zone = level.clone();
        level_zone.push("zone");
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        assert_eq!(got[5], ("level_up", 0, strings(&level_zone)));
        assert_eq!(got[6].0, "match_end");
        assert_eq!((got[7].0, got[7].1), ("match_end_2", 250));
        assert_eq!(end.registered_index("match_end", 2), Some(7));
        assert_eq!(end.registered_index("match_end", 1), Some(6));
        assert_eq!(end.registered_index("level_up", 2), None);
        // Before the ADDITION: the same table without `zone`; before model 2: no table.
        let before = TableSet::from_records(&records, 99).unwrap();
        assert_eq!(names(&before)[5], ("level_up", 0, strings(&level)));
        assert_eq!(before.len(), 7);
        assert_eq!(*before.get(5), Arc::new(end.get(5).with_properties(5)));
        // The added column is nullable, the first version's keep theirs.
        let zone = end.get(5).property_columns().into_iter().find(|c| c.name == "zone").unwrap();
        assert!(zone.nullable);
        assert!(!end.get(5).property_columns()[0].nullable, "level is required");
        // A set at a later offset extends the earlier one.
        assert_eq!(TableSet::of(before.defs()).defs(), before.defs());
        let arrow = end.get(5).arrow_schema(false);
        let zone_at = arrow.index_of("zone").unwrap();
        assert_eq!((arrow.field(zone_at - 1).name().as_str(), arrow.field(zone_at + 1).name().as_str()), ("loadout", "log_offset"));
        assert_eq!(
            arrow.field(arrow.index_of("reached_at").unwrap()).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
    }

    #[test]
    fn schemas_follow_the_contract() {
        let s = schema(EventType::BuyAsset);
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "raw_event",
                "timestamp",
                "accept",
                "host",
                "user_agent",
                "event_type",
                "store_id",
                "item_name",
                "inventory_id",
                "total_cost",
                "category",
                "on_hand_qty",
                "log_offset",
                "event_id",
                "player_id",
                "session_id",
                "event_time"
            ]
        );
    }
}
