//! The report's sections, one function each, in the order they appear: overview, revenue,
//! store stock, guilds, kills, damage, quests, player activity. Each reads only the columns
//! it needs through a [`TableSource`], adds its headline to the summary and returns a
//! [`Section`] of paragraphs, tables and charts.

use super::format::quantile;
use super::*;

// ---------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------

pub(super) fn overview_section(src: &dyn TableSource, people: &People, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut counts: Vec<i64> = Vec::with_capacity(TABLE_NAMES.len());
    let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
    let mut no_event_time = 0i64;
    for table in TABLE_NAMES {
        let times = src.columns(table, &["event_time", TIME])?;
        counts.push(times.height() as i64);
        no_event_time += times.column("event_time")?.null_count() as i64;
        let range = times.lazy().select([col(TIME).min().alias("min"), col(TIME).max().alias("max")]).collect()?;
        if let Some(min) = scalar_i64(&range, "min")? {
            first = Some(first.map_or(min, |f| f.min(min)));
        }
        if let Some(max) = scalar_i64(&range, "max")? {
            last = Some(last.map_or(max, |l| l.max(max)));
        }
    }
    let total: i64 = counts.iter().sum();
    let players = people.per_player.height() as i64;
    let sessions = people.per_session.height() as i64;
    let no_player = people.no_player;

    let mut blocks = Vec::new();
    if total == 0 {
        blocks.push(Block::Para(format!(
            "{NO_EVENTS} All five tables are empty; send events to the API or run `questlog generate`, then `questlog project`."
        )));
        summary.push("No events yet: all five tables are empty.".to_string());
    } else {
        let span = match (first, last) {
            (Some(f), Some(l)) => format!(", between {} and {} ({})", fmt_instant(f), fmt_instant(l), fmt_duration(l - f)),
            _ => String::new(),
        };
        blocks.push(Block::Para(format!(
            "The snapshot holds {} events from {} players in {} sessions{span}.",
            fmt_int(total),
            fmt_int(players),
            fmt_int(sessions)
        )));
        summary.push(format!("{} events from {} players in {} sessions{span}.", fmt_int(total), fmt_int(players), fmt_int(sessions)));
    }

    let mut table = Table::new(&[("Table", false), ("Event type", false), ("Events", true), ("Share", true)]);
    let mut chart = Chart::new("Events by type");
    for ((name, kind), n) in TABLE_NAMES.iter().zip(EVENT_TYPES).zip(&counts) {
        table.row(vec![name.to_string(), kind.to_string(), fmt_int(*n), fmt_pct(*n, total)]);
        chart.bar(kind, *n as f64, fmt_int(*n));
    }
    table.row(vec!["**Total**".to_string(), String::new(), fmt_int(total), fmt_pct(total, total)]);
    if total > 0 {
        blocks.push(Block::Chart(chart));
    }
    blocks.push(Block::Table(table));

    let mut facts = Table::new(&[("Measure", false), ("Value", true)]);
    facts.row(vec!["Distinct players".into(), fmt_int(players)]);
    facts.row(vec!["Distinct sessions".into(), fmt_int(sessions)]);
    facts.row(vec!["First event".into(), first.map(fmt_instant).unwrap_or_else(|| "–".into())]);
    facts.row(vec!["Last event".into(), last.map(fmt_instant).unwrap_or_else(|| "–".into())]);
    facts.row(vec![
        "Time span".into(),
        match (first, last) {
            (Some(f), Some(l)) => fmt_duration(l - f),
            _ => "–".into(),
        },
    ]);
    facts.row(vec!["Events without player_id".into(), fmt_int(no_player)]);
    facts.row(vec!["Events without event_time (receive time used)".into(), fmt_int(no_event_time)]);
    blocks.push(Block::Table(facts));

    Ok(Section { id: "overview".into(), title: "1. Overview".into(), blocks })
}

