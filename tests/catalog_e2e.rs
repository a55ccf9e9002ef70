//! The store catalogue end to end, with the real binary: `serve --catalog` accepts and
//! rejects purchases as the contract says, fills in seed-style `GET /buy_asset`, records
//! the catalogue in the log (a swap is a new version at its offset), keeps stock from the
//! log; a corrupt or schema-less file is refused with its name and what is missing, and
//! nothing is appended. (tests/external/run.sh does the same with a catalogue made by the
//! `sqlite3` tool, and checks `sql` against DuckDB.)

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/catalog-example.sqlite")
}

fn buy(store: i64, inv: i64, name: &str, category: &str, cost: f64, id: &str) -> String {
    format!(
        r#"{{"event_type":"buy_asset","store_id":{store},"inventory_id":{inv},"item_name":"{name}","category":"{category}","total_cost":{cost},"on_hand_qty":1,"event_id":"{id}","event_time":"2026-01-01T00:00:00Z"}}"#
    )
}

fn log_end(dir: &Path) -> usize {
    replay_lines(dir).len()
}

#[test]
fn serve_with_a_catalogue_checks_fills_in_and_keeps_stock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let catalog = fixture();
    let server = Server::start_with(d, &["--catalog", catalog.to_str().unwrap()]);

    // POST: one good purchase, then each way to disagree with the catalogue.
    let cases = [
        (buy(1, 1001, "Iron Shortsword", "weapon", 25.0, "a1"), None),
        (buy(9, 1001, "Iron Shortsword", "weapon", 25.0, "a2"), Some(("unknown_store", "store_id"))),
        (buy(1, 2001, "Antidote", "potion", 0.95, "a3"), Some(("unknown_item", "inventory_id"))),
        (buy(1, 1001, "Wooden Sword", "weapon", 25.0, "a4"), Some(("catalog_mismatch", "item_name"))),
        (buy(1, 1001, "Iron Shortsword", "armor", 25.0, "a5"), Some(("catalog_mismatch", "category"))),
        // Below list price is a sale, not an error.
        (buy(2, 2001, "Antidote", "potion", 0.5, "a6"), None),
    ];
    let body = format!("[{}]", cases.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>().join(","));
    let r = server.post("/v1/events", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["accepted"], 2, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    let expected: Vec<(usize, &str, &str)> = cases.iter().enumerate().filter_map(|(i, (_, e))| e.map(|(r, f)| (i, r, f))).collect();
    assert_eq!(rejected.len(), expected.len(), "{v}");
    for (got, (i, reason, field)) in rejected.iter().zip(&expected) {
        assert_eq!(
            (got["index"].as_u64().unwrap() as usize, got["reason"].as_str().unwrap(), got["field"].as_str().unwrap()),
            (*i, *reason, *field),
            "{got}"
        );
    }

    // The seed's route: store and item ids only; the rest from the catalogue.
    let r = server.get("/buy_asset?store_id=3&inventory_id=3001&quantity=2&player_id=p-1&event_time=2026-01-01T00:00:05Z");
    assert_eq!(r.status, 200, "{}", r.text());
    // The server's count moves with what it stored.
    let r = server.get("/buy_asset?store_id=3&inventory_id=3001&quantity=2&event_time=2026-01-01T00:00:06Z");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.get("/buy_asset?store_id=3&inventory_id=9999");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["rejected"][0]["reason"], "unknown_item");
    let r = server.get("/buy_asset?store_id=3&inventory_id=3001&quantity=0");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["rejected"][0]["field"], "quantity");
    server.stop();

    let lines = replay_lines(d);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let filled: serde_json::Value = serde_json::from_str(lines[2]["raw_event"].as_str().unwrap()).unwrap();
    assert_eq!(filled["item_name"], "Pack Mule");
    assert_eq!(filled["category"], "mount");
    assert_eq!(filled["total_cost"].as_f64().unwrap(), 300.0, "2 × the list price of $150.00");
    // Starting stock 60, never restocked: 2 taken.
    assert_eq!(filled["on_hand_qty"], 58);
    assert!(filled.get("quantity").is_none(), "quantity is not an event field: {filled}");
    let second: serde_json::Value = serde_json::from_str(lines[3]["raw_event"].as_str().unwrap()).unwrap();
    assert_eq!(second["on_hand_qty"], 56);

    // The log recorded the catalogue; stock comes from the log.
    let history = questlog_ok(d, &["catalog", "history"]);
    assert!(history.contains("from offset          0") && history.contains("sha256:"), "{history}");
    questlog_ok(d, &["project"]);
    let csv = questlog_ok(
        d,
        &["sql", "select store_id, inventory_id, on_hand_qty, sold_qty, purchases from stock where purchases > 0 order by store_id, inventory_id", "--format", "csv"],
    );
    assert_eq!(csv, "store_id,inventory_id,on_hand_qty,sold_qty,purchases\n1,1001,399,1,1\n2,2001,2999,1,1\n3,3001,56,4,2\n", "{csv}");
    let joined = questlog_ok(
        d,
        &["sql", "select c.store_name, count(*) as n from transactions t join catalog_items c using (store_id, inventory_id) group by c.store_name order by 1", "--format", "csv"],
    );
    assert_eq!(joined, "store_name,n\nIronhold Armoury,1\nMoonwell Apothecary,1\nSkyreach Stables,2\n", "{joined}");
    let report = questlog_ok(d, &["report", "--out", d.join("r").to_str().unwrap()]);
    assert!(report.contains("Catalogue: revenue $625.50 against $625.95 at list price"), "{report}");
    let ddl = questlog_ok(d, &["ddl"]);
    assert!(ddl.contains("(type sqlite, read_only)") && ddl.contains("catalog/catalog.sqlite"), "{ddl}");

    // Another catalogue is a new version at the offset it took effect; the same one again
    // adds nothing.
    let other = d.join("other.sqlite");
    questlog_ok(d, &["catalog", "init", "--seed", "3", "--out", other.to_str().unwrap()]);
    let server = Server::start_with(d, &["--catalog", other.to_str().unwrap()]);
    server.stop();
    let server = Server::start_with(d, &["--catalog", other.to_str().unwrap()]);
    let r = server.get("/buy_asset?store_id=3&inventory_id=3001&event_time=2026-01-01T00:00:07Z");
    assert_eq!(r.status, 200, "{}", r.text());
    server.stop();
    // A new server read the stock back from the log, and the new catalogue kept it.
    let lines = replay_lines(d);
    let third: serde_json::Value = serde_json::from_str(lines[4]["raw_event"].as_str().unwrap()).unwrap();
    assert_eq!((third["item_name"].as_str(), third["on_hand_qty"].as_i64()), (Some("Pack Mule"), Some(55)), "{third}");
    let history = questlog_ok(d, &["catalog", "history"]);
    let versions: Vec<&str> = history.lines().collect();
    assert_eq!(versions.len(), 2, "{history}");
    assert!(versions[1].starts_with("from offset          4 "), "{history}");
}

