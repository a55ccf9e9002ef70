//! What a store catalogue (`serve --catalog`, recorded in the log) adds to the report and
//! to `sql`: the `catalog_items` and `stock` frames, and the report's catalogue section —
//! revenue against list price, sell-through, items never sold, stock-outs.
//!
//! Stock is [`catalog::stock_from`] over the `transactions` table in log order, under the
//! catalogue versions in force at each offset: the same numbers on every rebuild.

use polars::prelude::*;

use super::{fmt_int, fmt_money, fmt_pct, ints, Block, ReportError, Section, Table, TableSource, MAX_ROWS, TIME};
use crate::catalog::{self, Catalog, ItemStock, StockBook, Version};

/// The names `sql` registers these frames under.
pub const CATALOG_ITEMS: &str = "catalog_items";
pub const STOCK: &str = "stock";

/// Stock from the `transactions` rows of `src` under `versions`: in log order, or, for
/// tables from a topic, in [`catalog::kafka_order`].
pub fn stock_book(src: &dyn TableSource, versions: &[Version]) -> Result<StockBook, ReportError> {
    let partitioned = src.partitioned();
    let mut columns = vec!["log_offset", TIME, "store_id", "inventory_id", "total_cost"];
    if partitioned {
        columns.push(super::PARTITION_COLUMN);
    }
    let df = src.columns("transactions", &columns)?;
    let offsets = ints(&df, "log_offset")?;
    let partitions = if partitioned { ints(&df, super::PARTITION_COLUMN)? } else { vec![Some(0); df.height()] };
    let times = df.column(TIME)?.cast(&DataType::Int64)?;
    let times = times.i64()?;
    let stores = ints(&df, "store_id")?;
    let items = ints(&df, "inventory_id")?;
    let costs = df.column("total_cost")?.cast(&DataType::Float32)?;
    let costs = costs.f32()?;
    let mut rows: Vec<catalog::LoggedPurchase> = (0..df.height())
        .filter_map(|i| {
            Some(catalog::LoggedPurchase {
                partition: u32::try_from(partitions[i]?).ok()?,
                offset: offsets[i]? as u64,
                time_us: times.get(i)?,
                store_id: stores[i]?,
                inventory_id: items[i]?,
                total_cost: costs.get(i)?,
            })
        })
        .collect();
    if partitioned {
        catalog::kafka_order(&mut rows);
    } else {
        rows.sort_unstable_by_key(|p| p.offset);
    }
    Ok(catalog::stock_from(versions, rows))
}

/// The catalogue in force at the end of `versions` as a frame: one row per item, with
/// its store's name and restock interval, the catalogue's hash and the offset it took
/// effect at.
pub fn catalog_items_frame(latest: &Version) -> Result<DataFrame, ReportError> {
    let c = &latest.catalog;
    let store = |i: &catalog::Item| c.store(i.store_id).expect("a valid catalogue's items have stores");
    let col_i64 = |name: &str, f: &dyn Fn(&catalog::Item) -> i64| Column::new(name.into(), c.items.iter().map(f).collect::<Vec<i64>>());
    let col_str =
        |name: &str, f: &dyn Fn(&catalog::Item) -> String| Column::new(name.into(), c.items.iter().map(f).collect::<Vec<String>>());
    let n = c.items.len();
    Ok(DataFrame::new(
        n,
        vec![
            col_i64("store_id", &|i| i.store_id),
            col_str("store_name", &|i| store(i).name.clone()),
            col_i64("inventory_id", &|i| i.inventory_id),
            col_str("item_name", &|i| i.name.clone()),
            col_str("category", &|i| i.category.clone()),
            Column::new("unit_price".into(), c.items.iter().map(|i| catalog::cents_to_cost(i.unit_price_cents)).collect::<Vec<f64>>()),
            col_i64("unit_price_cents", &|i| i.unit_price_cents),
            col_i64("starting_stock", &|i| i.starting_stock),
            col_i64("restock_qty", &|i| i.restock_qty),
            col_i64("restock_interval_hours", &|i| store(i).restock_interval_hours),
            col_i64("min_level", &|i| i.min_level),
            Column::new("catalog_hash".into(), vec![latest.hash.clone(); n]),
            Column::new("from_log_offset".into(), vec![latest.from_offset as i64; n]),
        ],
    )?)
}