pub(super) fn revenue_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let tx = src.columns("transactions", &["category", "item_name", "store_id", "total_cost"])?.lazy().with_column(cents_expr());
    let mut blocks = Vec::new();
    if src.rows("transactions")? == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No purchases (buy_asset) so far.")));
        summary.push("Revenue: no purchases yet.".to_string());
        return Ok(Section { id: "revenue".into(), title: "2. Revenue".into(), blocks });
    }

    let by_cat = tx
        .clone()
        .group_by([col("category")])
        .agg([count_as("units"), col("cents").sum().cast(DataType::Int64).alias("revenue"), distinct("item_name").alias("items")])
        .sort_by_exprs([col("revenue"), col("units"), col("category")], sort_opts(&[true, true, false]))
        .collect()?;
    let cats = strs(&by_cat, "category")?;
    let units = ints(&by_cat, "units")?;
    let revenue = ints(&by_cat, "revenue")?;
    let items = ints(&by_cat, "items")?;
    let total_rev: i64 = revenue.iter().flatten().sum();
    let total_units: i64 = units.iter().flatten().sum();

    let lead = cats.first().map(or_none).unwrap_or_default();
    let lead_rev = revenue.first().copied().flatten().unwrap_or(0);
    blocks.push(Block::Para(format!(
        "{} purchases brought in {} (each purchase is one unit). {lead} is the top category with {} ({} of revenue).",
        fmt_int(total_units),
        fmt_money(total_rev),
        fmt_money(lead_rev),
        fmt_pct(lead_rev, total_rev)
    )));
    summary.push(format!(
        "Revenue: {} from {} purchases; top category {lead} with {} ({}).",
        fmt_money(total_rev),
        fmt_int(total_units),
        fmt_money(lead_rev),
        fmt_pct(lead_rev, total_rev)
    ));

    let mut chart = Chart::new("Revenue by category");
    let mut table = Table::new(&[("Category", false), ("Items", true), ("Units", true), ("Revenue", true), ("Share of revenue", true)]);
    for i in 0..by_cat.height().min(MAX_ROWS) {
        let rev = revenue[i].unwrap_or(0);
        chart.bar(or_none(&cats[i]), rev as f64, fmt_money(rev));
        table.row(vec![or_none(&cats[i]), fmt_opt_int(items[i]), fmt_opt_int(units[i]), fmt_money(rev), fmt_pct(rev, total_rev)]);
    }
    table.row(vec!["**Total**".into(), String::new(), fmt_int(total_units), fmt_money(total_rev), fmt_pct(total_rev, total_rev)]);
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_cat.height(), "categories");

    let top = tx
        .group_by([col("item_name"), col("store_id")])
        .agg([count_as("units"), col("cents").sum().cast(DataType::Int64).alias("revenue")])
        .sort_by_exprs([col("revenue"), col("units"), col("item_name"), col("store_id")], sort_opts(&[true, true, false, false]))
        .limit(TOP_N as IdxSize)
        .collect()?;
    let names = strs(&top, "item_name")?;
    let stores = ints(&top, "store_id")?;
    let units = ints(&top, "units")?;
    let revenue = ints(&top, "revenue")?;
    blocks.push(Block::Heading(format!("Top {TOP_N} items by revenue")));
    let mut table = Table::new(&[("#", true), ("Item", false), ("Store", true), ("Units", true), ("Revenue", true)]);
    for i in 0..top.height() {
        table.row(vec![
            (i + 1).to_string(),
            or_none(&names[i]),
            fmt_opt_int(stores[i]),
            fmt_opt_int(units[i]),
            fmt_money(revenue[i].unwrap_or(0)),
        ]);
    }
    if let (Some(name), Some(rev)) = (names.first(), revenue.first()) {
        summary.push(format!(
            "Best-selling item: {} at store {} ({}, {} units).",
            or_none(name),
            fmt_opt_int(stores[0]),
            fmt_money(rev.unwrap_or(0)),
            fmt_opt_int(units[0])
        ));
    }
    blocks.push(Block::Table(table));

    Ok(Section { id: "revenue".into(), title: "2. Revenue".into(), blocks })
}

