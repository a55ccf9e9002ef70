//! A deterministic, seeded simulation of players playing a fantasy MMO, yielding an endless
//! stream of valid [`ClientEvent`]s: a fixed catalogue of guilds, quest-giving NPCs, enemy
//! kinds and stores (prices and popularity jittered by the seed) is played by a population
//! of players whose activity is Zipf-skewed (a few heavy players, many light ones); a small
//! pool of concurrent sessions takes turns on a simulated clock whose event rate follows a
//! day/night and weekend cycle, and each session acts according to its style (grinding,
//! balanced, trading) and its player's state: players level up from kills and fight enemies
//! near their level, accept quests they qualify for (one-off quests only once), join guilds
//! with rich-get-richer popularity and occasionally switch or drift away, and buy items whose
//! finite stock runs out and is only periodically restocked (some limited items never are).
//! All randomness comes from ChaCha8 streams derived from the seed, with no hash-map order,
//! wall clock or global state, so the same [`WorldConfig`] gives the same event sequence every
//! time; the maths uses only basic IEEE operations (no platform `ln`/`exp`/`pow`), so it
//! should also be the same on every platform.
//!
//! One file: the world's model (players, sessions, guilds, quests, enemies, stores and
//! their stock) is one simulation whose parts draw from the same random streams in a fixed
//! order; split, the order that makes the bytes reproducible would be harder to see.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::catalog::Catalog;
use crate::event::{ClientEvent, Payload};

/// Players in the simulated population unless the caller says otherwise.
pub const DEFAULT_PLAYERS: u32 = 1_000;

/// Where the simulated clock starts unless the caller says otherwise (RFC 3339, UTC).
pub const DEFAULT_START_TIME: &str = "2026-01-01T00:00:00Z";

/// How one world is set up. The same configuration always yields the same events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldConfig {
    /// Seeds every random choice: catalogue prices, player activity, the event stream and
    /// the event ids.
    pub seed: u64,
    /// Size of the player population (`p-000001` ...); must be at least 1.
    pub players: u32,
    /// The simulated clock at the start, in microseconds since the Unix epoch (UTC).
    pub start_time_us: i64,
}