/// Every item's stock as a frame, with the latest catalogue's name and category.
pub fn stock_frame(book: &StockBook, latest: &Catalog) -> Result<DataFrame, ReportError> {
    let rows = book.rows();
    let i64s = |name: &str, f: &dyn Fn(&ItemStock) -> i64| Column::new(name.into(), rows.iter().map(f).collect::<Vec<i64>>());
    let named = |f: &dyn Fn(&catalog::Item) -> String| -> Vec<Option<String>> {
        rows.iter().map(|r| latest.item(r.store_id, r.inventory_id).map(f)).collect()
    };
    Ok(DataFrame::new(
        rows.len(),
        vec![
            i64s("store_id", &|r| r.store_id),
            i64s("inventory_id", &|r| r.inventory_id),
            Column::new("item_name".into(), named(&|i| i.name.clone())),
            Column::new("category".into(), named(&|i| i.category.clone())),
            i64s("starting_stock", &|r| r.starting_stock),
            i64s("on_hand_qty", &|r| r.on_hand_qty),
            i64s("sold_qty", &|r| r.sold_qty),
            i64s("restocked_qty", &|r| r.restocked_qty),
            i64s("purchases", &|r| r.purchases),
            i64s("short_purchases", &|r| r.short_purchases),
            i64s("short_qty", &|r| r.short_qty),
            Column::new("revenue".into(), rows.iter().map(|r| r.revenue_cents as f64 / 100.0).collect::<Vec<f64>>()),
            Column::new("list_value".into(), rows.iter().map(|r| r.list_value_cents as f64 / 100.0).collect::<Vec<f64>>()),
            Column::new("listed".into(), rows.iter().map(|r| r.listed).collect::<Vec<bool>>()),
        ],
    )?)
}

/// Both frames `sql` registers when the log has a catalogue.
pub fn frames(src: &dyn TableSource, versions: &[Version]) -> Result<Vec<(&'static str, DataFrame)>, ReportError> {
    let Some(latest) = versions.last() else { return Ok(Vec::new()) };
    let book = stock_book(src, versions)?;
    Ok(vec![(CATALOG_ITEMS, catalog_items_frame(latest)?), (STOCK, stock_frame(&book, &latest.catalog)?)])
}