pub(super) fn stock_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "3. Store stock running out".to_string();
    if src.rows("transactions")? == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} Stock levels are reported with purchases.")));
        return Ok(Section { id: "stock".into(), title, blocks });
    }
    // Tables from a topic: `log_offset` orders a partition only, and a store's purchases
    // come through every partition, so the latest is by event time (then place).
    let partitioned = src.partitioned();
    let items = if partitioned {
        let order = || [col(TIME), col("log_partition"), col("log_offset")];
        src.columns("transactions", &["store_id", "item_name", "on_hand_qty", "log_offset", "log_partition", TIME])?
            .lazy()
            .group_by([col("store_id"), col("item_name")])
            .agg([
                col("on_hand_qty").sort_by(order(), sort_opts(&[false, false, false])).last().cast(DataType::Int64).alias("stock"),
                count_as("purchases"),
                col("log_offset").sort_by(order(), sort_opts(&[false, false, false])).last().alias("last_offset"),
                col("log_partition")
                    .sort_by(order(), sort_opts(&[false, false, false]))
                    .last()
                    .cast(DataType::Int64)
                    .alias("last_partition"),
            ])
    } else {
        src.columns("transactions", &["store_id", "item_name", "on_hand_qty", "log_offset"])?
            .lazy()
            .group_by([col("store_id"), col("item_name")])
            .agg([
                col("on_hand_qty").sort_by([col("log_offset")], SortMultipleOptions::default()).last().cast(DataType::Int64).alias("stock"),
                count_as("purchases"),
                col("log_offset").max().alias("last_offset"),
            ])
    }
    .sort_by_exprs([col("stock"), col("purchases"), col("store_id"), col("item_name")], sort_opts(&[false, true, false, false]))
    .collect()?;
    let stock = ints(&items, "stock")?;
    let n_items = items.height() as i64;
    let sold_out = stock.iter().filter(|s| **s == Some(0)).count() as i64;
    let low = stock.iter().filter(|s| matches!(s, Some(q) if *q < LOW_STOCK)).count() as i64;
    blocks.push(Block::Para(format!(
        "Latest on-hand quantity ({}) for each of the {} store items: {} sold out, {} with fewer than {LOW_STOCK} left. The {} lowest:",
        if partitioned { "by event time" } else { "by log offset" },
        fmt_int(n_items),
        fmt_int(sold_out),
        fmt_int(low),
        TOP_N.min(items.height())
    )));
    summary.push(format!(
        "Stock: {} of {} store items sold out, {} below {LOW_STOCK} units.",
        fmt_int(sold_out),
        fmt_int(n_items),
        fmt_int(low)
    ));
    let stores = ints(&items, "store_id")?;
    let names = strs(&items, "item_name")?;
    let purchases = ints(&items, "purchases")?;
    let last_offset = ints(&items, "last_offset")?;
    let last_partition = if partitioned { ints(&items, "last_partition")? } else { vec![None; items.height()] };
    let at = if partitioned { "Last seen at partition/offset" } else { "Last seen at log offset" };
    let mut table = Table::new(&[("Store", true), ("Item", false), ("Last seen stock", true), ("Purchases", true), (at, true)]);
    for i in 0..items.height().min(TOP_N) {
        let place = match last_partition[i] {
            Some(p) => format!("{p}/{}", fmt_opt_int(last_offset[i])),
            None => fmt_opt_int(last_offset[i]),
        };
        table.row(vec![fmt_opt_int(stores[i]), or_none(&names[i]), fmt_opt_int(stock[i]), fmt_opt_int(purchases[i]), place]);
    }
    blocks.push(Block::Table(table));
    Ok(Section { id: "stock".into(), title, blocks })
}

