//! The five tables of the contract: their names and places ([`TABLES`]) and their Arrow
//! schemas (the columns of docs/CONTRACT.md 5.2), the same for every writer and reader.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::{EventType, FieldKind};
use crate::schema::ColumnType;

/// A table of the contract: its name for SQL and Hive, its directory, its event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDef {
    pub name: &'static str,
    pub location: &'static str,
    pub event_type: EventType,
}

/// The five tables, in contract order.
pub const TABLES: [TableDef; 5] = [
    TableDef { name: "guild_joins", location: "guild_joins", event_type: EventType::JoinGuild },
    TableDef { name: "enemy_kills", location: "enemies_killed", event_type: EventType::KillEnemy },
    TableDef { name: "quests", location: "quest_accept", event_type: EventType::AcceptQuest },
    TableDef { name: "take_damage", location: "damage_taken", event_type: EventType::TakeDamage },
    TableDef { name: "transactions", location: "transactions", event_type: EventType::BuyAsset },
];

pub fn table_for(t: EventType) -> &'static TableDef {
    &TABLES[t.index()]
}

/// The Arrow schema of a table projected from the sled log, in contract column order.
pub fn schema(t: EventType) -> SchemaRef {
    schema_for(t, false)
}

/// The Arrow schema of a table; `partitioned` (projected from a Kafka topic) adds
/// `log_partition` after the contract's columns.
pub fn schema_for(t: EventType, partitioned: bool) -> SchemaRef {
    let utf8 = |n: &str, nullable: bool| Field::new(n, DataType::Utf8, nullable);
    let mut fields = vec![
        utf8("raw_event", false),
        utf8("timestamp", false),
        utf8("accept", true),
        utf8("host", true),
        utf8("user_agent", true),
        utf8("event_type", false),
    ];
    for (name, kind) in t.fields() {
        let dt = match kind {
            FieldKind::Id => DataType::Int64,
            FieldKind::Text => DataType::Utf8,
            FieldKind::SmallInt => DataType::Int16,
            FieldKind::Cost => DataType::Float32,
        };
        fields.push(Field::new(*name, dt, false));
    }
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
