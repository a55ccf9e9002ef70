//! The store catalogue: the seed's SQLite reference data — the stores, the items each
//! sells, their categories, list prices, starting stock and restock rule — read with
//! SQLite itself (`rusqlite`, bundled); how a purchase is checked against it and how a
//! seed-style purchase is filled in from it; and stock as a deterministic function of the
//! log's purchases ([`StockBook`]), never a counter mutated in SQLite.
//!
//! The schema is [`SCHEMA_SQL`] (docs/CONTRACT.md, section 12). A catalogue is identified
//! by the SHA-256 of its canonical form ([`Catalog::canonical`]: every row, sorted by key,
//! as JSON), so the same content in two SQLite files of different layout has one hash, and
//! the log records that canonical copy: replay, rebuild and `check` never read the file
//! again.
//!
//! Invariants:
//! - A [`Catalog`] is valid: keys unique, every item's store exists, prices positive,
//!   stock within `SMALLINT`, texts within the event limits. [`Catalog::open`] refuses a
//!   file that breaks any of this with an error naming the file and what is wrong.
//! - [`StockBook`] depends only on the purchases and catalogue versions it is given, in
//!   order: the API, the generator and the `stock` table compute the same numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Payload, Record, RejectReason, Rejection, MAX_STRING_BYTES};

/// The catalogue's tables, as `catalog init` writes them and a studio's own file must have
/// them (extra tables and columns are ignored; column types are SQLite's affinities).
pub const SCHEMA_SQL: &str = "\
CREATE TABLE stores (
  store_id               INTEGER PRIMARY KEY,   -- the events' store_id
  name                   TEXT NOT NULL,
  traffic_weight         REAL NOT NULL DEFAULT 1 CHECK (traffic_weight >= 0),
                                                -- share of shoppers (generate)
  restock_interval_hours INTEGER NOT NULL DEFAULT 0 CHECK (restock_interval_hours >= 0)
                                                -- restocks at every multiple of this
                                                -- many hours of event time (UTC); 0: never
);
CREATE TABLE items (
  store_id         INTEGER NOT NULL REFERENCES stores(store_id),
  inventory_id     INTEGER NOT NULL,            -- the events' inventory_id
  name             TEXT NOT NULL,               -- must equal the events' item_name
  category         TEXT NOT NULL,               -- must equal the events' category
  unit_price_cents INTEGER NOT NULL CHECK (unit_price_cents > 0),
  starting_stock   INTEGER NOT NULL CHECK (starting_stock BETWEEN 0 AND 32767),
                                                -- also the shelf capacity restocks fill to
  restock_qty      INTEGER NOT NULL DEFAULT 0 CHECK (restock_qty >= 0),
                                                -- units added per restock; 0: never
  min_level        INTEGER NOT NULL DEFAULT 1 CHECK (min_level BETWEEN 0 AND 32767),
                                                -- lowest player level that buys it (generate)
  PRIMARY KEY (store_id, inventory_id)
);
";

/// The columns a catalogue file must have, per table, in the order they are read.
const REQUIRED: [(&str, &[&str]); 2] = [
    ("stores", &["store_id", "name", "traffic_weight", "restock_interval_hours"]),
    ("items", &["store_id", "inventory_id", "name", "category", "unit_price_cents", "starting_stock", "restock_qty", "min_level"]),
];

/// Most stores a catalogue may have. Every store is held in memory by the API and the
/// generator; a game's shops number in the hundreds.
pub const MAX_STORES: usize = 10_000;
/// Most items a catalogue may have: its canonical copy goes into the log (about 150 bytes
/// an item, so 15 MB at most) and is held in memory by the API.
pub const MAX_ITEMS: usize = 100_000;
/// Largest `quantity` of a seed-style purchase: a total cost stays a finite `f32` and a
/// typo does not become a purchase of millions of units.
pub const MAX_PURCHASE_QUANTITY: i64 = 10_000;
/// Longest restock interval: a year of hours; longer is a typo for "never" (0).
const MAX_RESTOCK_INTERVAL_HOURS: i64 = 366 * 24;
const HOUR_US: i64 = 3_600_000_000;

/// What is wrong with a catalogue file, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalogue {path}: no such file")]
    Missing { path: PathBuf },
    #[error("catalogue {path} is not a readable SQLite database: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("catalogue {path} is not a questlog catalogue: missing {missing} (the schema is in docs/CONTRACT.md, section 12; `questlog catalog schema` prints it)")]
    Schema { path: PathBuf, missing: String },
    #[error("catalogue {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("writing catalogue {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the log's catalogue copy {hash} does not decode: {reason}")]
    Copy { hash: String, reason: String },
}

/// A store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Store {
    pub store_id: i64,
    pub name: String,
    pub traffic_weight: f64,
    pub restock_interval_hours: i64,
}

/// An item a store sells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub store_id: i64,
    pub inventory_id: i64,
    pub name: String,
    pub category: String,
    pub unit_price_cents: i64,
    pub starting_stock: i64,
    pub restock_qty: i64,
    pub min_level: i64,
}

/// A whole catalogue, valid, stores sorted by id and items by (store, inventory id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub stores: Vec<Store>,
    pub items: Vec<Item>,
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
    move |e| CatalogError::Corrupt { path: path.to_path_buf(), reason: e.to_string() }
}