pub(super) fn guild_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "4. Guilds".to_string();
    let total_joins = src.rows("guild_joins")? as i64;
    if total_joins == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} Nobody has joined a guild.")));
        summary.push("Guilds: no joins yet.".to_string());
        return Ok(Section { id: "guilds".into(), title, blocks });
    }
    let joins = src.columns("guild_joins", &["name", "guild_id", "player_id", TIME])?.lazy();
    let sizes = joins
        .clone()
        .group_by([col("name"), col("guild_id")])
        .agg([distinct("player_id").alias("members"), count_as("joins")])
        .sort_by_exprs([col("members"), col("joins"), col("name"), col("guild_id")], sort_opts(&[true, true, false, false]))
        .collect()?;
    let names = strs(&sizes, "name")?;
    let ids = ints(&sizes, "guild_id")?;
    let members = ints(&sizes, "members")?;
    let joins_n = ints(&sizes, "joins")?;

    let lead = or_none(&names[0]);
    blocks.push(Block::Para(format!(
        "{} joins across {} guilds. The largest, {lead}, has {} distinct members from {} joins.",
        fmt_int(total_joins),
        fmt_int(sizes.height() as i64),
        fmt_opt_int(members[0]),
        fmt_opt_int(joins_n[0])
    )));
    summary.push(format!(
        "Largest guild: {lead} with {} members ({} joins) of {} guilds.",
        fmt_opt_int(members[0]),
        fmt_opt_int(joins_n[0]),
        fmt_int(sizes.height() as i64)
    ));
    let mut chart = Chart::new("Guild sizes (distinct members)");
    let mut table = Table::new(&[("Guild", false), ("Guild id", true), ("Members", true), ("Joins", true)]);
    const MAX_GUILDS: usize = 20;
    for i in 0..sizes.height().min(MAX_GUILDS) {
        let label = format!("{} (#{})", or_none(&names[i]), fmt_opt_int(ids[i]));
        chart.bar(label, members[i].unwrap_or(0) as f64, fmt_opt_int(members[i]));
        table.row(vec![or_none(&names[i]), fmt_opt_int(ids[i]), fmt_opt_int(members[i]), fmt_opt_int(joins_n[i])]);
    }
    if sizes.height() > MAX_GUILDS {
        chart.title = format!("Guild sizes (distinct members), largest {MAX_GUILDS}");
        blocks.push(Block::Para(format!("The {MAX_GUILDS} largest of {} guilds:", fmt_int(sizes.height() as i64))));
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));

    // Growth over time.
    let timed = joins.select([col("player_id"), col(TIME)]).filter(col(TIME).is_not_null());
    let range = timed.clone().select([col("t").min().alias("min"), col("t").max().alias("max")]).collect()?;
    if let (Some(min), Some(max)) = (scalar_i64(&range, "min")?, scalar_i64(&range, "max")?) {
        let (width, width_name) = pick_bucket(min, max);
        let per_bucket = timed
            .clone()
            .group_by([col("t").floor_div(lit(width)).alias("bucket")])
            .agg([count_as("joins")])
            .sort_by_exprs([col("bucket")], sort_opts(&[false]))
            .collect()?;
        let newcomers = timed
            .filter(col("player_id").is_not_null())
            .group_by([col("player_id")])
            .agg([col("t").min().alias("first")])
            .group_by([col("first").floor_div(lit(width)).alias("bucket")])
            .agg([count_as("new")])
            .sort_by_exprs([col("bucket")], sort_opts(&[false]))
            .collect()?;
        let joins_at: std::collections::BTreeMap<i64, i64> =
            ints(&per_bucket, "bucket")?.into_iter().zip(ints(&per_bucket, "joins")?).filter_map(|(b, n)| Some((b?, n?))).collect();
        let new_at: std::collections::BTreeMap<i64, i64> =
            ints(&newcomers, "bucket")?.into_iter().zip(ints(&newcomers, "new")?).filter_map(|(b, n)| Some((b?, n?))).collect();
        let precision = bucket_precision(width);
        blocks.push(Block::Heading(format!("Growth: joins per {width_name}")));
        blocks.push(Block::Para(format!(
            "Joins bucketed by event time (UTC) per {width_name}; new members are players joining their first guild."
        )));
        let mut chart = Chart::new(format!("Guild joins per {width_name}"));
        let mut table = Table::new(&[("Period starting (UTC)", false), ("Joins", true), ("New members", true), ("Members so far", true)]);
        let mut cumulative = 0i64;
        for b in min.div_euclid(width)..=max.div_euclid(width) {
            let n = joins_at.get(&b).copied().unwrap_or(0);
            let new = new_at.get(&b).copied().unwrap_or(0);
            cumulative += new;
            let label = fmt_time(b * width, precision);
            chart.bar(label.clone(), n as f64, fmt_int(n));
            table.row(vec![label, fmt_int(n), fmt_int(new), fmt_int(cumulative)]);
        }
        blocks.push(Block::Chart(chart));
        blocks.push(Block::Table(table));
    }
    Ok(Section { id: "guilds".into(), title, blocks })
}

