//! The seed's five event types as schemas (`src/schema/builtin/<name>.json`), compiled in.
//! They are never recorded in a log: every log has them from offset 0, so existing logs,
//! tables and golden digests stay as they are. Their tables keep the seed's names
//! (`project::SEED_TABLES`), not `<name>`.

use super::Schema;

/// The vendor of the built-in schemas; a registered schema may not use it.
pub const VENDOR: &str = "io.questlog";

/// The five documents, in the contract's type order (`event::EventType::ALL`).
pub const DOCUMENTS: [(&str, &str); 5] = [
    ("join_guild", include_str!("builtin/join_guild.json")),
    ("kill_enemy", include_str!("builtin/kill_enemy.json")),
    ("accept_quest", include_str!("builtin/accept_quest.json")),
    ("take_damage", include_str!("builtin/take_damage.json")),
    ("buy_asset", include_str!("builtin/buy_asset.json")),
];

/// The five schemas, parsed, in [`DOCUMENTS`] order.
pub fn schemas() -> Vec<Schema> {
    DOCUMENTS.iter().map(|(_, doc)| Schema::parse(doc.as_bytes()).expect("a built-in schema is valid (tested)")).collect()
}

/// The built-in schema of `name`, if it is one of the seed's types.
pub fn schema(name: &str) -> Option<Schema> {
    DOCUMENTS.iter().find(|(n, _)| *n == name).map(|(_, doc)| Schema::parse(doc.as_bytes()).expect("a built-in schema is valid (tested)"))
}

/// Table names a registered type may not take: the seed's tables, under their SQL names
/// and their directories.
pub const TABLE_NAMES: [&str; 8] =
    ["guild_joins", "enemy_kills", "quests", "take_damage", "transactions", "enemies_killed", "quest_accept", "damage_taken"];