impl Default for WorldConfig {
    /// Seed 0, [`DEFAULT_PLAYERS`] players, clock at [`DEFAULT_START_TIME`].
    fn default() -> WorldConfig {
        WorldConfig {
            seed: 0,
            players: DEFAULT_PLAYERS,
            start_time_us: crate::event::parse_time_us(DEFAULT_START_TIME).expect("DEFAULT_START_TIME is valid RFC 3339"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tunables
// ---------------------------------------------------------------------------------------

/// Highest player level; enemies go up to `MAX_LEVEL + 3`.
const MAX_LEVEL: i16 = 60;
/// Most sessions in play at once (fewer when there are fewer players).
const SESSION_POOL: u32 = 64;
/// Session length in actions, inclusive.
const SESSION_ACTIONS: (u32, u32) = (5, 60);
/// Mean gap between events at an average hour of an average day.
const MEAN_GAP_US: f64 = 200_000.0;
/// Relative event rate per UTC hour (players are mostly in the evening, few at dawn);
/// averages ~1.0 over the day.
const HOURLY_RATE: [f64; 24] = [
    1.20, 1.00, 0.80, 0.62, 0.50, 0.45, 0.48, 0.55, 0.65, 0.75, 0.82, 0.88, //
    0.95, 1.00, 1.05, 1.10, 1.18, 1.28, 1.40, 1.52, 1.60, 1.55, 1.45, 1.32,
];
/// Extra traffic on Saturdays and Sundays.
const WEEKEND_RATE: f64 = 1.25;
/// A player in a guild who draws a join action switches guilds with this probability
/// (otherwise they fight instead).
const GUILD_SWITCH_P: f64 = 0.4;
/// At the start of a session a guild member quietly leaves their guild with this probability.
const GUILD_DRIFT_P: f64 = 0.02;
/// Guild choice weight is `appeal + GUILD_MEMBER_PULL * members`: big guilds attract more.
const GUILD_MEMBER_PULL: f64 = 0.5;
/// Enemy kinds within this many levels of the player are candidates for a fight.
const ENEMY_LEVEL_BAND: i16 = 5;
/// Stores restock every this many simulated hours, uniformly, inclusive.
const RESTOCK_HOURS: (i64, i64) = (4, 8);
/// Tries at picking a purchasable item by popularity before scanning for any.
const BUY_TRIES: u32 = 12;
/// Mixes the seed for the event-id stream, so ids depend only on (seed, index).
const EVENT_ID_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;
/// Mixes the seed for the catalogue and population set-up.
const SETUP_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

// ---------------------------------------------------------------------------------------
// The static catalogue
// ---------------------------------------------------------------------------------------

/// Guild names; ids are 1.. in this order. Popularity is assigned by the seed.
const GUILDS: [&str; 20] = [
    "Knights of the Ember",
    "The Silver Hand",
    "Order of the Azure Dawn",
    "Brotherhood of Ægir",
    "Ravenswatch",
    "The Gilded Lotus",
    "Wolves of Nordheim",
    "Crimson Tide",
    "Moonlit Covenant",
    "The Iron Syndicate",
    "Seekers of the Lost Sigil",
    "Драконья Стража",
    "Stormborn",
    "Thornwood Rangers",
    "The Quiet Blades",
    "Les Chevaliers d'Émeraude",
    "House of Seven Suns",
    "Ashen Vanguard",
    "Merry Misfits",
    "星の守護者",
];

/// Enemy kinds: (name, base level, spawn weight, boss). Ids are 101.. in this order.
const ENEMIES: [(&str, i16, f64, bool); 32] = [
    ("Giant Rat", 1, 10.0, false),
    ("Cave Bat", 2, 8.0, false),
    ("Kobold Scavenger", 3, 8.0, false),
    ("Forest Wolf", 5, 10.0, false),
    ("Goblin Raider", 7, 10.0, false),
    ("Bandit Thug", 9, 8.0, false),
    ("Skeleton Warrior", 11, 9.0, false),
    ("Goblin King", 12, 1.0, true),
    ("Bog Lurker", 13, 6.0, false),
    ("Giant Spider", 15, 8.0, false),
    ("Orc Grunt", 17, 10.0, false),
    ("Harpy", 19, 6.0, false),
    ("Ghoul", 21, 7.0, false),
    ("Orc Shaman", 23, 5.0, false),
    ("Cave Troll", 25, 6.0, false),
    ("Dire Bear", 27, 7.0, false),
    ("Wraith", 29, 6.0, false),
    ("Ogre Brute", 31, 5.0, false),
    ("Basilisk", 33, 4.0, false),
    ("Tengu 天狗", 35, 4.0, false),
    ("Frost Giant", 37, 5.0, false),
    ("Wyvern", 39, 5.0, false),
    ("Minotaur", 41, 5.0, false),
    ("Lich Acolyte", 43, 4.0, false),
    ("Stone Golem", 45, 5.0, false),
    ("Naga Siren", 47, 4.0, false),
    ("Fire Drake", 49, 4.0, false),
    ("Djinn", 51, 3.0, false),
    ("Death Knight", 53, 3.0, false),
    ("Hydra", 55, 1.5, true),
    ("Jötunn Warlord", 58, 1.5, true),
    ("Ancient Red Dragon", 60, 1.0, true),
];

/// A quest on offer: (name, minimum level, repeatable daily).
type QuestDef = (&'static str, i16, bool);

/// Quest givers: (NPC name, popularity, quests). Quest ids are `1000 + 10*contact + k`,
/// both 1-based, e.g. 1011 is the first quest of the first contact.
const CONTACTS: [(&str, f64, &[QuestDef]); 10] = [
    (
        "Ævar the Bold",
        10.0,
        &[
            ("Wolves at the Door", 1, false),
            ("Thin the Pack", 1, true),
            ("The Frozen Barrow", 12, false),
            ("Saga of the Jötunn", 45, false),
        ],
    ),
    ("Sister Maribel", 8.0, &[("Herbs for the Infirmary", 1, true), ("The Plague Cellar", 8, false), ("Lantern in the Crypt", 22, false)]),
    ("Old Tomás", 6.0, &[("Tomás's Lost Ring", 1, false), ("The Missing Caravan", 3, false), ("Bandits on the Ridge", 9, false)]),
    (
        "Captain Ilsa Varn",
        9.0,
        &[("Muster Call", 1, false), ("Patrol Duty", 5, true), ("Hold the Bridge", 15, false), ("Siege of Greywatch", 35, false)],
    ),
    ("Grimble Cogsworth", 4.0, &[("Gears and Gizmos", 2, false), ("Spare Parts", 10, true), ("The Runaway Golem", 44, false)]),
    ("Li Mei of the Jade Road", 5.0, &[("Silk and Steel", 18, false), ("Jade Road Escort", 20, true), ("The Tengu's Riddle", 33, false)]),
    ("Brother Anselm", 3.0, &[("Bless the Well", 1, false), ("Relics of the Fallen", 28, false), ("The Lich's Ledger", 42, false)]),
    ("Zuzana Dvořák", 4.0, &[("Rats in the Granary", 1, true), ("Spider Silk Harvest", 14, false), ("The Basilisk's Gaze", 32, false)]),
    (
        "Warden Kethra",
        7.0,
        &[("Into the Thornwood", 6, false), ("Bounty Board", 12, true), ("Drake Hunt", 47, false), ("The Hydra's Lair", 54, false)],
    ),
    ("春斗 the Wanderer", 2.0, &[("Cherry Blossom Vigil", 1, false), ("Lanterns over Kyōto", 25, false), ("The Last Dragon", 58, false)]),
];

/// An item for sale: (name, category, list price in cents, minimum level, initial stock
/// (also the shelf capacity), units added per restock (0: never restocked)).
type ItemDef = (&'static str, &'static str, u32, i16, i32, i32);

/// Stores: (store id, share of shoppers, items). Inventory ids are `1000*store + k`.
/// The same item can be sold by two stores at different prices.
const STORES: [(i64, f64, &[ItemDef]); 5] = [
    (
        1, // The Rusty Anvil, a smithy
        20.0,
        &[
            ("Iron Shortsword", "weapon", 2499, 1, 2000, 1600),
            ("Oak Longbow", "weapon", 3450, 1, 1600, 1250),
            ("Steel Broadsword", "weapon", 8900, 10, 800, 600),
            ("Runed Warhammer", "weapon", 24900, 25, 400, 300),
            ("Leather Jerkin", "armor", 1999, 1, 2400, 1900),
            ("Kite Shield", "armor", 3900, 1, 1400, 1100),
            ("Chainmail Hauberk", "armor", 7400, 10, 900, 700),
            ("Plate Cuirass", "armor", 21900, 25, 400, 320),
            ("Mithril Greaves", "armor", 48000, 40, 80, 60),
        ],
    ),
    (
        2, // Crème de la Crème Apothecary
        35.0,
        &[
            ("Antidote", "potion", 95, 1, 14000, 11000),
            ("Minor Healing Potion", "potion", 125, 1, 5000, 3600),
            ("Mana Draught", "potion", 280, 1, 6500, 5000),
            ("Healing Potion", "potion", 350, 5, 5500, 4300),
            ("Crème Brûlée Elixir", "potion", 666, 1, 3300, 2600),
            ("Greater Healing Potion", "potion", 975, 20, 2500, 2000),
            ("Elixir of Swiftness", "potion", 1200, 10, 2100, 1700),
            ("Phoenix Tonic", "potion", 4500, 30, 250, 200),
        ],
    ),
    (
        3, // Highmoor Stables
        6.0,
        &[
            ("Pack Mule", "mount", 15000, 5, 1600, 1300),
            ("Chestnut Mare", "mount", 42000, 15, 750, 600),
            ("War Charger", "mount", 125000, 30, 120, 90),
            ("Frost Elk", "mount", 240000, 40, 60, 40),
            ("Obsidian Nightmare", "mount", 799999, 50, 25, 0),
        ],
    ),
    (
        4, // The Gilded Emporium
        12.0,
        &[
            ("Party Hat 🎉", "cosmetic", 199, 1, 1500, 0),
            ("Dye: Midnight Blue", "cosmetic", 249, 1, 1800, 1400),
            ("Feathered Cap", "cosmetic", 499, 1, 1050, 830),
            ("Cloak of Ærith", "cosmetic", 1499, 1, 450, 360),
            ("Glowing Aura", "cosmetic", 1999, 10, 360, 290),
            ("Pet Phoenix Chick", "cosmetic", 2999, 20, 270, 220),
            ("Founder's Crown", "cosmetic", 9900, 1, 100, 0),
        ],
    ),
    (
        5, // Wayfarer's Rest, general goods
        25.0,
        &[
            ("Antidote", "potion", 110, 1, 13000, 10500),
            ("Minor Healing Potion", "potion", 140, 1, 11000, 8800),
            ("Iron Dagger", "weapon", 999, 1, 950, 760),
            ("Traveler's Boots", "armor", 1250, 1, 800, 640),
            ("Wool Cloak", "cosmetic", 600, 1, 1400, 1100),
            ("Donkey", "mount", 9500, 1, 180, 150),
        ],
    ),
];

/// Session styles: (probability, cumulative action weights out of 100 in the order
/// kill, damage, quest, buy, join). Mixed, the draws are about 35/29/15/17/5 percent; a
/// join drawn by a guild member usually becomes a kill and a buy with nothing in stock a
/// hit taken, so the stream ends up near 37/29/15/16/2 once most players have a guild.
const STYLES: [(f64, [u32; 5]); 3] = [
    (0.5, [45, 83, 93, 98, 100]), // grinding: 45 kill, 38 damage, 10 quest, 5 buy, 2 join
    (0.3, [30, 55, 80, 92, 100]), // balanced: 30 kill, 25 damage, 25 quest, 12 buy, 8 join
    (0.2, [15, 27, 37, 90, 100]), // trading: 15 kill, 12 damage, 10 quest, 53 buy, 10 join
];

/// The names of [`STORES`], for the catalogue `catalog init` writes.
const STORE_NAMES: [&str; 5] =
    ["The Rusty Anvil", "Crème de la Crème Apothecary", "Highmoor Stables", "The Gilded Emporium", "Wayfarer's Rest"];
/// A built-in store's restock interval in the catalogue `catalog init` writes (the
/// built-in world draws each gap from [`RESTOCK_HOURS`] instead).
const CATALOG_RESTOCK_HOURS: i64 = 6;
/// Mixes the seed for the list prices of [`builtin_catalog`].
const CATALOG_STREAM: u64 = 0x2545_F491_4F6C_DD1D;

fn kind_of(category: &str) -> Category {
    match category {
        "potion" => Category::Potion,
        "weapon" | "armor" => Category::Gear,
        _ => Category::Single,
    }
}

/// Popularity of an item at a price: ~ price^-0.75, times a seed-chosen ±30% taste.
fn popularity(price_cents: u64, setup: &mut ChaCha8Rng) -> f64 {
    let dollars = price_cents as f64 / 100.0;
    let taste = 0.7 + 0.6 * setup.random::<f64>();
    taste / (dollars.sqrt() * dollars.sqrt().sqrt())
}

/// The built-in stores: [`STORES`] with list prices jittered ±10% by the seed, each store
/// restocking at random gaps of [`RESTOCK_HOURS`].
fn builtin_stores(start_time_us: i64, setup: &mut ChaCha8Rng) -> (Vec<Store>, Vec<f64>) {
    let mut stores = Vec::with_capacity(STORES.len());
    for &(id, _, defs) in STORES.iter() {
        let mut items = Vec::with_capacity(defs.len());
        let mut weights = Vec::with_capacity(defs.len());
        for (k, &(name, category, cents, min_level, stock, restock_qty)) in defs.iter().enumerate() {
            let jitter = setup.random_range(90..=110u64);
            let price_cents = (cents as u64 * jitter + 50) / 100;
            weights.push(popularity(price_cents, setup));
            let capacity = stock.clamp(0, i16::MAX as i32);
            items.push(Item {
                inventory_id: 1000 * id + k as i64 + 1,
                name: name.to_string(),
                category: category.to_string(),
                kind: kind_of(category),
                price_cents,
                min_level,
                stock: capacity,
                capacity,
                restock_qty,
            });
        }
        let first_restock = setup.random_range(HOUR_US..=RESTOCK_HOURS.1 * HOUR_US);
        stores.push(Store {
            id,
            items,
            item_cum: cumulative(weights),
            next_restock_us: start_time_us.saturating_add(first_restock),
            restock: Restock::Random,
        });
    }
    (stores, cumulative(STORES.iter().map(|s| s.1)))
}

/// A catalogue's stores, restocking at the multiples of their interval (event time).
fn stores_of(c: &Catalog, start_time_us: i64, setup: &mut ChaCha8Rng) -> (Vec<Store>, Vec<f64>) {
    let mut stores = Vec::with_capacity(c.stores.len());
    for st in &c.stores {
        let mut items = Vec::new();
        let mut weights = Vec::new();
        for i in c.items.iter().filter(|i| i.store_id == st.store_id) {
            weights.push(popularity(i.unit_price_cents as u64, setup));
            let capacity = i.starting_stock as i32;
            items.push(Item {
                inventory_id: i.inventory_id,
                name: i.name.clone(),
                category: i.category.clone(),
                kind: kind_of(&i.category),
                price_cents: i.unit_price_cents as u64,
                min_level: i.min_level as i16,
                stock: capacity,
                capacity,
                restock_qty: i.restock_qty as i32,
            });
        }
        let (restock, next_restock_us) = match crate::catalog::restock_interval_us(st) {
            Some(i) => (Restock::Every(i), (start_time_us.div_euclid(i) + 1).saturating_mul(i)),
            None => (Restock::Never, i64::MAX),
        };
        stores.push(Store { id: st.store_id, items, item_cum: cumulative(weights), next_restock_us, restock });
    }
    // A store that sells nothing gets no shoppers.
    let traffic: Vec<f64> = c.stores.iter().zip(&stores).map(|(st, s)| if s.items.is_empty() { 0.0 } else { st.traffic_weight }).collect();
    (stores, cumulative(traffic))
}

/// The built-in stores as a catalogue (`questlog catalog init --seed S`): [`STORES`] with
/// list prices jittered ±10% by `seed`, each store restocking every
/// [`CATALOG_RESTOCK_HOURS`].
pub fn builtin_catalog(seed: u64) -> Catalog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CATALOG_STREAM);
    let mut stores = Vec::new();
    let mut items = Vec::new();
    for (s, &(id, share, defs)) in STORES.iter().enumerate() {
        stores.push(crate::catalog::Store {
            store_id: id,
            name: STORE_NAMES[s].to_string(),
            traffic_weight: share,
            restock_interval_hours: CATALOG_RESTOCK_HOURS,
        });
        for (k, &(name, category, cents, min_level, stock, restock_qty)) in defs.iter().enumerate() {
            let jitter = rng.random_range(90..=110u64);
            items.push(crate::catalog::Item {
                store_id: id,
                inventory_id: 1000 * id + k as i64 + 1,
                name: name.to_string(),
                category: category.to_string(),
                unit_price_cents: ((cents as u64 * jitter + 50) / 100) as i64,
                starting_stock: i64::from(stock.clamp(0, i16::MAX as i32)),
                restock_qty: i64::from(restock_qty),
                min_level: i64::from(min_level),
            });
        }
    }
    Catalog::new(stores, items, std::path::Path::new("the built-in stores")).expect("the built-in stores are a valid catalogue")
}

// ---------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------

struct Guild {
    id: i64,
    name: String,
    appeal: f64,
    members: u32,
}

struct Enemy {
    id: i64,
    name: String,
    boss: bool,
}

struct Quest {
    id: i64,
    name: String,
    contact: usize,
    min_level: i16,
    repeatable: bool,
}

struct Contact {
    name: String,
    /// Indices into `World::quests`.
    quests: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    Potion,
    Gear,
    Single,
}

struct Item {
    inventory_id: i64,
    name: String,
    category: String,
    kind: Category,
    price_cents: u64,
    min_level: i16,
    stock: i32,
    capacity: i32,
    restock_qty: i32,
}

struct Store {
    id: i64,
    items: Vec<Item>,
    /// Cumulative popularity of `items` (cheap items are bought more often).
    item_cum: Vec<f64>,
    next_restock_us: i64,
    restock: Restock,
}

/// When a store restocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restock {
    /// Every 4–8 hours at random (the built-in world).
    Random,
    /// At every multiple of this many µs of event time (a catalogue's), as
    /// [`crate::catalog::StockBook`] counts them.
    Every(i64),
    /// Never (a catalogue's interval 0).
    Never,
}

struct Player {
    id: String,
    level: i16,
    xp: u32,
    guild: Option<usize>,
    active: bool,
    /// Bit `i` set: one-off quest `i` already accepted.
    quests_taken: u64,
}

struct Session {
    player: usize,
    id: String,
    remaining: u32,
    /// Cumulative action weights of this session's style.
    actions: [u32; 5],
    /// The enemy being fought: (enemy index, instance level).
    target: Option<(usize, i16)>,
}

/// Candidate enemy kinds for one player level.
struct Spawns {
    enemies: Vec<usize>,
    cum: Vec<f64>,
}

/// The simulated game. Build one with [`World::new`] and pull events from
/// [`World::next_event`] (or iterate it: it never ends).
pub struct World {
    rng: ChaCha8Rng,
    id_rng: ChaCha8Rng,
    clock_us: i64,
    guilds: Vec<Guild>,
    enemies: Vec<Enemy>,
    /// Indexed by player level - 1.
    spawns: Vec<Spawns>,
    contacts: Vec<Contact>,
    contact_cum: Vec<f64>,
    quests: Vec<Quest>,
    stores: Vec<Store>,
    store_cum: Vec<f64>,
    players: Vec<Player>,
    player_cum: Vec<f64>,
    sessions: Vec<Session>,
    /// Restocks so far (for tests: a restock makes stock jump up).
    restocks: u64,
    /// Events of registered types mixed in (`generate --schema`).
    custom: Option<super::custom::CustomTraffic>,
}

impl World {
    /// Builds the catalogue, the population and the first pool of sessions.
    ///
    /// # Panics
    /// If `cfg.players` is 0; callers validate the configuration first.
    pub fn new(cfg: WorldConfig) -> World {
        World::build(cfg, None)
    }

    /// A world whose stores are a store catalogue's (`generate --catalog`): its items,
    /// list prices, minimum levels, stock and restock rule, and its stores' traffic
    /// weights. Stock moves exactly as [`crate::catalog::StockBook`] computes it from the
    /// events, so the `on_hand_qty` of every purchase equals the `stock` table's.
    ///
    /// # Errors
    /// When nothing in the catalogue could ever be bought by this world: no store with a
    /// traffic weight above 0 that sells an item.
    pub fn with_catalog(cfg: WorldConfig, catalog: &Catalog) -> Result<World, String> {
        let sells = catalog.stores.iter().any(|s| s.traffic_weight > 0.0 && catalog.items.iter().any(|i| i.store_id == s.store_id));
        if !sells {
            return Err("the catalogue has no store with a traffic_weight above 0 that sells an item: nothing could be bought".into());
        }
        Ok(World::build(cfg, Some(catalog)))
    }

    fn build(cfg: WorldConfig, catalog: Option<&Catalog>) -> World {
        assert!(cfg.players > 0, "a world needs at least one player");
        let mut setup = ChaCha8Rng::seed_from_u64(cfg.seed ^ SETUP_STREAM);

        // Guilds: Zipf-like appeal over a seed-chosen order of the names.
        let mut ranks: Vec<usize> = (0..GUILDS.len()).collect();
        shuffle(&mut ranks, &mut setup);
        let guilds = GUILDS
            .iter()
            .enumerate()
            .map(|(i, name)| Guild {
                id: i as i64 + 1,
                name: (*name).to_string(),
                appeal: 40.0 / (ranks[i] as f64 + 1.0) + 2.0,
                members: 0,
            })
            .collect();

        let enemies: Vec<Enemy> =
            ENEMIES.iter().enumerate().map(|(i, &(name, _, _, boss))| Enemy { id: 101 + i as i64, name: name.to_string(), boss }).collect();
        let spawns = (1..=MAX_LEVEL)
            .map(|level| {
                let mut near: Vec<usize> = (0..ENEMIES.len()).filter(|&i| (ENEMIES[i].1 - level).abs() <= ENEMY_LEVEL_BAND).collect();
                if near.is_empty() {
                    // Unreachable with the table above, but keep every level fightable.
                    let closest = (0..ENEMIES.len()).min_by_key(|&i| (ENEMIES[i].1 - level).abs());
                    near.extend(closest);
                }
                let cum = cumulative(near.iter().map(|&i| ENEMIES[i].2));
                Spawns { enemies: near, cum }
            })
            .collect();

        let mut contacts = Vec::with_capacity(CONTACTS.len());
        let mut quests = Vec::new();
        for (c, &(name, _, defs)) in CONTACTS.iter().enumerate() {
            let mut mine = Vec::with_capacity(defs.len());
            for (k, &(qname, min_level, repeatable)) in defs.iter().enumerate() {
                mine.push(quests.len());
                quests.push(Quest {
                    id: 1000 + 10 * (c as i64 + 1) + k as i64 + 1,
                    name: qname.to_string(),
                    contact: c,
                    min_level,
                    repeatable,
                });
            }
            contacts.push(Contact { name: name.to_string(), quests: mine });
        }
        assert!(quests.len() <= 64, "quest bookkeeping is a u64 bitset");
        let contact_cum = cumulative(CONTACTS.iter().map(|c| c.1));

        // Stores: list prices jittered ±10% by the seed; popularity ~ price^-0.75 with a
        // seed-chosen ±30% taste factor.
        let (stores, store_cum) = match catalog {
            Some(c) => stores_of(c, cfg.start_time_us, &mut setup),
            None => builtin_stores(cfg.start_time_us, &mut setup),
        };

        // Players: Zipf activity (weight 1/(rank+10)) over a seed-chosen order, so the
        // busiest player is not always p-000001.
        let n = cfg.players as usize;
        let mut order: Vec<u32> = (0..cfg.players).collect();
        shuffle(&mut order, &mut setup);
        let mut activity = vec![0.0; n];
        for (rank, &p) in order.iter().enumerate() {
            activity[p as usize] = 1.0 / (rank as f64 + 10.0);
        }
        let player_cum = cumulative(activity);
        let players = (0..n)
            .map(|i| {
                let u = setup.random::<f64>();
                Player {
                    id: format!("p-{:06}", i + 1),
                    level: 1 + i16::from(u < 0.3) + i16::from(u < 0.1),
                    xp: 0,
                    guild: None,
                    active: false,
                    quests_taken: 0,
                }
            })
            .collect();

        let mut world = World {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            id_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ EVENT_ID_STREAM),
            clock_us: cfg.start_time_us,
            guilds,
            enemies,
            spawns,
            contacts,
            contact_cum,
            quests,
            stores,
            store_cum,
            players,
            player_cum,
            sessions: Vec::new(),
            restocks: 0,
            custom: None,
        };
        let pool = cfg.players.min(SESSION_POOL) as usize;
        world.sessions.reserve_exact(pool);
        for _ in 0..pool {
            let p = world.pick_inactive_player();
            let s = world.start_session(p);
            world.sessions.push(s);
        }
        world
    }

    /// The next event: advances the clock, lets one active session act, and returns what
    /// it did. Every field of the event is set, and every value passes validation.
    pub fn next_event(&mut self) -> ClientEvent {
        self.advance_clock();
        self.restock_due();

        let s = self.rng.random_range(0..self.sessions.len());
        let now_us = self.clock_us;
        let payload = match self.custom.as_mut().and_then(|c| c.next(now_us)) {
            Some(custom) => custom,
            None => {
                let roll = self.rng.random_range(0..100u32);
                let action = self.sessions[s].actions.iter().position(|&c| roll < c).unwrap_or(0);
                match action {
                    0 => self.kill_enemy(s),
                    1 => self.take_damage(s),
                    2 => self.accept_quest(s),
                    3 => self.buy_asset(s).unwrap_or_else(|| self.take_damage(s)),
                    _ => self.join_guild(s).unwrap_or_else(|| self.kill_enemy(s)),
                }
            }
        };

        let event_id = self.next_event_id();
        let session = &self.sessions[s];
        let event = ClientEvent {
            event_id: Some(event_id),
            player_id: Some(self.players[session.player].id.clone()),
            session_id: Some(session.id.clone()),
            event_time_us: Some(self.clock_us),
            payload,
        };

        let session = &mut self.sessions[s];
        session.remaining -= 1;
        if session.remaining == 0 {
            let old = session.player;
            self.players[old].active = false;
            let p = self.pick_inactive_player();
            self.sessions[s] = self.start_session(p);
        }
        event
    }

    /// Mixes events of registered types into this world's traffic (`generate --schema`).
    pub fn with_custom(mut self, custom: super::custom::CustomTraffic) -> World {
        self.custom = Some(custom);
        self
    }

    /// Mixes events of registered types into this world's traffic from its next event on.
    pub fn set_custom(&mut self, custom: super::custom::CustomTraffic) {
        self.custom = Some(custom);
    }

    /// The registered types mixed into this world's traffic, if any.
    pub fn custom_mut(&mut self) -> Option<&mut super::custom::CustomTraffic> {
        self.custom.as_mut()
    }

    /// The simulated clock after the last event (the start time before any).
    pub fn now_us(&self) -> i64 {
        self.clock_us
    }

    // --- clock and stores -----------------------------------------------------------

    /// Exponential gap whose mean follows the hour of day and the weekend; at least 1 µs,
    /// so event times strictly increase.
    fn advance_clock(&mut self) {
        let day = self.clock_us.div_euclid(DAY_US);
        let hour = (self.clock_us.rem_euclid(DAY_US) / HOUR_US) as usize;
        // 1970-01-01 was a Thursday; Monday = 0.
        let weekday = (day + 3).rem_euclid(7);
        let mut rate = HOURLY_RATE[hour];
        if weekday >= 5 {
            rate *= WEEKEND_RATE;
        }
        let u = self.rng.random::<f64>();
        let gap = -ln(1.0 - u) * (MEAN_GAP_US / rate);
        self.clock_us = self.clock_us.saturating_add((gap as i64).max(1));
    }

    /// Each store restocks its restockable items (up to shelf capacity) every few hours.
    fn restock_due(&mut self) {
        for store in &mut self.stores {
            while self.clock_us >= store.next_restock_us {
                for item in &mut store.items {
                    if item.restock_qty > 0 {
                        item.stock = (item.stock + item.restock_qty).min(item.capacity);
                    }
                }
                self.restocks += 1;
                let interval = match store.restock {
                    Restock::Every(every) => every,
                    Restock::Random => self.rng.random_range(RESTOCK_HOURS.0 * HOUR_US..=RESTOCK_HOURS.1 * HOUR_US),
                    Restock::Never => i64::MAX,
                };
                store.next_restock_us = store.next_restock_us.saturating_add(interval);
            }
        }
    }

    // --- sessions and players -------------------------------------------------------

    /// A player chosen by activity weight among those without a session. Some always
    /// exists: there are never more sessions than players, and the caller has just freed one.
    fn pick_inactive_player(&mut self) -> usize {
        for _ in 0..32 {
            let p = pick(&self.player_cum, &mut self.rng);
            if !self.players[p].active {
                return p;
            }
        }
        // The heavy players are all busy: weigh the inactive ones directly.
        let weight = |p: usize| {
            let prev = if p == 0 { 0.0 } else { self.player_cum[p - 1] };
            if self.players[p].active {
                0.0
            } else {
                self.player_cum[p] - prev
            }
        };
        let total: f64 = (0..self.players.len()).map(weight).sum();
        let mut r = self.rng.random::<f64>() * total;
        let mut last = None;
        for p in 0..self.players.len() {
            let w = weight(p);
            if w > 0.0 {
                last = Some(p);
                if r < w {
                    return p;
                }
                r -= w;
            }
        }
        last.expect("an inactive player exists")
    }

    fn start_session(&mut self, p: usize) -> Session {
        let player = &mut self.players[p];
        player.active = true;
        if let Some(g) = player.guild {
            if self.rng.random_bool(GUILD_DRIFT_P) {
                player.guild = None;
                self.guilds[g].members -= 1;
            }
        }
        let u = self.rng.random::<f64>();
        let mut acc = 0.0;
        let mut actions = STYLES[STYLES.len() - 1].1;
        for &(prob, cum) in &STYLES {
            acc += prob;
            if u < acc {
                actions = cum;
                break;
            }
        }
        let remaining = self.rng.random_range(SESSION_ACTIONS.0..=SESSION_ACTIONS.1);
        let id = format!("s-{:016x}", self.rng.next_u64());
        Session { player: p, id, remaining, actions, target: None }
    }

    /// 32 hex digits from the id stream: two words per event, so the id of event `i`
    /// depends only on the seed and `i`.
    fn next_event_id(&mut self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(32);
        for _ in 0..2 {
            let w = self.id_rng.next_u64();
            for shift in (0..16).rev() {
                out.push(HEX[((w >> (shift * 4)) & 0xf) as usize] as char);
            }
        }
        out
    }

    // --- actions --------------------------------------------------------------------

    /// An enemy near the player's level: a kind whose base level is within the band, at an
    /// instance level within ±3 of the player's.
    fn spawn(&mut self, level: i16) -> (usize, i16) {
        let spawns = &self.spawns[(level.clamp(1, MAX_LEVEL) - 1) as usize];
        let e = spawns.enemies[pick(&spawns.cum, &mut self.rng)];
        let instance = (level + self.rng.random_range(-3..=3i16)).max(1);
        (e, instance)
    }

    fn kill_enemy(&mut self, s: usize) -> Payload {
        let p = self.sessions[s].player;
        let level = self.players[p].level;
        let (e, instance) = match self.sessions[s].target.take() {
            Some(t) => t,
            None => self.spawn(level),
        };
        let enemy = &self.enemies[e];
        let mut xp = (2 + i32::from(instance) - i32::from(level)).max(1) as u32;
        if enemy.boss {
            xp *= 3;
        }
        let player = &mut self.players[p];
        player.xp += xp;
        while player.level < MAX_LEVEL && player.xp >= xp_to_next(player.level) {
            player.xp -= xp_to_next(player.level);
            player.level += 1;
        }
        if player.level == MAX_LEVEL {
            player.xp = 0;
        }
        Payload::KillEnemy { enemy_id: enemy.id, name: enemy.name.clone(), level: instance }
    }

    /// A hit from the enemy being fought (a new one if none): ~(4 + 3·level) times a
    /// right-skewed factor (mean 1), with blocks, crits and harder-hitting bosses.
    fn take_damage(&mut self, s: usize) -> Payload {
        let p = self.sessions[s].player;
        let (e, instance) = match self.sessions[s].target {
            Some(t) => t,
            None => {
                let t = self.spawn(self.players[p].level);
                self.sessions[s].target = Some(t);
                t
            }
        };
        let enemy = &self.enemies[e];
        let damage = if self.rng.random_bool(0.02) {
            0 // blocked
        } else {
            // Gamma(2, 1) from two uniforms: -ln(u1·u2).
            let u = (1.0 - self.rng.random::<f64>()) * (1.0 - self.rng.random::<f64>());
            let mut d = (4.0 + 3.0 * f64::from(instance)) * (0.4 + 0.3 * -ln(u));
            if self.rng.random_bool(0.04) {
                d *= 2.0; // critical hit
            }
            if enemy.boss {
                d *= 2.5;
            }
            (d + 0.5).clamp(1.0, f64::from(i16::MAX)) as i16
        };
        Payload::TakeDamage { enemy_id: enemy.id, name: enemy.name.clone(), damage }
    }

    /// A quest from a popular contact that the player qualifies for and has not done (one-off
    /// quests) — or, when the contacts tried have none, a repeatable quest.
    fn accept_quest(&mut self, s: usize) -> Payload {
        let p = self.sessions[s].player;
        let (level, taken) = (self.players[p].level, self.players[p].quests_taken);
        let open = |q: &Quest, i: usize| q.min_level <= level && (q.repeatable || taken & (1 << i) == 0);
        let mut chosen = None;
        for _ in 0..4 {
            let c = pick(&self.contact_cum, &mut self.rng);
            let offered = &self.contacts[c].quests;
            let n = offered.iter().filter(|&&i| open(&self.quests[i], i)).count();
            if n > 0 {
                let k = self.rng.random_range(0..n);
                chosen = offered.iter().copied().filter(|&i| open(&self.quests[i], i)).nth(k);
                break;
            }
        }
        let q = match chosen {
            Some(q) => q,
            None => {
                // "Thin the Pack" is repeatable from level 1, so there is always one.
                let daily = |i: &usize| self.quests[*i].repeatable && self.quests[*i].min_level <= level;
                let n = (0..self.quests.len()).filter(daily).count().max(1);
                let k = self.rng.random_range(0..n);
                (0..self.quests.len()).filter(daily).nth(k).unwrap_or(0)
            }
        };
        let quest = &self.quests[q];
        if !quest.repeatable {
            self.players[p].quests_taken |= 1 << q;
        }
        Payload::AcceptQuest { quest_id: quest.id, name: quest.name.clone(), contact: self.contacts[quest.contact].name.clone() }
    }

    /// A purchase of an in-stock item the player's level allows, chosen by store traffic
    /// and item popularity; `None` if nothing anywhere can be bought.
    fn buy_asset(&mut self, s: usize) -> Option<Payload> {
        let level = self.players[self.sessions[s].player].level;
        let buyable = |it: &Item| it.stock > 0 && it.min_level <= level;
        let mut found = None;
        for _ in 0..BUY_TRIES {
            let st = pick(&self.store_cum, &mut self.rng);
            let it = pick(&self.stores[st].item_cum, &mut self.rng);
            if buyable(&self.stores[st].items[it]) {
                found = Some((st, it));
                break;
            }
        }
        if found.is_none() {
            // Popular choices are sold out: take whatever is left, from a random store on.
            let start = self.rng.random_range(0..self.stores.len());
            found = (0..self.stores.len())
                .map(|k| (start + k) % self.stores.len())
                .find_map(|st| self.stores[st].items.iter().position(buyable).map(|it| (st, it)));
        }
        let (st, it) = found?;
        let qty = match self.stores[st].items[it].kind {
            Category::Potion => {
                let u = self.rng.random::<f64>();
                if u < 0.6 {
                    1
                } else if u < 0.9 {
                    self.rng.random_range(2..=5)
                } else {
                    10
                }
            }
            Category::Gear => {
                if self.rng.random_bool(0.07) {
                    2
                } else {
                    1
                }
            }
            Category::Single => 1,
        };
        let store_id = self.stores[st].id;
        let item = &mut self.stores[st].items[it];
        let qty = qty.min(item.stock);
        item.stock -= qty;
        let cents = item.price_cents * qty as u64;
        Some(Payload::BuyAsset {
            store_id,
            item_name: item.name.clone(),
            inventory_id: item.inventory_id,
            total_cost: (cents as f64 / 100.0) as f32,
            category: item.category.clone(),
            on_hand_qty: item.stock as i16,
        })
    }

    /// Joining a guild, weighted by appeal and current size (so big guilds grow faster).
    /// A player already in a guild switches only sometimes; otherwise `None`.
    fn join_guild(&mut self, s: usize) -> Option<Payload> {
        let p = self.sessions[s].player;
        let current = self.players[p].guild;
        if current.is_some() && !self.rng.random_bool(GUILD_SWITCH_P) {
            return None;
        }
        let weight = |g: &Guild, i: usize| {
            if Some(i) == current {
                0.0
            } else {
                g.appeal + GUILD_MEMBER_PULL * f64::from(g.members)
            }
        };
        let total: f64 = self.guilds.iter().enumerate().map(|(i, g)| weight(g, i)).sum();
        let mut r = self.rng.random::<f64>() * total;
        let mut chosen = None;
        for (i, g) in self.guilds.iter().enumerate() {
            let w = weight(g, i);
            if w > 0.0 {
                chosen = Some(i);
                if r < w {
                    break;
                }
                r -= w;
            }
        }
        let g = chosen?;
        if let Some(c) = current {
            self.guilds[c].members -= 1;
        }
        self.guilds[g].members += 1;
        self.players[p].guild = Some(g);
        Some(Payload::JoinGuild { guild_id: self.guilds[g].id, name: self.guilds[g].name.clone() })
    }
}

impl Iterator for World {
    type Item = ClientEvent;