pub(super) fn kills_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "5. Kills".to_string();
    let total = src.rows("enemy_kills")? as i64;
    if total == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No enemies killed.")));
        summary.push("Kills: none yet.".to_string());
        return Ok(Section { id: "kills".into(), title, blocks });
    }
    let kills = src.columns("enemy_kills", &["name", "level"])?.lazy();
    let by_enemy = kills
        .clone()
        .group_by([col("name")])
        .agg([
            count_as("kills"),
            col("level").cast(DataType::Int64).sum().alias("level_sum"),
            col("level").count().cast(DataType::Int64).alias("level_n"),
            col("level").min().cast(DataType::Int64).alias("min"),
            col("level").max().cast(DataType::Int64).alias("max"),
        ])
        .sort_by_exprs([col("kills"), col("name")], sort_opts(&[true, false]))
        .collect()?;
    let names = strs(&by_enemy, "name")?;
    let n_kills = ints(&by_enemy, "kills")?;
    let level_sum = ints(&by_enemy, "level_sum")?;
    let level_n = ints(&by_enemy, "level_n")?;
    let mins = ints(&by_enemy, "min")?;
    let maxs = ints(&by_enemy, "max")?;
    let mean = |i: usize| -> String {
        match (level_sum[i], level_n[i]) {
            (Some(s), Some(n)) if n > 0 => fmt_float(s as f64 / n as f64, 1),
            _ => "–".into(),
        }
    };
    let lead = or_none(&names[0]);
    blocks.push(Block::Para(format!(
        "{} kills of {} kinds of enemy; {lead} is killed most ({}, {} of kills, mean level {}).",
        fmt_int(total),
        fmt_int(by_enemy.height() as i64),
        fmt_opt_int(n_kills[0]),
        fmt_pct(n_kills[0].unwrap_or(0), total),
        mean(0)
    )));
    summary.push(format!("Most killed enemy: {lead} ({} of {} kills, mean level {}).", fmt_opt_int(n_kills[0]), fmt_int(total), mean(0)));
    let mut chart = Chart::new("Kills by enemy");
    let mut table =
        Table::new(&[("Enemy", false), ("Kills", true), ("Share", true), ("Mean level", true), ("Min level", true), ("Max level", true)]);
    for i in 0..by_enemy.height().min(MAX_ROWS) {
        chart.bar(or_none(&names[i]), n_kills[i].unwrap_or(0) as f64, fmt_opt_int(n_kills[i]));
        table.row(vec![
            or_none(&names[i]),
            fmt_opt_int(n_kills[i]),
            fmt_pct(n_kills[i].unwrap_or(0), total),
            mean(i),
            fmt_opt_int(mins[i]),
            fmt_opt_int(maxs[i]),
        ]);
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_enemy.height(), "enemies");

    let bands = kills
        .group_by([(col("level").cast(DataType::Int64) - lit(1i64)).floor_div(lit(10i64)).alias("band")])
        .agg([count_as("kills"), distinct("name").alias("enemies")])
        .sort_by_exprs([col("band")], sort_opts(&[false]))
        .collect()?;
    let band = ints(&bands, "band")?;
    let band_kills = ints(&bands, "kills")?;
    let enemies = ints(&bands, "enemies")?;
    blocks.push(Block::Heading("Kills by enemy level band".into()));
    let mut table = Table::new(&[("Level band", false), ("Kills", true), ("Share", true), ("Enemy kinds", true)]);
    for i in 0..bands.height() {
        let label = match band[i] {
            Some(b) => format!("{}–{}", b * 10 + 1, b * 10 + 10),
            None => "(no level)".into(),
        };
        table.row(vec![label, fmt_opt_int(band_kills[i]), fmt_pct(band_kills[i].unwrap_or(0), total), fmt_opt_int(enemies[i])]);
    }
    blocks.push(Block::Table(table));
    Ok(Section { id: "kills".into(), title, blocks })
}