impl Catalog {
    /// Builds a catalogue from rows in any order, checking every rule of the schema.
    /// `path` names the source in errors.
    pub fn new(mut stores: Vec<Store>, mut items: Vec<Item>, path: &Path) -> Result<Catalog, CatalogError> {
        let bad = |reason: String| CatalogError::Invalid { path: path.to_path_buf(), reason };
        if stores.is_empty() {
            return Err(bad("table `stores` is empty".into()));
        }
        if stores.len() > MAX_STORES {
            return Err(bad(format!("{} stores, over the limit of {MAX_STORES}", stores.len())));
        }
        if items.len() > MAX_ITEMS {
            return Err(bad(format!("{} items, over the limit of {MAX_ITEMS}", items.len())));
        }
        let text = |what: String, s: &str| -> Result<(), CatalogError> {
            if s.is_empty() || s.len() > MAX_STRING_BYTES {
                return Err(bad(format!("{what} must be 1 to {MAX_STRING_BYTES} bytes, is {}", s.len())));
            }
            Ok(())
        };
        stores.sort_by_key(|s| s.store_id);
        for w in stores.windows(2) {
            if w[0].store_id == w[1].store_id {
                return Err(bad(format!("store_id {} appears twice in `stores`", w[0].store_id)));
            }
        }
        for s in &stores {
            let at = format!("store {}", s.store_id);
            if s.store_id < 0 {
                return Err(bad(format!("{at}: store_id must not be negative")));
            }
            text(format!("{at}: name"), &s.name)?;
            if !(s.traffic_weight.is_finite() && s.traffic_weight >= 0.0) {
                return Err(bad(format!("{at}: traffic_weight must be a finite number >= 0, is {}", s.traffic_weight)));
            }
            if !(0..=MAX_RESTOCK_INTERVAL_HOURS).contains(&s.restock_interval_hours) {
                return Err(bad(format!(
                    "{at}: restock_interval_hours must be 0 to {MAX_RESTOCK_INTERVAL_HOURS}, is {}",
                    s.restock_interval_hours
                )));
            }
        }
        items.sort_by_key(|i| (i.store_id, i.inventory_id));
        for w in items.windows(2) {
            if (w[0].store_id, w[0].inventory_id) == (w[1].store_id, w[1].inventory_id) {
                return Err(bad(format!("item (store_id {}, inventory_id {}) appears twice in `items`", w[0].store_id, w[0].inventory_id)));
            }
        }
        for i in &items {
            let at = format!("item (store_id {}, inventory_id {})", i.store_id, i.inventory_id);
            if stores.binary_search_by_key(&i.store_id, |s| s.store_id).is_err() {
                return Err(bad(format!("{at}: store {} is not in `stores`", i.store_id)));
            }
            if i.inventory_id < 0 {
                return Err(bad(format!("{at}: inventory_id must not be negative")));
            }
            text(format!("{at}: name"), &i.name)?;
            text(format!("{at}: category"), &i.category)?;
            // A total cost of MAX_PURCHASE_QUANTITY units must stay a finite f32 with cents.
            if !(1..=1_000_000_000).contains(&i.unit_price_cents) {
                return Err(bad(format!("{at}: unit_price_cents must be 1 to 1000000000, is {}", i.unit_price_cents)));
            }
            if !(0..=i16::MAX as i64).contains(&i.starting_stock) {
                return Err(bad(format!("{at}: starting_stock must be 0 to 32767, is {}", i.starting_stock)));
            }
            if !(0..=i16::MAX as i64).contains(&i.restock_qty) {
                return Err(bad(format!("{at}: restock_qty must be 0 to 32767, is {}", i.restock_qty)));
            }
            if !(0..=i16::MAX as i64).contains(&i.min_level) {
                return Err(bad(format!("{at}: min_level must be 0 to 32767, is {}", i.min_level)));
            }
        }
        Ok(Catalog { stores, items })
    }