#[test]
fn a_corrupt_or_schema_less_catalogue_is_refused_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    questlog_ok(d, &["generate", "--seed", "1", "--events", "10"]);

    // Not a database at all.
    let garbage = d.join("garbage.sqlite");
    std::fs::write(&garbage, b"this is not an SQLite database, just text pretending to be one....").unwrap();
    // A real SQLite file with other tables.
    let empty = d.join("empty.sqlite");
    {
        let c = rusqlite::Connection::open(&empty).unwrap();
        c.execute_batch("create table stores (store_id integer primary key, name text); create table notes (x text);").unwrap();
    }
    // A damaged catalogue: the example with its pages overwritten past the header.
    let damaged = d.join("damaged.sqlite");
    let mut bytes = std::fs::read(fixture()).unwrap();
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&damaged, bytes).unwrap();

    let cases: [(&Path, &[&str]); 4] = [
        (&garbage, &["is not a readable SQLite database", "garbage.sqlite"]),
        (
            &empty,
            &[
                "empty.sqlite",
                "is not a questlog catalogue",
                "column `stores.traffic_weight`",
                "column `stores.restock_interval_hours`",
                "table `items`",
            ],
        ),
        (&damaged, &["damaged.sqlite", "is not a readable SQLite database"]),
        (&d.join("missing.sqlite"), &["missing.sqlite", "no such file"]),
    ];
    for (file, says) in cases {
        for args in [vec!["serve", "--listen", "127.0.0.1:0", "--catalog"], vec!["generate", "--seed", "2", "--events", "5", "--catalog"]] {
            let mut args = args;
            args.push(file.to_str().unwrap());
            let out = questlog(d, &args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} succeeded");
            for s in says {
                assert!(err.contains(s), "{args:?}: {err:?} does not say {s:?}");
            }
        }
    }
    assert_eq!(log_end(d), 10, "nothing appended");
    let history = questlog_ok(d, &["catalog", "history"]);
    assert!(history.contains("no store catalogue"), "{history}");
}

#[test]
fn the_shipped_example_file_is_its_sql_and_init_writes_a_valid_catalogue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let built = d.join("from-sql.sqlite");
    let sql = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/catalog-example.sql")).unwrap();
    rusqlite::Connection::open(&built).unwrap().execute_batch(&sql).unwrap();
    let hash = |f: &Path| {
        questlog_ok(d, &["catalog", "show", f.to_str().unwrap()]).split_whitespace().find(|w| w.starts_with("sha256:")).unwrap().to_string()
    };
    assert_eq!(hash(&built), hash(&fixture()), "fixtures/catalog-example.sqlite is not fixtures/catalog-example.sql");

    let a = d.join("a.sqlite");
    let b = d.join("b.sqlite");
    questlog_ok(d, &["catalog", "init", "--seed", "9", "--out", a.to_str().unwrap()]);
    questlog_ok(d, &["catalog", "init", "--seed", "9", "--out", b.to_str().unwrap()]);
    assert_eq!(hash(&a), hash(&b), "the same seed, the same catalogue");
    let again = questlog(d, &["catalog", "init", "--seed", "9", "--out", a.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("the file exists"));
    let schema = questlog_ok(d, &["catalog", "schema"]);
    assert!(schema.contains("CREATE TABLE stores") && schema.contains("CREATE TABLE items"), "{schema}");
}