pub(super) fn damage_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "6. Damage taken".to_string();
    let total_hits = src.rows("take_damage")? as i64;
    if total_hits == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No damage taken.")));
        summary.push("Damage: none taken yet.".to_string());
        return Ok(Section { id: "damage".into(), title, blocks });
    }
    let dmg = src.columns("take_damage", &["name", "damage"])?.lazy();
    let by_enemy = dmg
        .clone()
        .group_by([col("name")])
        .agg([
            count_as("hits"),
            col("damage").cast(DataType::Int64).sum().alias("total"),
            quantile("damage", 0.5).alias("p50"),
            quantile("damage", 0.9).alias("p90"),
            quantile("damage", 0.99).alias("p99"),
            col("damage").max().cast(DataType::Int64).alias("max"),
        ])
        .sort_by_exprs([col("hits"), col("name")], sort_opts(&[true, false]))
        .collect()?;
    let names = strs(&by_enemy, "name")?;
    let hits = ints(&by_enemy, "hits")?;
    let totals = ints(&by_enemy, "total")?;
    let p50 = floats(&by_enemy, "p50")?;
    let p90 = floats(&by_enemy, "p90")?;
    let p99 = floats(&by_enemy, "p99")?;
    let maxs = ints(&by_enemy, "max")?;

    let overall = dmg
        .clone()
        .select([
            quantile("damage", 0.5).alias("p50"),
            quantile("damage", 0.9).alias("p90"),
            quantile("damage", 0.99).alias("p99"),
            col("damage").min().cast(DataType::Int64).alias("min"),
            col("damage").max().cast(DataType::Int64).alias("max"),
            col("damage").cast(DataType::Int64).sum().alias("total"),
        ])
        .collect()?;
    // Hardest hitter: highest p90, then highest max, then name.
    let mut order: Vec<usize> = (0..by_enemy.height()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| (p90[i].unwrap_or(f64::MIN), maxs[i].unwrap_or(i64::MIN));
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0).then(kb.1.cmp(&ka.1)).then(names[a].cmp(&names[b]))
    });
    let hard = order[0];
    blocks.push(Block::Para(format!(
        "{} hits for {} damage in total; half of all hits do at most {} damage, one in ten does more than {}. Hardest hitter: {} (p90 {}, max {}).",
        fmt_int(total_hits),
        fmt_opt_int(scalar_i64(&overall, "total")?),
        fmt_opt_num(scalar_f64(&overall, "p50")?),
        fmt_opt_num(scalar_f64(&overall, "p90")?),
        or_none(&names[hard]),
        fmt_opt_num(p90[hard]),
        fmt_opt_int(maxs[hard])
    )));
    summary.push(format!(
        "Hardest hitter: {} (p90 damage {}, max {}) across {} hits taken.",
        or_none(&names[hard]),
        fmt_opt_num(p90[hard]),
        fmt_opt_int(maxs[hard]),
        fmt_int(total_hits)
    ));
    let mut table =
        Table::new(&[("Enemy", false), ("Hits", true), ("Total damage", true), ("p50", true), ("p90", true), ("p99", true), ("Max", true)]);
    for i in 0..by_enemy.height().min(MAX_ROWS) {
        table.row(vec![
            or_none(&names[i]),
            fmt_opt_int(hits[i]),
            fmt_opt_int(totals[i]),
            fmt_opt_num(p50[i]),
            fmt_opt_num(p90[i]),
            fmt_opt_num(p99[i]),
            fmt_opt_int(maxs[i]),
        ]);
    }
    table.row(vec![
        "**All enemies**".into(),
        fmt_int(total_hits),
        fmt_opt_int(scalar_i64(&overall, "total")?),
        fmt_opt_num(scalar_f64(&overall, "p50")?),
        fmt_opt_num(scalar_f64(&overall, "p90")?),
        fmt_opt_num(scalar_f64(&overall, "p99")?),
        fmt_opt_int(scalar_i64(&overall, "max")?),
    ]);
    blocks.push(Block::Para("Per enemy (percentiles are nearest-rank values of single hits):".into()));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_enemy.height(), "enemies");

    if let (Some(min), Some(max)) = (scalar_i64(&overall, "min")?, scalar_i64(&overall, "max")?) {
        let width = pick_band(min, max);
        let hist = dmg
            .filter(col("damage").is_not_null())
            .group_by([col("damage").cast(DataType::Int64).floor_div(lit(width)).alias("band")])
            .agg([count_as("hits")])
            .sort_by_exprs([col("band")], sort_opts(&[false]))
            .collect()?;
        let counts: std::collections::BTreeMap<i64, i64> =
            ints(&hist, "band")?.into_iter().zip(ints(&hist, "hits")?).filter_map(|(b, n)| Some((b?, n?))).collect();
        let with_damage: i64 = counts.values().sum();
        blocks.push(Block::Heading("Damage per hit, histogram".into()));
        let mut chart = Chart::new("Damage per hit (number of hits per damage band)");
        let mut table = Table::new(&[("Damage", false), ("Hits", true), ("Share", true)]);
        for b in min.div_euclid(width)..=max.div_euclid(width) {
            let n = counts.get(&b).copied().unwrap_or(0);
            let label = if width == 1 { fmt_int(b) } else { format!("{}–{}", fmt_int(b * width), fmt_int(b * width + width - 1)) };
            chart.bar(label.clone(), n as f64, fmt_int(n));
            table.row(vec![label, fmt_int(n), fmt_pct(n, with_damage)]);
        }
        blocks.push(Block::Chart(chart));
        blocks.push(Block::Table(table));
    }
    Ok(Section { id: "damage".into(), title, blocks })
}