    /// Reads a catalogue file with SQLite, read-only. A file that is not a database, is
    /// damaged, lacks a table or column, or holds a value the schema forbids is refused
    /// with an error that names the file and what is wrong.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        if !path.is_file() {
            return Err(CatalogError::Missing { path: path.to_path_buf() });
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(sqlite_err(path))?;
        // Reading the schema is the first read of the file: a non-database fails here.
        let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0)).map_err(sqlite_err(path))?;
        if check != "ok" {
            return Err(CatalogError::Corrupt { path: path.to_path_buf(), reason: format!("integrity check: {check}") });
        }
        let mut missing = Vec::new();
        for (table, columns) in REQUIRED {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(sqlite_err(path))?;
            let have: Vec<String> = stmt
                .query_map([table], |r| r.get::<_, String>(0))
                .map_err(sqlite_err(path))?
                .collect::<Result<_, _>>()
                .map_err(sqlite_err(path))?;
            if have.is_empty() {
                missing.push(format!("table `{table}`"));
                continue;
            }
            for c in columns.iter().filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c))) {
                missing.push(format!("column `{table}.{c}`"));
            }
        }
        if !missing.is_empty() {
            return Err(CatalogError::Schema { path: path.to_path_buf(), missing: missing.join(", ") });
        }
        let bad_row = |table: &str, e: rusqlite::Error| CatalogError::Invalid {
            path: path.to_path_buf(),
            reason: format!("a row of `{table}`: {e}"),
        };
        let count = |table: &str| -> Result<usize, CatalogError> {
            let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(sqlite_err(path))?;
            Ok(n.max(0) as usize)
        };
        let (n_stores, n_items) = (count("stores")?, count("items")?);
        if n_stores > MAX_STORES || n_items > MAX_ITEMS {
            return Err(CatalogError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{n_stores} stores and {n_items} items, over the limits of {MAX_STORES} and {MAX_ITEMS}"),
            });
        }
        let mut stmt =
            conn.prepare("SELECT store_id, name, traffic_weight, restock_interval_hours FROM stores").map_err(sqlite_err(path))?;
        let stores: Vec<Store> = stmt
            .query_map([], |r| {
                Ok(Store { store_id: r.get(0)?, name: r.get(1)?, traffic_weight: r.get(2)?, restock_interval_hours: r.get(3)? })
            })
            .map_err(sqlite_err(path))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad_row("stores", e))?;
        let mut stmt = conn
            .prepare("SELECT store_id, inventory_id, name, category, unit_price_cents, starting_stock, restock_qty, min_level FROM items")
            .map_err(sqlite_err(path))?;
        let items: Vec<Item> = stmt
            .query_map([], |r| {
                Ok(Item {
                    store_id: r.get(0)?,
                    inventory_id: r.get(1)?,
                    name: r.get(2)?,
                    category: r.get(3)?,
                    unit_price_cents: r.get(4)?,
                    starting_stock: r.get(5)?,
                    restock_qty: r.get(6)?,
                    min_level: r.get(7)?,
                })
            })
            .map_err(sqlite_err(path))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad_row("items", e))?;
        Catalog::new(stores, items, path)
    }

    /// Writes the catalogue as a new SQLite file with [`SCHEMA_SQL`]; refuses to replace
    /// an existing file. Written to a temporary name and renamed, so a crash leaves no
    /// half-written catalogue under `path`.
    pub fn write(&self, path: &Path) -> Result<(), CatalogError> {
        let err = |reason: String| CatalogError::Write { path: path.to_path_buf(), reason };
        if path.exists() {
            return Err(err("the file exists; remove it or choose another --out".into()));
        }
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let tmp = tempfile::Builder::new().prefix(".catalog-").suffix(".sqlite").tempfile_in(dir).map_err(|e| err(e.to_string()))?;
        {
            let mut conn = rusqlite::Connection::open(tmp.path()).map_err(|e| err(e.to_string()))?;
            let tx = conn.transaction().map_err(|e| err(e.to_string()))?;
            tx.execute_batch(SCHEMA_SQL).map_err(|e| err(e.to_string()))?;
            {
                let mut st = tx.prepare("INSERT INTO stores VALUES (?1, ?2, ?3, ?4)").map_err(|e| err(e.to_string()))?;
                for s in &self.stores {
                    st.execute(rusqlite::params![s.store_id, s.name, s.traffic_weight, s.restock_interval_hours])
                        .map_err(|e| err(e.to_string()))?;
                }
                let mut it = tx.prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)").map_err(|e| err(e.to_string()))?;
                for i in &self.items {
                    it.execute(rusqlite::params![
                        i.store_id,
                        i.inventory_id,
                        i.name,
                        i.category,
                        i.unit_price_cents,
                        i.starting_stock,
                        i.restock_qty,
                        i.min_level
                    ])
                    .map_err(|e| err(e.to_string()))?;
                }
            }
            tx.commit().map_err(|e| err(e.to_string()))?;
        }
        tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
        tmp.persist_noclobber(path).map_err(|e| err(e.error.to_string()))?;
        Ok(())
    }

    /// The canonical form the log keeps and the hash is taken of: the catalogue as JSON,
    /// rows sorted by key, members in schema order.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a catalogue serialises")
    }

    /// Reads the canonical form back (a copy from the log).
    pub fn from_canonical(bytes: &[u8], hash: &str) -> Result<Catalog, CatalogError> {
        let c: Catalog = serde_json::from_slice(bytes).map_err(|e| CatalogError::Copy { hash: hash.to_string(), reason: e.to_string() })?;
        Catalog::new(c.stores, c.items, Path::new(hash)).map_err(|e| CatalogError::Copy { hash: hash.to_string(), reason: e.to_string() })
    }

    /// `sha256:<hex>` of [`Catalog::canonical`].
    pub fn hash(&self) -> String {
        hash_of(&self.canonical())
    }

    pub fn store(&self, store_id: i64) -> Option<&Store> {
        self.stores.binary_search_by_key(&store_id, |s| s.store_id).ok().map(|i| &self.stores[i])
    }

    pub fn item(&self, store_id: i64, inventory_id: i64) -> Option<&Item> {
        self.items.binary_search_by_key(&(store_id, inventory_id), |i| (i.store_id, i.inventory_id)).ok().map(|i| &self.items[i])
    }

    /// Checks a purchase against the catalogue: its store and item exist, and its item
    /// name and category are the catalogue's. The price is not checked (a sale or a
    /// bundle may charge another; the report compares revenue with the list price), nor
    /// the stock (a sold-out purchase is accepted and counted as a stock-out).
    pub fn check_purchase(&self, payload: &Payload) -> Result<(), Rejection> {
        let Payload::BuyAsset { store_id, item_name, inventory_id, category, .. } = payload else { return Ok(()) };
        let item = self.known_item(*store_id, *inventory_id)?;
        if item.name != *item_name {
            return Err(Rejection::new(
                RejectReason::CatalogMismatch,
                Some("item_name"),
                format!(
                    "item_name {:?} is not the catalogue's name {:?} of inventory_id {inventory_id} in store {store_id}",
                    clip(item_name),
                    item.name
                ),
            ));
        }
        if item.category != *category {
            return Err(Rejection::new(
                RejectReason::CatalogMismatch,
                Some("category"),
                format!(
                    "category {:?} is not the catalogue's category {:?} of inventory_id {inventory_id} in store {store_id}",
                    clip(category),
                    item.category
                ),
            ));
        }
        // A cost is a number of units at the list price: more than a purchase can take is
        // an impossible purchase, not a big one (and would overflow the stock's sums).
        let Payload::BuyAsset { total_cost, .. } = payload else { return Ok(()) };
        if quantity_of(*total_cost, item.unit_price_cents) > MAX_PURCHASE_QUANTITY {
            return Err(Rejection::new(
                RejectReason::OutOfRange,
                Some("total_cost"),
                format!(
                    "total_cost {total_cost} is more than {MAX_PURCHASE_QUANTITY} units of inventory_id {inventory_id} in store {store_id} at its list price {} (at most {})",
                    cents_to_cost(item.unit_price_cents),
                    cents_to_cost(item.unit_price_cents.saturating_mul(MAX_PURCHASE_QUANTITY))
                ),
            ));
        }
        Ok(())
    }

    fn known_item(&self, store_id: i64, inventory_id: i64) -> Result<&Item, Rejection> {
        if self.store(store_id).is_none() {
            return Err(Rejection::new(
                RejectReason::UnknownStore,
                Some("store_id"),
                format!("store_id {store_id} is not in the catalogue"),
            ));
        }
        self.item(store_id, inventory_id).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownItem,
                Some("inventory_id"),
                format!("store {store_id} sells no inventory_id {inventory_id} in the catalogue"),
            )
        })
    }

    /// Fills in a seed-style purchase (`GET /buy_asset?store_id=…&inventory_id=…
    /// [&quantity=…]`) as the seed's Flask app did from its SQLite: `item_name`,
    /// `category` and `total_cost` (list price × quantity, default 1) where the query
    /// left them out; `quantity` itself is not an event field and is taken out. Returns
    /// the item and the quantity. Members the query gave are kept and checked later.
    pub fn fill_purchase(&self, members: &mut Vec<(String, Value)>) -> Result<(Item, i64), Rejection> {
        let int = |members: &[(String, Value)], name: &'static str| -> Result<Option<i64>, Rejection> {
            match members.iter().find(|(k, _)| k == name).map(|(_, v)| v) {
                None => Ok(None),
                Some(v) => v.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(|| {
                    Rejection::new(RejectReason::WrongType, Some(name), format!("field `{name}` must be a non-negative integer"))
                }),
            }
        };
        let store_id = int(members, "store_id")?
            .ok_or_else(|| Rejection::new(RejectReason::MissingField, Some("store_id"), "field `store_id` is missing".into()))?;
        let inventory_id = int(members, "inventory_id")?
            .ok_or_else(|| Rejection::new(RejectReason::MissingField, Some("inventory_id"), "field `inventory_id` is missing".into()))?;
        let quantity = match members.iter().position(|(k, _)| k == "quantity") {
            None => 1,
            Some(at) => {
                let (_, v) = members.remove(at);
                let q = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                match q {
                    Some(q) if (1..=MAX_PURCHASE_QUANTITY).contains(&q) => q,
                    _ => {
                        return Err(Rejection::new(
                            RejectReason::OutOfRange,
                            Some("quantity"),
                            format!("quantity must be a whole number from 1 to {MAX_PURCHASE_QUANTITY}"),
                        ))
                    }
                }
            }
        };
        let item = self.known_item(store_id, inventory_id)?.clone();
        let has = |members: &[(String, Value)], k: &str| members.iter().any(|(m, _)| m == k);
        if !has(members, "item_name") {
            members.push(("item_name".into(), Value::String(item.name.clone())));
        }
        if !has(members, "category") {
            members.push(("category".into(), Value::String(item.category.clone())));
        }
        if !has(members, "total_cost") {
            members.push(("total_cost".into(), Value::from(cents_to_cost(item.unit_price_cents * quantity))));
        }
        Ok((item, quantity))
    }
}