/// The report's catalogue section.
pub(super) fn section(
    src: &dyn TableSource,
    versions: &[Version],
    number: usize,
    summary: &mut Vec<String>,
) -> Result<Section, ReportError> {
    let latest = versions.last().expect("called with a catalogue");
    let book = stock_book(src, versions)?;
    let rows = book.rows();
    let listed: Vec<&ItemStock> = rows.iter().filter(|r| r.listed).collect();
    let name = |r: &ItemStock| -> (String, String) {
        latest
            .catalog
            .item(r.store_id, r.inventory_id)
            .map(|i| (i.name.clone(), i.category.clone()))
            .unwrap_or_else(|| ("–".into(), "–".into()))
    };
    let mut blocks = Vec::new();
    blocks.push(Block::Para(format!(
        "Catalogue {} ({} stores, {} items; in force from log offset {}; {} version{} in the log).",
        latest.hash,
        fmt_int(latest.catalog.stores.len() as i64),
        fmt_int(latest.catalog.items.len() as i64),
        fmt_int(latest.from_offset as i64),
        versions.len(),
        if versions.len() == 1 { "" } else { "s" }
    )));

    // Revenue against list price, by category.
    let mut by_cat: std::collections::BTreeMap<String, (i64, i64, i64, i64)> = Default::default();
    for r in &rows {
        let e = by_cat.entry(name(r).1).or_default();
        e.0 += r.purchases;
        e.1 += r.sold_qty;
        e.2 += r.revenue_cents;
        e.3 += r.list_value_cents;
    }
    let (revenue, list): (i64, i64) = rows.iter().fold((0, 0), |(a, b), r| (a + r.revenue_cents, b + r.list_value_cents));
    summary.push(format!(
        "Catalogue: revenue {} against {} at list price ({}); {} of {} items never sold; {} purchases found an item sold out.",
        fmt_money(revenue),
        fmt_money(list),
        fmt_pct(revenue, list),
        fmt_int(listed.iter().filter(|r| r.purchases == 0).count() as i64),
        fmt_int(listed.len() as i64),
        fmt_int(rows.iter().map(|r| r.short_purchases).sum())
    ));
    blocks.push(Block::Heading("Revenue against list price".into()));
    let mut t = Table::new(&[
        ("Category", false),
        ("Purchases", true),
        ("Units", true),
        ("Revenue", true),
        ("At list price", true),
        ("Revenue / list", true),
    ]);
    for (cat, (p, u, rev, lv)) in &by_cat {
        t.row(vec![cat.clone(), fmt_int(*p), fmt_int(*u), fmt_money(*rev), fmt_money(*lv), fmt_pct(*rev, *lv)]);
    }
    blocks.push(Block::Table(t));

    // Sell-through by store: units sold over units there were to sell.
    blocks.push(Block::Heading("Sell-through by store".into()));
    let mut by_store: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
    for r in &listed {
        let e = by_store.entry(r.store_id).or_default();
        e.0 += r.sold_qty - r.short_qty;
        e.1 += r.starting_stock + r.restocked_qty;
        e.2 += r.on_hand_qty;
    }
    let mut t = Table::new(&[
        ("Store", true),
        ("Name", false),
        ("Units sold", true),
        ("Units stocked", true),
        ("Sell-through", true),
        ("On hand", true),
    ]);
    for (store, (sold, stocked, on_hand)) in &by_store {
        let store_name = latest.catalog.store(*store).map(|s| s.name.clone()).unwrap_or_default();
        t.row(vec![store.to_string(), store_name, fmt_int(*sold), fmt_int(*stocked), fmt_pct(*sold, *stocked), fmt_int(*on_hand)]);
    }
    blocks.push(Block::Table(t));

    // Items never sold.
    let never: Vec<&&ItemStock> = listed.iter().filter(|r| r.purchases == 0).collect();
    blocks.push(Block::Heading("Items never sold".into()));
    if never.is_empty() {
        blocks.push(Block::Para("Every listed item sold at least once.".into()));
    } else {
        let mut t = Table::new(&[("Store", true), ("Inventory id", true), ("Item", false), ("Category", false)]);
        for r in never.iter().take(MAX_ROWS) {
            let (n, c) = name(r);
            t.row(vec![r.store_id.to_string(), r.inventory_id.to_string(), n, c]);
        }
        blocks.push(Block::Table(t));
        super::cut_note(&mut blocks, never.len(), "items never sold");
    }

    // Stock-outs: purchases of more than was on hand (accepted; the shortfall is counted).
    blocks.push(Block::Heading("Stock-outs".into()));
    let mut short: Vec<&ItemStock> = rows.iter().filter(|r| r.short_purchases > 0 || (r.listed && r.on_hand_qty == 0)).collect();
    short.sort_by_key(|r| (std::cmp::Reverse(r.short_qty), std::cmp::Reverse(r.sold_qty), r.store_id, r.inventory_id));
    if short.is_empty() {
        blocks.push(Block::Para("No item ran out of stock.".into()));
    } else {
        blocks.push(Block::Para(
            "Items sold out now or bought when fewer units were on hand than the purchase took (such purchases are accepted: the event is what the game did, the shortfall is the finding).".into(),
        ));
        let mut t = Table::new(&[
            ("Store", true),
            ("Item", false),
            ("On hand", true),
            ("Sold", true),
            ("Restocked", true),
            ("Short purchases", true),
            ("Units short", true),
        ]);
        for r in short.iter().take(MAX_ROWS) {
            t.row(vec![
                r.store_id.to_string(),
                name(r).0,
                fmt_int(r.on_hand_qty),
                fmt_int(r.sold_qty),
                fmt_int(r.restocked_qty),
                fmt_int(r.short_purchases),
                fmt_int(r.short_qty),
            ]);
        }
        blocks.push(Block::Table(t));
        super::cut_note(&mut blocks, short.len(), "items");
    }
    Ok(Section { id: "catalog".into(), title: format!("{number}. Catalogue: list prices, sell-through, stock"), blocks })
}
