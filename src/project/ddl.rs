//! DDL for other engines: Hive `CREATE EXTERNAL TABLE` over the plain-directory view, and
//! Spark, Trino and DuckDB statements over the Delta tables.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::DataType;

use super::{ProjectError, TableDef, TablesRoot};

/// The Hive `CREATE EXTERNAL TABLE` statements for `tables` (the seed's five, then
/// registered types', with every column their schemas have) at `tables_dir` (normally the
/// absolute `DATA_DIR/tables`): the seed's DDL with questlog's columns. Files written
/// before an ADDITION lack its columns: Hive and Spark read Parquet by column name and
/// give those rows nulls.
pub fn hive_ddl(tables_dir: &Path, tables: &[Arc<TableDef>]) -> String {
    let mut out = String::new();
    for def in tables {
        let s = def.arrow_schema(false);
        let cols: Vec<String> = s
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Utf8 => "string",
                    DataType::Int64 => "bigint",
                    DataType::Int32 => "int",
                    DataType::Int16 => "smallint",
                    DataType::Float32 => "float",
                    DataType::Float64 => "double",
                    DataType::Boolean => "boolean",
                    DataType::Timestamp(..) => "timestamp",
                    _ => "string",
                };
                format!("  {} {}", quote_hive(f.name()), ty)
            })
            .collect();
        out.push_str(&format!(
            "create external table if not exists default.{} (\n{}\n) stored as parquet location '{}'\ntblproperties (\"parquet.compress\"=\"SNAPPY\");\n\n",
            def.name,
            cols.join(",\n"),
            tables_dir.join(&def.location).display()
        ));
    }
    out
}

/// The statements that register `tables`, Delta tables at `root`, in Spark (Delta Lake's
/// `USING DELTA`), Trino's Delta Lake connector, and DuckDB (`delta_scan`).
pub fn delta_ddl(root: &TablesRoot, tables: &[Arc<TableDef>]) -> Result<String, ProjectError> {
    let mut spark = String::from("-- Spark with Delta Lake (spark-sql --packages io.delta:delta-spark_2.13:<version>)\n");
    let mut trino = String::from("-- Trino, Delta Lake connector (catalog `delta`)\n");
    let mut duck = String::from("-- DuckDB (INSTALL delta; LOAD delta; for s3:// also httpfs and a CREATE SECRET)\n");
    for def in tables {
        let url = root.table_url(def)?;
        let location = match root {
            TablesRoot::Local(dir) => dir.join(&def.location).display().to_string(),
            TablesRoot::S3 { .. } => url.as_str().trim_end_matches('/').to_string(),
        };
        let quoted = location.replace('\'', "''");
        spark.push_str(&format!("create table if not exists default.{} using delta location '{quoted}';\n", def.name));
        trino.push_str(&format!(
            "call delta.system.register_table(schema_name => 'default', table_name => '{}', table_location => '{quoted}');\n",
            def.name
        ));
        duck.push_str(&format!("create or replace view {} as select * from delta_scan('{quoted}');\n", def.name));
    }
    Ok(format!("{spark}\n{trino}\n{duck}"))
}

fn quote_hive(name: &str) -> String {
    // `timestamp` is a reserved word in Hive 3; back-quote every name for safety.
    format!("`{name}`")
}