/// `sha256:<hex>` of some bytes, as a schema's is made.
pub use crate::schema::content_hash as hash_of;

/// A total in cents as the events' `total_cost` (dollars, rounded to cents the way an
/// `f32` holds them).
pub fn cents_to_cost(cents: i64) -> f64 {
    (cents as f64 / 100.0) as f32 as f64
}

fn clip(s: &str) -> &str {
    crate::event::truncate_utf8(s, 64)
}

/// Units a purchase stands for: its total cost over the item's list price, rounded, at
/// least 1 (events carry no quantity; at list price this is exact).
pub fn quantity_of(total_cost: f32, unit_price_cents: i64) -> i64 {
    let q = (total_cost as f64 * 100.0 / unit_price_cents as f64).round();
    if q.is_finite() && q >= 1.0 {
        q.min(i64::MAX as f64) as i64
    } else {
        1
    }
}

/// A logged record's purchase as [`StockBook::purchase`] takes it: (time — the event's,
/// else its receive time — store, item, total cost); `None` for other events.
pub fn purchase_of(r: &Record) -> Option<(i64, i64, i64, f32)> {
    match &r.event.payload {
        Payload::BuyAsset { store_id, inventory_id, total_cost, .. } => {
            Some((r.event.event_time_us.unwrap_or(r.received_at_us), *store_id, *inventory_id, *total_cost))
        }
        _ => None,
    }
}

/// The restock period of a store, in event-time microseconds; `None`: never restocked.
pub fn restock_interval_us(store: &Store) -> Option<i64> {
    (store.restock_interval_hours > 0).then(|| store.restock_interval_hours * HOUR_US)
}