pub(super) fn quests_section(src: &dyn TableSource, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "7. Quests by contact".to_string();
    let total = src.rows("quests")? as i64;
    if total == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No quests accepted.")));
        summary.push("Quests: none accepted yet.".to_string());
        return Ok(Section { id: "quests".into(), title, blocks });
    }
    let by_contact = src
        .columns("quests", &["contact", "quest_id", "player_id"])?
        .lazy()
        .group_by([col("contact")])
        .agg([count_as("accepted"), distinct("quest_id").alias("quests"), distinct("player_id").alias("players")])
        .sort_by_exprs([col("accepted"), col("contact")], sort_opts(&[true, false]))
        .collect()?;
    let contacts = strs(&by_contact, "contact")?;
    let accepted = ints(&by_contact, "accepted")?;
    let quests = ints(&by_contact, "quests")?;
    let players = ints(&by_contact, "players")?;
    let lead = or_none(&contacts[0]);
    blocks.push(Block::Para(format!(
        "{} quests accepted from {} contacts; {lead} hands out the most ({}, {}).",
        fmt_int(total),
        fmt_int(by_contact.height() as i64),
        fmt_opt_int(accepted[0]),
        fmt_pct(accepted[0].unwrap_or(0), total)
    )));
    summary.push(format!("Top quest contact: {lead} ({} of {} quests accepted).", fmt_opt_int(accepted[0]), fmt_int(total)));
    let mut chart = Chart::new("Quests accepted by contact");
    let mut table =
        Table::new(&[("Contact", false), ("Accepted", true), ("Share", true), ("Distinct quests", true), ("Distinct players", true)]);
    for i in 0..by_contact.height().min(MAX_ROWS) {
        chart.bar(or_none(&contacts[i]), accepted[i].unwrap_or(0) as f64, fmt_opt_int(accepted[i]));
        table.row(vec![
            or_none(&contacts[i]),
            fmt_opt_int(accepted[i]),
            fmt_pct(accepted[i].unwrap_or(0), total),
            fmt_opt_int(quests[i]),
            fmt_opt_int(players[i]),
        ]);
    }
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    cut_note(&mut blocks, by_contact.height(), "contacts");
    Ok(Section { id: "quests".into(), title, blocks })
}