    fn next(&mut self) -> Option<ClientEvent> {
        Some(self.next_event())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// Experience needed to go from `level` to `level + 1` (a kill is worth 1–5, bosses ×3).
fn xp_to_next(level: i16) -> u32 {
    3 * level as u32 + 5
}

/// Running sums of `weights`, for [`pick`].
fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut total = 0.0;
    weights
        .into_iter()
        .map(|w| {
            total += w;
            total
        })
        .collect()
}

/// An index drawn with probability proportional to its weight, given running sums.
fn pick(cum: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = cum[cum.len() - 1];
    let r = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= r).min(cum.len() - 1)
}

/// Fisher–Yates, with the draws spelled out so the order depends only on the rng stream.
fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Natural logarithm of a positive, normal `x` from basic IEEE arithmetic only (the
/// platform `ln` may differ in the last bit between systems, which would break
/// cross-platform reproducibility of the clock). Accurate to ~1e-13 relative.
fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_normal());
    let bits = x.to_bits();
    let mut exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        exp += 1;
    }
    // ln(m) = 2·atanh(s), s = (m-1)/(m+1), |s| < 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0 + s2 * (1.0 / 15.0)))))));
    exp as f64 * std::f64::consts::LN_2 + 2.0 * s * series
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{validate_json, EventType, MAX_STRING_BYTES};
    use std::collections::{BTreeMap, BTreeSet};

    fn world(seed: u64) -> World {
        World::new(WorldConfig { seed, ..WorldConfig::default() })
    }

    #[test]
    fn same_seed_same_events() {
        let a: Vec<ClientEvent> = world(42).take(10_000).collect();
        let b: Vec<ClientEvent> = world(42).take(10_000).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn different_seeds_differ() {
        let a: Vec<ClientEvent> = world(1).take(1_000).collect();
        let b: Vec<ClientEvent> = world(2).take(1_000).collect();
        assert_ne!(a, b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.event_id != y.event_id));
    }

    #[test]
    fn event_ids_depend_only_on_seed_and_index() {
        // Different populations, same seed: the events differ but the ids line up.
        let a: Vec<ClientEvent> = world(7).take(500).collect();
        let b: Vec<ClientEvent> = World::new(WorldConfig { seed: 7, players: 3, start_time_us: 0 }).take(500).collect();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.event_id, y.event_id);
        }
    }

    #[test]
    fn default_config_starts_at_default_time() {
        let w = World::new(WorldConfig::default());
        assert_eq!(crate::event::format_time_us(w.now_us()), "2026-01-01T00:00:00.000000Z");
    }

    #[test]
    fn tiny_populations_work() {
        for players in [1, 2, 64, 65] {
            let mut w = World::new(WorldConfig { seed: 3, players, start_time_us: 0 });
            let mut seen = BTreeSet::new();
            for ev in w.by_ref().take(5_000) {
                seen.insert(ev.player_id.unwrap());
            }
            assert!(seen.len() as u32 <= players);
            assert_eq!(w.sessions.len() as u32, players.min(SESSION_POOL));
        }
    }

    #[test]
    #[should_panic]
    fn zero_players_panics() {
        World::new(WorldConfig { seed: 0, players: 0, start_time_us: 0 });
    }

    #[test]
    fn ln_matches_std() {
        for x in [1e-16, 2.0f64.powi(-53), 0.001, 0.3, 0.5, 0.72, 1.41, 0.999999, 1.0, 1.5, 2.0, 1e6] {
            let (a, b) = (ln(x), x.ln());
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "ln({x}) = {a}, std {b}");
        }
    }

    fn check_text(s: &str) {
        assert!(!s.is_empty() && s.len() <= MAX_STRING_BYTES, "{s:?}");
    }

    #[test]
    fn a_catalogue_world_moves_stock_as_the_stock_book_computes_it() {
        let catalog = builtin_catalog(3);
        let cfg = WorldConfig { seed: 11, players: 400, start_time_us: 0 };
        let mut w = World::with_catalog(cfg.clone(), &catalog).unwrap();
        let mut book = crate::catalog::StockBook::new();
        book.set_catalog(&catalog);
        let (mut buys, mut restocked) = (0, 0);
        for _ in 0..200_000 {
            let ev = w.next_event();
            if let Payload::BuyAsset { store_id, item_name, inventory_id, total_cost, category, on_hand_qty } = &ev.payload {
                let item = catalog.item(*store_id, *inventory_id).expect("a listed item");
                assert_eq!((&item.name, &item.category), (item_name, category));
                let p = book.purchase(ev.event_time_us.unwrap(), *store_id, *inventory_id, *total_cost).expect("listed");
                assert_eq!(p.on_hand_after, i64::from(*on_hand_qty), "the stock book disagrees with the world");
                assert_eq!(p.short_qty, 0, "the world never sells what it does not have");
                assert_eq!(*total_cost, (item.unit_price_cents as f64 * p.quantity as f64 / 100.0) as f32, "list price × quantity");
                buys += 1;
            }
        }
        restocked += book.rows().iter().map(|r| r.restocked_qty).sum::<i64>();
        assert!(buys > 20_000 && restocked > 0, "{buys} purchases, {restocked} units restocked");
        assert!(World::with_catalog(cfg, &Catalog { stores: vec![], items: vec![] }).is_err());
    }

    #[test]
    fn invariants_hold() {
        let mut w = world(2026);
        let mut counts = [0u64; 5];
        let mut last_time = w.now_us();
        let mut ids = BTreeSet::new();
        let mut sold_out = 0u64;
        let mut restocked_up = 0u64;
        for i in 0..200_000 {
            let before: Vec<Vec<i32>> = w.stores.iter().map(|s| s.items.iter().map(|it| it.stock).collect()).collect();
            let restocks_before = w.restocks;
            let ev = w.next_event();

            let t = ev.event_time_us.expect("event_time");
            assert!(t > last_time, "time must increase: {t} after {last_time}");
            assert_eq!(t, w.now_us());
            last_time = t;
            let id = ev.event_id.as_deref().expect("event_id");
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            if i < 20_000 {
                assert!(ids.insert(id.to_string()), "duplicate event id {id}");
            }
            let player = ev.player_id.as_deref().expect("player_id");
            assert!(player.starts_with("p-") && player.len() == 8, "{player}");
            let session = ev.session_id.as_deref().expect("session_id");
            assert!(session.starts_with("s-") && session.len() == 18, "{session}");
            counts[ev.builtin().expect("the generator makes seed types").index()] += 1;

            match &ev.payload {
                Payload::JoinGuild { guild_id, name } => {
                    assert!((1..=GUILDS.len() as i64).contains(guild_id));
                    check_text(name);
                }
                Payload::KillEnemy { enemy_id, name, level } => {
                    assert!(*enemy_id >= 101 && *level >= 1 && *level <= MAX_LEVEL + 3);
                    check_text(name);
                }
                Payload::AcceptQuest { quest_id, name, contact } => {
                    assert!(*quest_id > 1000);
                    check_text(name);
                    check_text(contact);
                }
                Payload::TakeDamage { enemy_id, name, damage } => {
                    assert!(*enemy_id >= 101 && *damage >= 0);
                    check_text(name);
                }
                Payload::BuyAsset { store_id, item_name, inventory_id, total_cost, category, on_hand_qty } => {
                    check_text(item_name);
                    check_text(category);
                    assert!(total_cost.is_finite() && *total_cost > 0.0);
                    assert!(*on_hand_qty >= 0);
                    let st = w.stores.iter().position(|s| s.id == *store_id).expect("store");
                    let it = w.stores[st].items.iter().position(|x| x.inventory_id == *inventory_id).expect("item");
                    let item = &w.stores[st].items[it];
                    assert_eq!(item.name, *item_name);
                    assert_eq!(i32::from(*on_hand_qty), item.stock, "on_hand_qty is the stock after the sale");
                    assert!(item.stock <= item.capacity && item.capacity <= i16::MAX as i32);
                    if w.restocks == restocks_before {
                        let qty = before[st][it] - item.stock;
                        assert!(qty >= 1, "a sale takes at least one unit");
                        let expected = (item.price_cents as f64 * qty as f64 / 100.0) as f32;
                        assert_eq!(*total_cost, expected, "total_cost = unit price × qty");
                        // Nothing else moved.
                        for (a, s) in before.iter().zip(&w.stores) {
                            for (b, x) in a.iter().zip(&s.items) {
                                if x.inventory_id != *inventory_id {
                                    assert_eq!(*b, x.stock);
                                }
                            }
                        }
                    }
                    if *on_hand_qty == 0 {
                        sold_out += 1;
                    }
                }
                Payload::Custom(c) => panic!("the world made an event of a registered type: {c:?}"),
            }
            for (a, s) in before.iter().zip(&w.stores) {
                for (b, x) in a.iter().zip(&s.items) {
                    assert!(x.stock >= 0 && x.stock <= x.capacity);
                    if x.stock > *b {
                        restocked_up += 1;
                    }
                }
            }
            // Guild bookkeeping matches the players.
            if i % 10_000 == 0 {
                let mut members = vec![0u32; w.guilds.len()];
                for p in &w.players {
                    if let Some(g) = p.guild {
                        members[g] += 1;
                    }
                }
                assert!(members.iter().zip(&w.guilds).all(|(m, g)| *m == g.members));
                assert_eq!(w.players.iter().filter(|p| p.active).count(), w.sessions.len());
            }
        }
        for t in EventType::ALL {
            assert!(counts[t.index()] > 0, "no {t} events");
        }
        let share = |t: EventType| counts[t.index()] as f64 / 200_000.0;
        assert!((0.25..0.45).contains(&share(EventType::KillEnemy)), "{counts:?}");
        assert!((0.20..0.40).contains(&share(EventType::TakeDamage)), "{counts:?}");
        assert!(share(EventType::JoinGuild) > 0.005, "{counts:?}");
        assert!(w.restocks > 0 && restocked_up > 0, "stores restock");
        assert!(sold_out > 0 || w.stores.iter().flat_map(|s| &s.items).all(|it| it.stock > 0));
    }

    #[test]
    fn stock_runs_out_and_comes_back() {
        // ~36 simulated hours: limited items sell out for good, and a popular item runs dry
        // in the evening rush and is sold again after a restock.
        let mut w = world(0);
        let mut zero_at: BTreeMap<i64, usize> = BTreeMap::new();
        let mut sold_after_zero = BTreeSet::new();
        for i in 0..600_000 {
            if let Payload::BuyAsset { inventory_id, on_hand_qty, .. } = w.next_event().payload {
                if zero_at.contains_key(&inventory_id) {
                    sold_after_zero.insert(inventory_id);
                }
                if on_hand_qty == 0 {
                    zero_at.entry(inventory_id).or_insert(i);
                }
            }
        }
        let limited: Vec<i64> = w.stores.iter().flat_map(|s| &s.items).filter(|it| it.restock_qty == 0).map(|it| it.inventory_id).collect();
        assert!(limited.iter().any(|id| zero_at.contains_key(id)), "a limited item sells out: {zero_at:?}");
        assert!(limited.iter().all(|id| !sold_after_zero.contains(id)), "limited items never come back");
        assert!(!sold_after_zero.is_empty(), "a restocked item sells again after running out: {zero_at:?}");
    }

    #[test]
    fn events_pass_validation_unchanged() {
        for ev in world(99).take(20_000) {
            let raw = ev.to_json_string();
            let back = validate_json(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(back, ev, "{raw}");
        }
    }

    #[test]
    fn levels_rise_and_enemies_track_them() {
        let mut w = world(5);
        for ev in w.by_ref().take(300_000) {
            if let Payload::KillEnemy { level, .. } = ev.payload {
                assert!(level >= 1);
            }
        }
        let max = w.players.iter().map(|p| p.level).max().unwrap();
        assert!(max >= 20, "heavy players level up (max level {max})");
        // Kill levels are within ±3 of the killer's level at the time (checked on a fresh
        // world, where we can read the level before each event).
        let mut w = world(6);
        for _ in 0..50_000 {
            let levels: Vec<i16> = w.players.iter().map(|p| p.level).collect();
            let ev = w.next_event();
            if let Payload::KillEnemy { level, .. } = ev.payload {
                let pid = ev.player_id.unwrap();
                let p: usize = pid[2..].parse::<usize>().unwrap() - 1;
                assert!((level - levels[p]).abs() <= 3 || level == 1, "kill level {level}, player {}", levels[p]);
            }
        }
    }
}