/// One item's stock as the log has moved it.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemStock {
    pub store_id: i64,
    pub inventory_id: i64,
    /// Shelf capacity and stock at first sight: the item's `starting_stock`.
    pub starting_stock: i64,
    pub on_hand_qty: i64,
    pub sold_qty: i64,
    pub restocked_qty: i64,
    pub purchases: i64,
    /// Purchases that found fewer units on hand than they took (stock-outs), and the
    /// units they were short by. Such purchases are accepted: the event is what the game
    /// did; the shortfall is the finding.
    pub short_purchases: i64,
    pub short_qty: i64,
    /// Sum of the purchases' `total_cost`, and of their units at list price, in cents.
    pub revenue_cents: i64,
    pub list_value_cents: i64,
    /// Whether the latest catalogue still lists the item.
    pub listed: bool,
    unit_price_cents: i64,
    restock_qty: i64,
    interval_us: Option<i64>,
    /// The last restock boundary applied (event time ÷ interval).
    boundary: Option<i64>,
}

impl ItemStock {
    /// Adds the restocks of every boundary after the last one applied, up to `time_us`.
    fn restock_to(&mut self, time_us: i64) {
        let Some(interval) = self.interval_us else { return };
        let b = time_us.div_euclid(interval);
        match self.boundary {
            Some(last) if b > last => {
                let room = (self.starting_stock - self.on_hand_qty).max(0);
                let add = room.min(self.restock_qty.saturating_mul(b.saturating_sub(last)));
                self.on_hand_qty = self.on_hand_qty.saturating_add(add);
                self.restocked_qty = self.restocked_qty.saturating_add(add);
                self.boundary = Some(b);
            }
            Some(_) => {}
            // Stock starts full: restocks before the first purchase change nothing.
            None => self.boundary = Some(b),
        }
    }
}

/// What one purchase did to stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Purchase {
    pub quantity: i64,
    pub on_hand_after: i64,
    pub short_qty: i64,
}

/// Stock as a projection of the log: each item starts at its `starting_stock` when a
/// catalogue first lists it; a purchase takes its units; every `restock_interval_hours`
/// of event time (UTC multiples) adds `restock_qty`, up to `starting_stock`. A purchase
/// of more than is on hand takes it to 0 and counts the shortfall. The same purchases in
/// the same order give the same numbers, so the API's figure, the generator's and the
/// `stock` table agree.
#[derive(Clone, Debug, Default)]
pub struct StockBook {
    items: BTreeMap<(i64, i64), ItemStock>,
    /// The latest event time seen; [`StockBook::rows`] restocks up to it.
    watermark_us: Option<i64>,
}

impl StockBook {
    pub fn new() -> StockBook {
        StockBook::default()
    }

    /// A catalogue takes effect: new items start full; listed ones take its price and
    /// restock rule and keep their stock; unlisted ones keep their stock and stop
    /// restocking.
    pub fn set_catalog(&mut self, c: &Catalog) {
        for (key, s) in self.items.iter_mut() {
            if c.item(key.0, key.1).is_none() {
                s.listed = false;
                s.interval_us = None;
            }
        }
        for i in &c.items {
            let interval_us = c.store(i.store_id).and_then(restock_interval_us);
            let s = self.items.entry((i.store_id, i.inventory_id)).or_insert_with(|| ItemStock {
                store_id: i.store_id,
                inventory_id: i.inventory_id,
                starting_stock: i.starting_stock,
                on_hand_qty: i.starting_stock,
                sold_qty: 0,
                restocked_qty: 0,
                purchases: 0,
                short_purchases: 0,
                short_qty: 0,
                revenue_cents: 0,
                list_value_cents: 0,
                listed: true,
                unit_price_cents: i.unit_price_cents,
                restock_qty: i.restock_qty,
                interval_us,
                boundary: None,
            });
            s.listed = true;
            s.starting_stock = i.starting_stock;
            s.on_hand_qty = s.on_hand_qty.min(i.starting_stock);
            s.unit_price_cents = i.unit_price_cents;
            s.restock_qty = i.restock_qty;
            if s.interval_us != interval_us {
                s.boundary = None;
            }
            s.interval_us = interval_us;
        }
    }

    /// Applies a purchase at `time_us` (the event's time, else its receive time). `None`
    /// when no catalogue so far listed the item (it was accepted without one).
    pub fn purchase(&mut self, time_us: i64, store_id: i64, inventory_id: i64, total_cost: f32) -> Option<Purchase> {
        self.watermark_us = Some(self.watermark_us.map_or(time_us, |w| w.max(time_us)));
        let s = self.items.get_mut(&(store_id, inventory_id))?;
        s.restock_to(time_us);
        // Saturating throughout: the API refuses a purchase of more units than one can take
        // (`check_purchase`), but a log can hold purchases accepted without a catalogue,
        // and no sum may wrap to a negative stock or revenue.
        let quantity = quantity_of(total_cost, s.unit_price_cents);
        let short = quantity.saturating_sub(s.on_hand_qty).max(0);
        s.on_hand_qty = s.on_hand_qty.saturating_sub(quantity).max(0);
        s.sold_qty = s.sold_qty.saturating_add(quantity);
        s.purchases = s.purchases.saturating_add(1);
        if short > 0 {
            s.short_purchases = s.short_purchases.saturating_add(1);
            s.short_qty = s.short_qty.saturating_add(short);
        }
        // `as` saturates a float past i64's range.
        s.revenue_cents = s.revenue_cents.saturating_add((total_cost as f64 * 100.0).round() as i64);
        s.list_value_cents = s.list_value_cents.saturating_add(quantity.saturating_mul(s.unit_price_cents));
        debug_assert!(s.on_hand_qty >= 0 && s.sold_qty >= 0 && s.revenue_cents >= 0 && s.list_value_cents >= 0);
        Some(Purchase { quantity, on_hand_after: s.on_hand_qty, short_qty: short })
    }