pub(super) fn activity_section(people: &People, summary: &mut Vec<String>) -> Result<Section, ReportError> {
    let mut blocks = Vec::new();
    let title = "8. Player activity".to_string();
    let per_player = people.per_player.clone().lazy();
    let per_session = people.per_session.clone().lazy();
    let dist = |lf: LazyFrame| -> PolarsResult<DataFrame> {
        lf.select([
            count_as("n"),
            col("events").sum().cast(DataType::Int64).alias("sum"),
            quantile("events", 0.5).alias("p50"),
            quantile("events", 0.9).alias("p90"),
            col("events").max().alias("max"),
        ])
        .collect()
    };
    let pd = dist(per_player.clone())?;
    let sd = dist(per_session)?;
    let players = scalar_i64(&pd, "n")?.unwrap_or(0);
    if players == 0 && scalar_i64(&sd, "n")?.unwrap_or(0) == 0 {
        blocks.push(Block::Para(format!("{NO_EVENTS} No events carry a player_id or session_id.")));
        summary.push("Players: no player activity yet.".to_string());
        return Ok(Section { id: "activity".into(), title, blocks });
    }

    let mut table = Table::new(&[("Per", false), ("Count", true), ("Mean events", true), ("p50", true), ("p90", true), ("Max", true)]);
    for (label, d) in [("Player", &pd), ("Session", &sd)] {
        let n = scalar_i64(d, "n")?.unwrap_or(0);
        let sum = scalar_i64(d, "sum")?.unwrap_or(0);
        table.row(vec![
            label.into(),
            fmt_int(n),
            if n > 0 { fmt_float(sum as f64 / n as f64, 1) } else { "–".into() },
            fmt_opt_num(scalar_f64(d, "p50")?),
            fmt_opt_num(scalar_f64(d, "p90")?),
            fmt_opt_int(scalar_i64(d, "max")?),
        ]);
    }
    blocks.push(Block::Para(format!(
        "{} players; the median player has {} events and the busiest {}.",
        fmt_int(players),
        fmt_opt_num(scalar_f64(&pd, "p50")?),
        fmt_opt_int(scalar_i64(&pd, "max")?)
    )));
    blocks.push(Block::Table(table));

    // Top players.
    let top =
        per_player.clone().sort_by_exprs([col("events"), col("player_id")], sort_opts(&[true, false])).limit(TOP_N as IdxSize).collect()?;
    let ids = strs(&top, "player_id")?;
    let ev = ints(&top, "events")?;
    let kinds = ints(&top, "kinds")?;
    blocks.push(Block::Heading(format!("Top {TOP_N} players by events")));
    let mut table = Table::new(&[("#", true), ("Player", false), ("Events", true), ("Event types", true)]);
    for i in 0..top.height() {
        table.row(vec![(i + 1).to_string(), or_none(&ids[i]), fmt_opt_int(ev[i]), format!("{} of 5", fmt_opt_int(kinds[i]))]);
    }
    blocks.push(Block::Table(table));

    // Funnel.
    let players_of = |kind: &str| -> i64 { EVENT_TYPES.iter().position(|k| *k == kind).map_or(0, |i| people.players_by_table[i]) };
    let all_five = per_player.filter(col("kinds").eq(lit(5i64))).select([count_as("n")]).collect()?;
    let all_five = scalar_i64(&all_five, "n")?.unwrap_or(0);
    blocks.push(Block::Heading("Funnel across event types".into()));
    blocks.push(Block::Para(format!(
        "Distinct players who did each event type, in funnel order; {} of {} players ({}) did all five.",
        fmt_int(all_five),
        fmt_int(players),
        fmt_pct(all_five, players)
    )));
    summary.push(format!(
        "Funnel: {} of {} players ({}) did all five event types.",
        fmt_int(all_five),
        fmt_int(players),
        fmt_pct(all_five, players)
    ));
    let mut chart = Chart::new("Funnel: distinct players per event type");
    let mut table = Table::new(&[("Step", true), ("Event type", false), ("Players", true), ("Share of players", true)]);
    for (i, kind) in FUNNEL.iter().enumerate() {
        let n = players_of(kind);
        chart.bar(*kind, n as f64, format!("{} ({})", fmt_int(n), fmt_pct(n, players)));
        table.row(vec![(i + 1).to_string(), kind.to_string(), fmt_int(n), fmt_pct(n, players)]);
    }
    chart.bar("all five", all_five as f64, format!("{} ({})", fmt_int(all_five), fmt_pct(all_five, players)));
    table.row(vec![String::new(), "**all five**".into(), fmt_int(all_five), fmt_pct(all_five, players)]);
    blocks.push(Block::Chart(chart));
    blocks.push(Block::Table(table));
    Ok(Section { id: "activity".into(), title, blocks })
}