    /// What a purchase of `quantity` units at `time_us` would leave on hand, without
    /// applying it (the API's fill-in of `on_hand_qty`).
    pub fn on_hand_after(&self, time_us: i64, store_id: i64, inventory_id: i64, quantity: i64) -> Option<i64> {
        let mut s = self.items.get(&(store_id, inventory_id))?.clone();
        s.restock_to(time_us);
        Some(s.on_hand_qty.saturating_sub(quantity).max(0))
    }

    /// Every item's stock, by (store, inventory id), restocked up to the latest event
    /// time seen.
    pub fn rows(&self) -> Vec<ItemStock> {
        self.items
            .values()
            .map(|s| {
                let mut s = s.clone();
                if let Some(w) = self.watermark_us {
                    s.restock_to(w);
                }
                s
            })
            .collect()
    }
}

/// A catalogue version as the log records it: in effect for the records from offset
/// `from_offset` on, until the next version. On a Kafka log (docs/CONTRACT.md 12.2) it is in
/// effect from an offset per partition of the events' topic, `from_partitions`
/// (`from_offset` is then their sum, for display); empty on a sled log.
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub from_offset: u64,
    pub from_partitions: Vec<u64>,
    pub hash: String,
    pub catalog: Catalog,
}

impl Version {
    /// Whether the record at `offset` of `partition` comes at or after the point this
    /// version takes effect in that partition.
    pub fn reached_by(&self, partition: u32, offset: u64) -> bool {
        if self.from_partitions.is_empty() {
            self.from_offset <= offset
        } else {
            self.from_partitions.get(partition as usize).copied().unwrap_or(0) <= offset
        }
    }

    /// Whether the version is in force for a reader of the log up to `offset` (sled), or
    /// up to `partitions` (per partition, the next offset; a topic's tables): on a topic,
    /// once any partition has reached its `from` — events checked against it are only
    /// ever at or past `from` in their partition, and the rule only grows with the reader.
    pub fn in_force_at(&self, offset: u64, partitions: &[u64]) -> bool {
        crate::log::record_in_force(self.from_offset, &self.from_partitions, offset, partitions)
    }
}

/// Reads the catalogue records the log holds into versions, checking each copy against its
/// hash. A sled log's record that fails is an
/// error (the log is damaged); a Kafka log's (`from_partitions` set) is passed over with
/// a warning, the same way by every reader: anyone who may produce to the side topic
/// could have written it, and one bad record must not stop every projector.
pub fn versions(recorded: impl IntoIterator<Item = crate::log::CatalogRecord>) -> Result<Vec<Version>, CatalogError> {
    let mut out = Vec::new();
    for crate::log::CatalogRecord { from_offset, from_partitions, hash, content: bytes } in recorded {
        let read = if hash_of(&bytes) != hash {
            Err(CatalogError::Copy { hash: hash.clone(), reason: format!("its content hashes to {}", hash_of(&bytes)) })
        } else {
            Catalog::from_canonical(&bytes, &hash)
        };
        match read {
            Ok(catalog) => out.push(Version { from_offset, from_partitions, hash, catalog }),
            Err(e) if !from_partitions.is_empty() => {
                tracing::warn!(catalog_hash = %hash, error = %e, "a catalogue record of the side topic is not a catalogue; passed over")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Where derived copies of the log's catalogues go, under `DATA_DIR`: `versions.json`
/// (every version, for `sql` and `report`, which read tables and do not open the log) and
/// `catalog.sqlite` (the one in force, for DuckDB's `sqlite` extension and other SQLite
/// readers). Both are rewritten from the log whenever it gains a version, and by
/// `project`; the log stays the record.
pub const COPIES_DIR: &str = "catalog";
const VERSIONS_FILE: &str = "versions.json";
pub const SQLITE_COPY: &str = "catalog.sqlite";

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    from_offset: u64,
    /// On a Kafka log only (a sled log's copies are as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    from_partitions: Vec<u64>,
    hash: String,
    catalog: Catalog,
}

/// Writes the copies of `versions` under `data_dir` (see [`COPIES_DIR`]), each file
/// written aside and renamed into place; nothing when there are no versions or the copies
/// already hold these.
pub fn write_copies(data_dir: &Path, versions: &[Version]) -> Result<(), CatalogError> {
    let Some(latest) = versions.last() else { return Ok(()) };
    let dir = data_dir.join(COPIES_DIR);
    let have = read_copies(data_dir).unwrap_or_default();
    let same = have.len() == versions.len()
        && have
            .iter()
            .zip(versions)
            .all(|(a, b)| a.hash == b.hash && a.from_offset == b.from_offset && a.from_partitions == b.from_partitions);
    if same && dir.join(SQLITE_COPY).is_file() {
        return Ok(());
    }
    let err = |path: &Path, e: &dyn std::fmt::Display| CatalogError::Write { path: path.to_path_buf(), reason: e.to_string() };
    std::fs::create_dir_all(&dir).map_err(|e| err(&dir, &e))?;
    let stored: Vec<StoredVersion> = versions
        .iter()
        .map(|v| StoredVersion {
            from_offset: v.from_offset,
            from_partitions: v.from_partitions.clone(),
            hash: v.hash.clone(),
            catalog: v.catalog.clone(),
        })
        .collect();
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| err(&dir, &e))?;
    // Written aside under names of this writer's own (a projector and `serve --catalog`,
    // or two projectors' steps, may write the copies at once; a crash leaves no name that
    // blocks the next), then renamed into place, each whole.
    let aside = |name: &str| tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(&dir);
    let path = dir.join(VERSIONS_FILE);
    let mut tmp = aside(VERSIONS_FILE).map_err(|e| err(&dir, &e))?;
    std::io::Write::write_all(&mut tmp, &json).map_err(|e| err(tmp.path(), &e))?;
    let sqlite = dir.join(SQLITE_COPY);
    let tmp_sqlite = aside(SQLITE_COPY).map_err(|e| err(&dir, &e))?;
    // `Catalog::write` makes the file itself.
    let tmp_sqlite_path = tmp_sqlite.into_temp_path();
    std::fs::remove_file(&tmp_sqlite_path).map_err(|e| err(&tmp_sqlite_path, &e))?;
    latest.catalog.write(&tmp_sqlite_path)?;
    // A writer that read the log before another may come last: it never puts back fewer
    // versions than the copies hold (the log's versions only grow).
    if read_copies(data_dir).is_ok_and(|have| have.len() > versions.len()) {
        return Ok(());
    }
    tmp.persist(&path).map_err(|e| err(&path, &e.error))?;
    tmp_sqlite_path.persist(&sqlite).map_err(|e| err(&sqlite, &e.error))?;
    Ok(())
}

/// The versions [`write_copies`] wrote under `data_dir`; none if it never did.
pub fn read_copies(data_dir: &Path) -> Result<Vec<Version>, CatalogError> {
    let path = data_dir.join(COPIES_DIR).join(VERSIONS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CatalogError::Invalid { path, reason: e.to_string() }),
    };
    let stored: Vec<StoredVersion> =
        serde_json::from_slice(&bytes).map_err(|e| CatalogError::Invalid { path: path.clone(), reason: e.to_string() })?;
    stored
        .into_iter()
        .map(|v| {
            let catalog = Catalog::new(v.catalog.stores, v.catalog.items, &path)?;
            if catalog.hash() != v.hash {
                return Err(CatalogError::Invalid {
                    path: path.clone(),
                    reason: format!("the copy of {} does not hash to it; `questlog project` rewrites it from the log", v.hash),
                });
            }
            Ok(Version { from_offset: v.from_offset, from_partitions: v.from_partitions, hash: v.hash, catalog })
        })
        .collect()
}

/// A purchase where the log holds it, as [`stock_from`] takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoggedPurchase {
    /// The partition (0 on a sled log) and offset of its record.
    pub partition: u32,
    pub offset: u64,
    /// The event's time, else its receive time.
    pub time_us: i64,
    pub store_id: i64,
    pub inventory_id: i64,
    pub total_cost: f32,
}

/// Stock from a log's purchases in the log's order, under the catalogue versions in force
/// at each: a version takes effect before the first purchase that comes at or after its
/// `from` in its partition ([`Version::reached_by`]); the ones no purchase reached, at the
/// end. The order is the caller's: a sled log's is its offsets; a topic's partitions have
/// no order between them, so [`kafka_order`] sorts their purchases first.
pub fn stock_from(versions: &[Version], purchases: impl IntoIterator<Item = LoggedPurchase>) -> StockBook {
    let mut book = StockBook::new();
    let mut next = 0;
    for p in purchases {
        // A version's `from` is at least its predecessor's in every partition, so one
        // reached means the ones before it are too.
        while next < versions.len() && versions[next].reached_by(p.partition, p.offset) {
            book.set_catalog(&versions[next].catalog);
            next += 1;
        }
        book.purchase(p.time_us, p.store_id, p.inventory_id, p.total_cost);
    }
    for v in &versions[next..] {
        book.set_catalog(&v.catalog);
    }
    book
}

/// Sorts a topic's purchases into the one order stock is computed in (docs/CONTRACT.md
/// 12.3): by time (the event's, else its receive time — the time restocks are counted
/// in), then partition, then offset. Every reader of the same records gets the same order,
/// and traffic whose times grow with the log (`generate`'s) gets a sled log's order.
pub fn kafka_order(purchases: &mut [LoggedPurchase]) {
    purchases.sort_unstable_by_key(|p| (p.time_us, p.partition, p.offset));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Catalog {
        Catalog::new(
            vec![Store { store_id: 1, name: "Anvil".into(), traffic_weight: 1.0, restock_interval_hours: 6 }],
            vec![Item {
                store_id: 1,
                inventory_id: 1001,
                name: "Sword".into(),
                category: "weapon".into(),
                unit_price_cents: 2500,
                starting_stock: 3,
                restock_qty: 2,
                min_level: 1,
            }],
            Path::new("test"),
        )
        .unwrap()
    }

    #[test]
    fn a_cost_past_what_a_purchase_can_take_is_refused_and_stock_never_wraps() {
        let c = small();
        let buy = |total_cost: f32| Payload::BuyAsset {
            store_id: 1,
            item_name: "Sword".into(),
            inventory_id: 1001,
            total_cost,
            category: "weapon".into(),
            on_hand_qty: 1,
        };
        let r = c.check_purchase(&buy(3e38)).unwrap_err();
        assert_eq!((r.reason, r.field.as_deref()), (RejectReason::OutOfRange, Some("total_cost")), "{}", r.message);
        assert!(r.message.contains("more than 10000 units"), "{}", r.message);
        // MAX_PURCHASE_QUANTITY units at list price pass; one more does not.
        assert!(c.check_purchase(&buy(25.0 * MAX_PURCHASE_QUANTITY as f32)).is_ok());
        assert!(c.check_purchase(&buy(25.0 * (MAX_PURCHASE_QUANTITY + 1) as f32)).is_err());
        // A log may still hold such purchases (accepted before, or without a catalogue):
        // the book saturates instead of wrapping to negative figures.
        let mut b = StockBook::new();
        b.set_catalog(&c);
        for _ in 0..3 {
            let p = b.purchase(HOUR_US, 1, 1001, 3e38).unwrap();
            assert_eq!(p.on_hand_after, 0);
        }
        let row = &b.rows()[0];
        assert_eq!(row.on_hand_qty, 0);
        assert_eq!(row.sold_qty, i64::MAX);
        assert_eq!(row.short_qty, i64::MAX);
        assert_eq!((row.revenue_cents, row.list_value_cents), (i64::MAX, i64::MAX));
        assert_eq!(b.on_hand_after(2 * HOUR_US, 1, 1001, i64::MAX), Some(0));
    }

    #[test]
    fn stock_restocks_at_interval_boundaries_up_to_capacity() {
        let mut b = StockBook::new();
        b.set_catalog(&small());
        let h = HOUR_US;
        assert_eq!(b.purchase(h, 1, 1001, 50.0).unwrap(), Purchase { quantity: 2, on_hand_after: 1, short_qty: 0 });
        assert_eq!(b.purchase(2 * h, 1, 1001, 50.0).unwrap(), Purchase { quantity: 2, on_hand_after: 0, short_qty: 1 });
        // Two boundaries (6 h, 12 h) add 2 each, capped at the capacity of 3.
        assert_eq!(b.on_hand_after(13 * h, 1, 1001, 0), Some(3));
        assert_eq!(b.purchase(13 * h, 1, 1001, 25.0).unwrap().on_hand_after, 2);
        let row = &b.rows()[0];
        assert_eq!((row.sold_qty, row.restocked_qty, row.short_purchases, row.short_qty), (5, 3, 1, 1));
        assert_eq!(b.purchase(h, 9, 9, 1.0), None);
    }

    #[test]
    fn a_topics_purchases_take_the_version_their_partition_reached_in_time_order() {
        let first = small();
        let mut dearer = small();
        dearer.items[0].unit_price_cents = 5000;
        let dearer = Catalog::new(dearer.stores, dearer.items, Path::new("t")).unwrap();
        let versions = vec![
            Version { from_offset: 0, from_partitions: vec![0, 0], hash: first.hash(), catalog: first.clone() },
            // In force from offset 10 of partition 0 and 4 of partition 1.
            Version { from_offset: 14, from_partitions: vec![10, 4], hash: dearer.hash(), catalog: dearer.clone() },
        ];
        let v = &versions[1];
        assert!(!v.reached_by(0, 9) && v.reached_by(0, 10) && !v.reached_by(1, 3) && v.reached_by(1, 4) && v.reached_by(2, 0));
        // In force for a reader once any partition reached its `from`; the sum means nothing.
        assert!(v.in_force_at(0, &[10, 0]) && v.in_force_at(0, &[9, 4]) && !v.in_force_at(u64::MAX, &[9, 3]));
        let buy = |partition, offset, hour| LoggedPurchase {
            partition,
            offset,
            time_us: hour * HOUR_US,
            store_id: 1,
            inventory_id: 1001,
            total_cost: 50.0,
        };
        // Sorted by time: partition 1's purchase at offset 5 comes first and brings the
        // dearer version (2 units at 25 become 1 at 50); partition 0's at offset 3, after
        // it in time, is under the dearer version too — versions only go forward.
        let mut purchases = vec![buy(0, 3, 2), buy(1, 5, 1), buy(0, 11, 3)];
        kafka_order(&mut purchases);
        assert_eq!(purchases.iter().map(|p| (p.partition, p.offset)).collect::<Vec<_>>(), [(1, 5), (0, 3), (0, 11)]);
        let row = &stock_from(&versions, purchases.clone()).rows()[0];
        assert_eq!((row.sold_qty, row.on_hand_qty, row.short_purchases), (3, 0, 0));
        // Without the second version reached (its records not read yet), the first holds.
        let row = &stock_from(&versions[..1], purchases).rows()[0];
        assert_eq!((row.sold_qty, row.on_hand_qty, row.short_purchases, row.short_qty), (6, 0, 2, 3));
        // A sled log's versions (no partitions): by offset, as before.
        let sled = vec![Version { from_offset: 2, from_partitions: Vec::new(), hash: dearer.hash(), catalog: dearer }];
        assert!(!sled[0].reached_by(0, 1) && sled[0].reached_by(0, 2) && sled[0].in_force_at(2, &[]));
    }

    #[test]
    fn quantity_is_cost_over_list_price() {
        assert_eq!(quantity_of(7999.99, 799_999), 1);
        assert_eq!(quantity_of(9.5, 95), 10);
        assert_eq!(quantity_of(0.0, 95), 1);
    }

    #[test]
    fn the_hash_is_of_the_content_not_the_row_order() {
        let a = small();
        let mut b = a.clone();
        b.items.reverse();
        let b = Catalog::new(b.stores, b.items, Path::new("x")).unwrap();
        assert_eq!(a.hash(), b.hash());
        let back = Catalog::from_canonical(&a.canonical(), &a.hash()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn bad_rows_are_refused_with_what_is_wrong() {
        let mut c = small();
        c.items[0].store_id = 7;
        let e = Catalog::new(c.stores, c.items, Path::new("f.sqlite")).unwrap_err().to_string();
        assert!(e.contains("f.sqlite") && e.contains("store 7 is not in `stores`"), "{e}");
    }
}
