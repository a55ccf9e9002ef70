//! The event model and its validation: the five seed event types, the optional client
//! fields, the server-owned fields, and the rules that turn untrusted JSON into a
//! [`ClientEvent`] or a precise [`Rejection`].
//!
//! Invariants:
//! - A [`ClientEvent`] is only ever built by [`validate_json`]/[`validate_object`], so every
//!   value in it is in range for its Parquet type (ids and counts non-negative, smallints in
//!   `i16`, costs finite `f32`, strings within [`MAX_STRING_BYTES`]).
//! - A client can never set a server-owned field ([`SERVER_OWNED_FIELDS`]).
//! - Nothing here does I/O.
//!
//! One file for the seed's types: their model and the rules that admit a value into it are
//! one job. `custom.rs` beside it holds the checks of the types a studio registers,
//! compiled from their schemas (`crate::schema`). The fuzz crate (`fuzz/`) compiles this
//! folder by path, with `schema`.

pub mod custom;

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
pub use custom::{CustomPayload, CustomValue, Registry};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest text field value (names, contacts, ids) in bytes. Seed names are a few dozen bytes;
/// 1 KiB leaves room for any real name while keeping one row of a table small.
pub const MAX_STRING_BYTES: usize = 1024;

/// Most top-level keys in one event object. The widest type has 12 fields of ours; the rest
/// are kept only in `raw_event`, and this bounds the work a hostile object can cause.
pub const MAX_EVENT_KEYS: usize = 64;

/// Fields the server fills in; a client sending any of them is rejected.
pub const SERVER_OWNED_FIELDS: [&str; 6] = ["log_offset", "timestamp", "accept", "host", "user_agent", "raw_event"];

/// The five seed event types. `event_type` in the JSON decides which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    JoinGuild,
    KillEnemy,
    AcceptQuest,
    TakeDamage,
    BuyAsset,
}

impl EventType {
    pub const ALL: [EventType; 5] =
        [EventType::JoinGuild, EventType::KillEnemy, EventType::AcceptQuest, EventType::TakeDamage, EventType::BuyAsset];

    /// The `event_type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JoinGuild => "join_guild",
            EventType::KillEnemy => "kill_enemy",
            EventType::AcceptQuest => "accept_quest",
            EventType::TakeDamage => "take_damage",
            EventType::BuyAsset => "buy_asset",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The type-specific fields, in table column order, with their kinds.
    pub fn fields(self) -> &'static [(&'static str, FieldKind)] {
        use FieldKind::*;
        match self {
            EventType::JoinGuild => &[("guild_id", Id), ("name", Text)],
            EventType::KillEnemy => &[("enemy_id", Id), ("name", Text), ("level", SmallInt)],
            EventType::AcceptQuest => &[("quest_id", Id), ("name", Text), ("contact", Text)],
            EventType::TakeDamage => &[("enemy_id", Id), ("name", Text), ("damage", SmallInt)],
            EventType::BuyAsset => &[
                ("store_id", Id),
                ("item_name", Text),
                ("inventory_id", Id),
                ("total_cost", Cost),
                ("category", Text),
                ("on_hand_qty", SmallInt),
            ],
        }
    }

    /// Index in [`EventType::ALL`], for per-type arrays of counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a type field holds, and so how it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A non-negative integer that fits `i64` (Parquet INT64).
    Id,
    /// UTF-8 text of at most [`MAX_STRING_BYTES`] bytes.
    Text,
    /// A non-negative integer that fits `i16` (Parquet INT32 annotated INT_16).
    SmallInt,
    /// A finite, non-negative number that fits `f32` (Parquet FLOAT).
    Cost,
}

impl FieldKind {
    fn expected(self) -> &'static str {
        match self {
            FieldKind::Id => "a non-negative integer (INT64)",
            FieldKind::Text => "a string",
            FieldKind::SmallInt => "a non-negative integer up to 32767 (SMALLINT)",
            FieldKind::Cost => "a finite non-negative number (FLOAT)",
        }
    }
}

/// The type fields of one event, checked.
///
/// `S` is how text is held: `String` (the default) for events made or kept, `&str` for a
/// view borrowed from a decoded log block (see [`Record`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Payload<S = String> {
    JoinGuild {
        guild_id: i64,
        name: S,
    },
    KillEnemy {
        enemy_id: i64,
        name: S,
        level: i16,
    },
    AcceptQuest {
        quest_id: i64,
        name: S,
        contact: S,
    },
    TakeDamage {
        enemy_id: i64,
        name: S,
        damage: i16,
    },
    BuyAsset {
        store_id: i64,
        item_name: S,
        inventory_id: i64,
        total_cost: f32,
        category: S,
        on_hand_qty: i16,
    },
    /// An event of a registered type (docs/CONTRACT.md 13). Appended after the seed's
    /// five, so their records keep their bytes (bincode stores the variant's index).
    Custom(custom::CustomPayload<S>),
}

impl<S: AsRef<str>> Payload<S> {
    /// The payload with its text borrowed from this one.
    pub fn view(&self) -> Payload<&str> {
        match self {
            Payload::JoinGuild { guild_id, name } => Payload::JoinGuild { guild_id: *guild_id, name: name.as_ref() },
            Payload::KillEnemy { enemy_id, name, level } => Payload::KillEnemy { enemy_id: *enemy_id, name: name.as_ref(), level: *level },
            Payload::AcceptQuest { quest_id, name, contact } => {
                Payload::AcceptQuest { quest_id: *quest_id, name: name.as_ref(), contact: contact.as_ref() }
            }
            Payload::TakeDamage { enemy_id, name, damage } => {
                Payload::TakeDamage { enemy_id: *enemy_id, name: name.as_ref(), damage: *damage }
            }
            Payload::BuyAsset { store_id, item_name, inventory_id, total_cost, category, on_hand_qty } => Payload::BuyAsset {
                store_id: *store_id,
                item_name: item_name.as_ref(),
                inventory_id: *inventory_id,
                total_cost: *total_cost,
                category: category.as_ref(),
                on_hand_qty: *on_hand_qty,
            },
            Payload::Custom(c) => Payload::Custom(c.view()),
        }
    }

    /// The seed type, or `None` for a registered type's event.
    pub fn builtin(&self) -> Option<EventType> {
        match self {
            Payload::JoinGuild { .. } => Some(EventType::JoinGuild),
            Payload::KillEnemy { .. } => Some(EventType::KillEnemy),
            Payload::AcceptQuest { .. } => Some(EventType::AcceptQuest),
            Payload::TakeDamage { .. } => Some(EventType::TakeDamage),
            Payload::BuyAsset { .. } => Some(EventType::BuyAsset),
            Payload::Custom(_) => None,
        }
    }

    /// The `event_type` string on the wire.
    pub fn type_name(&self) -> &str {
        match self {
            Payload::Custom(c) => c.event_type.as_ref(),
            other => other.builtin().map_or("", EventType::as_str),
        }
    }

    /// Calls `f` with each type field, in table column order.
    pub fn visit_fields(&self, mut f: impl FnMut(&str, FieldValue<'_>)) {
        use FieldValue::*;
        match self {
            Payload::JoinGuild { guild_id, name } => {
                f("guild_id", Int(*guild_id));
                f("name", Text(name.as_ref()));
            }
            Payload::KillEnemy { enemy_id, name, level } => {
                f("enemy_id", Int(*enemy_id));
                f("name", Text(name.as_ref()));
                f("level", Small(*level));
            }
            Payload::AcceptQuest { quest_id, name, contact } => {
                f("quest_id", Int(*quest_id));
                f("name", Text(name.as_ref()));
                f("contact", Text(contact.as_ref()));
            }
            Payload::TakeDamage { enemy_id, name, damage } => {
                f("enemy_id", Int(*enemy_id));
                f("name", Text(name.as_ref()));
                f("damage", Small(*damage));
            }
            Payload::BuyAsset { store_id, item_name, inventory_id, total_cost, category, on_hand_qty } => {
                f("store_id", Int(*store_id));
                f("item_name", Text(item_name.as_ref()));
                f("inventory_id", Int(*inventory_id));
                f("total_cost", Float(*total_cost));
                f("category", Text(category.as_ref()));
                f("on_hand_qty", Small(*on_hand_qty));
            }
            Payload::Custom(c) => {
                for (name, value) in &c.fields {
                    f(name.as_ref(), value.field_value());
                }
            }
        }
    }
}

/// One type field's value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    Int(i64),
    Small(i16),
    Float(f32),
    Text(&'a str),
    /// A registered type's property whose value is null.
    Null,
    /// A registered type's optional property the event did not carry: null in a replay
    /// line, left out of the event's JSON.
    Absent,
    Double(f64),
    Bool(bool),
    /// Microseconds since the epoch, UTC (written as RFC 3339 text).
    Time(i64),
    /// JSON text (an object or array property), written as it is.
    Json(&'a str),
}

impl FieldValue<'_> {
    /// Appends the value as JSON.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            FieldValue::Int(v) => out.push_str(itoa::Buffer::new().format(*v)),
            FieldValue::Small(v) => out.push_str(itoa::Buffer::new().format(*v)),
            // f32's Display is the shortest text that reads back as the same f32, never
            // in exponent form, so it is a valid JSON number.
            FieldValue::Float(v) => {
                let _ = write!(out, "{v}");
            }
            FieldValue::Text(s) => push_json_str(out, s),
            FieldValue::Null | FieldValue::Absent => out.push_str("null"),
            // serde_json's (ryu's) shortest form, which reads back as the same f64.
            FieldValue::Double(v) => match serde_json::Number::from_f64(*v) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            FieldValue::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            FieldValue::Time(us) => {
                out.push('"');
                push_time_us(out, *us);
                out.push('"');
            }
            FieldValue::Json(s) => out.push_str(s),
        }
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    // Hot in replay, where every `raw_event` is escaped, a quote every few bytes at no
    // pattern: a branch per byte on "escape or not" was mispredicted at each quote and
    // took most of the time. Instead each byte writes two bytes without branching (the
    // byte or a backslash, then the escape letter) and moves on by one or two; only the
    // rare `\u00XX` branches. Room is reserved once (a byte escapes to at most 6).
    // SAFETY: what is kept is `s`'s bytes in order, with ASCII escapes in place of ASCII
    // bytes only (which never occur inside a multi-byte UTF-8 sequence), so `out` stays
    // valid UTF-8; and `set_len` covers only bytes written before it.
    let v = unsafe { out.as_mut_vec() };
    v.reserve(s.len().saturating_mul(6).saturating_add(3));
    let start = v.len();
    let room = v.spare_capacity_mut();
    let mut j = 0;
    let put = |room: &mut [std::mem::MaybeUninit<u8>], j: &mut usize, b: u8| {
        room[*j].write(b);
        *j += 1;
    };
    put(room, &mut j, b'"');
    let bytes = s.as_bytes();
    let mut i = 0;
    // Eight bytes at a time while none of them needs escaping (ids, times, names).
    while let Some(word) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        if !word_needs_escape(w) {
            for (k, &b) in word.iter().enumerate() {
                room[j + k].write(b);
            }
            j += 8;
            i += 8;
            continue;
        }
        for &b in word {
            escape_byte(room, &mut j, b);
        }
        i += 8;
    }
    for &b in &bytes[i..] {
        escape_byte(room, &mut j, b);
    }
    put(room, &mut j, b'"');
    unsafe { v.set_len(start + j) };
}

/// Whether any byte of `w` is a quote, a backslash or a control character (below 0x20):
/// the classic SWAR tests "has a zero byte" and "has a byte less than n", which never
/// miss one.
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// Writes byte `b` of a JSON string at `room[*j]` as [`push_json_str`] does: itself, or
/// its escape. Needs 6 bytes of room.
#[inline(always)]
fn escape_byte(room: &mut [std::mem::MaybeUninit<u8>], j: &mut usize, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let e = JSON_ESCAPES[usize::from(b)];
    if e == b'u' {
        for (k, x) in [b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]].into_iter().enumerate() {
            room[*j + k].write(x);
        }
        *j += 6;
        return;
    }
    let escaped = e != 0;
    room[*j].write(if escaped { b'\\' } else { b });
    room[*j + 1].write(e);
    *j += 1 + usize::from(escaped);
}

/// For each byte, how JSON escapes it: 0 for not at all, `u` for `\u00XX`, else the
/// letter after the backslash.
const JSON_ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table
};

/// A validated event as the client sent it: type fields plus the optional client fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientEvent<S = String> {
    pub event_id: Option<S>,
    pub player_id: Option<S>,
    pub session_id: Option<S>,
    /// `event_time` in microseconds since the Unix epoch, UTC.
    pub event_time_us: Option<i64>,
    pub payload: Payload<S>,
}

impl<S: AsRef<str>> ClientEvent<S> {
    /// The `event_type` string on the wire.
    pub fn type_name(&self) -> &str {
        self.payload.type_name()
    }

    /// The seed type, or `None` for a registered type's event.
    pub fn builtin(&self) -> Option<EventType> {
        self.payload.builtin()
    }
}

impl ClientEvent {
    /// The event as compact JSON in canonical member order, as a client would send it:
    /// `event_type`, the type fields, then the optional fields that are set.
    pub fn to_json_string(&self) -> String {
        let mut out = String::with_capacity(192);
        out.push_str("{\"event_type\":");
        push_json_str(&mut out, self.type_name());
        self.payload.visit_fields(|name, value| {
            // A registered type's absent property: left out, as the client left it.
            if value == FieldValue::Absent {
                return;
            }
            out.push(',');
            push_json_str(&mut out, name);
            out.push(':');
            value.write_json(&mut out);
        });
        for (name, v) in [("event_id", &self.event_id), ("player_id", &self.player_id), ("session_id", &self.session_id)] {
            if let Some(v) = v {
                out.push(',');
                push_json_str(&mut out, name);
                out.push(':');
                push_json_str(&mut out, v);
            }
        }
        if let Some(us) = self.event_time_us {
            out.push_str(",\"event_time\":");
            push_json_str(&mut out, &format_time_us(us));
        }
        out.push('}');
        out
    }
}

/// Most bytes of an `Accept`, `Host` or `User-Agent` header the server keeps (cut on a
/// character boundary). Real values are a few dozen to a few hundred bytes; 1 KiB keeps any
/// of them whole while bounding what a client can make the server store per request.
pub const MAX_HEADER_BYTES: usize = 1024;

/// Longest field name a rejection carries (in its `field`, its message, a metric label or
/// the live page's map), in bytes. Every field of ours is under 20 bytes; a client can send
/// any key up to the event size limit, and its name must not grow what is stored per
/// rejection past the raw text's own cap.
pub const MAX_FIELD_NAME_BYTES: usize = 128;

/// Longest rejection message (`error` in answers and rejected lines), in bytes: every
/// message of ours with its clipped quotes of client text fits (the longest quote two
/// clipped names of [`MAX_FIELD_NAME_BYTES`] and serde_json's position).
pub const MAX_REJECTION_MESSAGE_BYTES: usize = 512;

/// Text shared by every record of one request: the request's headers and app. Cloning it
/// copies a pointer, so a batch of 10,000 events keeps its headers once, not 10,000 times.
/// Encoded exactly as a `String` (bincode and JSON alike), so stored bytes do not change.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shared(std::sync::Arc<str>);

impl Shared {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared(std::sync::Arc::from(""))
    }
}

impl AsRef<str> for Shared {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Shared {
    fn from(s: &str) -> Shared {
        Shared(std::sync::Arc::from(s))
    }
}

impl From<String> for Shared {
    fn from(s: String) -> Shared {
        Shared(std::sync::Arc::from(s))
    }
}

impl PartialEq<str> for Shared {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Shared {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Shared {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Shared {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shared, D::Error> {
        String::deserialize(d).map(Shared::from)
    }
}

/// Request metadata the server records with each event (the seed's `request.headers`),
/// and the app whose API key sent it. Owned, its text is [`Shared`] by the records of one
/// request; a [`RecordView`] borrows it from a log block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMeta<S = Shared> {
    pub accept: Option<S>,
    pub host: Option<S>,
    pub user_agent: Option<S>,
    /// The name of the API key's app (`serve --api-keys`); `None` without keys.
    pub app: Option<S>,
}

impl<S> RequestMeta<S> {
    /// The same metadata with each text converted by `f`.
    pub fn map<T>(self, mut f: impl FnMut(S) -> T) -> RequestMeta<T> {
        RequestMeta {
            accept: self.accept.map(&mut f),
            host: self.host.map(&mut f),
            user_agent: self.user_agent.map(&mut f),
            app: self.app.map(&mut f),
        }
    }
}

impl RequestMeta {
    /// Metadata from header values as received: each cut to [`MAX_HEADER_BYTES`] on a
    /// character boundary (invalid UTF-8 replaced first).
    pub fn from_headers(accept: Option<&[u8]>, host: Option<&[u8]>, user_agent: Option<&[u8]>) -> RequestMeta {
        let keep = |v: Option<&[u8]>| v.map(|b| Shared::from(truncate_utf8(&String::from_utf8_lossy(b), MAX_HEADER_BYTES)));
        RequestMeta { accept: keep(accept), host: keep(host), user_agent: keep(user_agent), app: None }
    }

    /// Bytes of text this metadata holds (once, however many records share it).
    pub fn text_bytes(&self) -> usize {
        [&self.accept, &self.host, &self.user_agent, &self.app].iter().map(|v| v.as_ref().map_or(0, |s| s.len())).sum()
    }
}

/// Version 1 of the stored formats (before `RequestMeta::app`), still read.
pub mod v1 {
    use super::{ClientEvent, Rejection};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct RequestMeta<S = String> {
        pub accept: Option<S>,
        pub host: Option<S>,
        pub user_agent: Option<S>,
    }

    #[derive(Deserialize)]
    pub struct Record<S = String> {
        pub received_at_us: i64,
        pub meta: RequestMeta<S>,
        pub raw_event: S,
        pub event: ClientEvent<S>,
    }

    #[derive(Deserialize)]
    pub struct RejectedEvent {
        pub received_at_us: i64,
        pub meta: RequestMeta,
        pub index: u32,
        pub raw: String,
        pub rejection: Rejection,
    }

    impl<S, M: From<S>> From<RequestMeta<S>> for super::RequestMeta<M> {
        fn from(m: RequestMeta<S>) -> super::RequestMeta<M> {
            super::RequestMeta {
                accept: m.accept.map(M::from),
                host: m.host.map(M::from),
                user_agent: m.user_agent.map(M::from),
                app: None,
            }
        }
    }

    impl<S, M: From<S>> From<Record<S>> for super::Record<S, M> {
        fn from(r: Record<S>) -> super::Record<S, M> {
            super::Record { received_at_us: r.received_at_us, meta: r.meta.into(), raw_event: r.raw_event, event: r.event }
        }
    }

    impl From<RejectedEvent> for super::RejectedEvent {
        fn from(r: RejectedEvent) -> super::RejectedEvent {
            super::RejectedEvent {
                received_at_us: r.received_at_us,
                meta: r.meta.into(),
                index: r.index,
                raw: r.raw,
                rejection: r.rejection,
            }
        }
    }
}

/// One log record: a validated event plus everything the server owns. Its `log_offset` is
/// its position in the log, not stored in it.
///
/// `Record` (text as `String`) is what is appended and kept; [`RecordView`] is the same
/// record borrowed from a decoded log block, which the hot readers (replay, projection)
/// use so that reading a record allocates nothing. Both encode to the same bytes.
///
/// `M` is the text of the request metadata: [`Shared`] in an owned record (one copy per
/// request), `&str` in a view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record<S = String, M = Shared> {
    /// Server receive time, microseconds since the Unix epoch (the `timestamp` column).
    pub received_at_us: i64,
    pub meta: RequestMeta<M>,
    /// The event's JSON exactly as received.
    pub raw_event: S,
    pub event: ClientEvent<S>,
}

/// An optional text as `&str`, whichever way it is held.
pub fn opt_str<S: AsRef<str>>(v: &Option<S>) -> Option<&str> {
    v.as_ref().map(|s| s.as_ref())
}

/// A log record borrowed from the block it was decoded from.
pub type RecordView<'a> = Record<&'a str, &'a str>;

impl<S: AsRef<str>, M: AsRef<str>> Record<S, M> {
    /// The record with its text borrowed from this one.
    pub fn view(&self) -> RecordView<'_> {
        let o = opt_str;
        let m = opt_str;
        let e = &self.event;
        Record {
            received_at_us: self.received_at_us,
            meta: RequestMeta {
                accept: m(&self.meta.accept),
                host: m(&self.meta.host),
                user_agent: m(&self.meta.user_agent),
                app: m(&self.meta.app),
            },
            raw_event: self.raw_event.as_ref(),
            event: ClientEvent {
                event_id: o(&e.event_id),
                player_id: o(&e.player_id),
                session_id: o(&e.session_id),
                event_time_us: e.event_time_us,
                payload: e.payload.view(),
            },
        }
    }
}

/// An event the server refused, kept for inspection (`questlog rejected`,
/// `GET /v1/rejected`): nothing is silently dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedEvent {
    pub received_at_us: i64,
    pub meta: RequestMeta,
    /// Position of the event in its request body (0 for a single event).
    pub index: u32,
    /// The event's text as received, cut to [`MAX_REJECTED_RAW_BYTES`].
    pub raw: String,
    pub rejection: Rejection,
}

/// How much of a rejected event's text is kept. The largest accepted event is bounded by
/// the API's event size limit; a rejected one can be anything, so keep enough to debug it.
pub const MAX_REJECTED_RAW_BYTES: usize = 8 * 1024;

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Formats microseconds since the epoch as RFC 3339 UTC with microseconds, e.g.
/// `2026-01-01T00:00:00.000000Z`. Fixed width, so the strings sort as the times do.
pub fn format_time_us(us: i64) -> String {
    let mut s = String::with_capacity(27);
    push_time_us(&mut s, us);
    s
}

/// Appends [`format_time_us`]'s text to `out` without allocating (a hot path of replay and
/// projection). Years outside 0000–9999 fall back to chrono's formatting.
pub fn push_time_us(out: &mut String, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        match DateTime::<Utc>::from_timestamp_micros(us) {
            Some(t) => out.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => out.push_str(&format!("invalid-time({us})")),
        }
        return;
    }
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year as u32);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    put(20, 6, micros);
    out.push_str(std::str::from_utf8(&buf).expect("ASCII digits"));
}

/// Parses an RFC 3339 time into microseconds since the epoch (UTC).
pub fn parse_time_us(s: &str) -> Result<i64, String> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| e.to_string())?;
    Ok(t.with_timezone(&Utc).timestamp_micros())
}

/// Why an event was rejected: which rule, which field, and a sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The field at fault, when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl Rejection {
    /// A rejection with its field name cut to [`MAX_FIELD_NAME_BYTES`] and its message to
    /// [`MAX_REJECTION_MESSAGE_BYTES`] (an ellipsis marks a cut): both can quote what a
    /// client chose, and must not let it grow an answer, a stored rejection or a map key.
    pub fn new(reason: RejectReason, field: Option<&str>, message: String) -> Rejection {
        Rejection {
            reason,
            field: field.map(|f| clip_bytes(f, MAX_FIELD_NAME_BYTES)),
            message: if message.len() <= MAX_REJECTION_MESSAGE_BYTES { message } else { clip_bytes(&message, MAX_REJECTION_MESSAGE_BYTES) },
        }
    }

    /// The same rejection within the caps of [`Rejection::new`] (for one decoded from an
    /// older store or built elsewhere).
    pub fn bounded(self) -> Rejection {
        Rejection::new(self.reason, self.field.as_deref(), self.message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The rule an event broke; the `reason` label of `questlog_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectReason {
    MalformedJson,
    NotAnObject,
    DuplicateKey,
    TooManyKeys,
    TooLarge,
    MissingEventType,
    UnknownEventType,
    MissingField,
    WrongType,
    OutOfRange,
    Negative,
    NonFinite,
    StringTooLong,
    BadTime,
    ServerOwnedField,
    /// A purchase names a store the catalogue (`serve --catalog`) does not have.
    UnknownStore,
    /// A purchase names an item its store does not sell in the catalogue.
    UnknownItem,
    /// A purchase's item name or category is not the catalogue's.
    CatalogMismatch,
}

impl RejectReason {
    pub const ALL: [RejectReason; 18] = [
        RejectReason::MalformedJson,
        RejectReason::NotAnObject,
        RejectReason::DuplicateKey,
        RejectReason::TooManyKeys,
        RejectReason::TooLarge,
        RejectReason::MissingEventType,
        RejectReason::UnknownEventType,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::OutOfRange,
        RejectReason::Negative,
        RejectReason::NonFinite,
        RejectReason::StringTooLong,
        RejectReason::BadTime,
        RejectReason::ServerOwnedField,
        RejectReason::UnknownStore,
        RejectReason::UnknownItem,
        RejectReason::CatalogMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::TooManyKeys => "too_many_keys",
            RejectReason::TooLarge => "too_large",
            RejectReason::MissingEventType => "missing_event_type",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::Negative => "negative",
            RejectReason::NonFinite => "non_finite",
            RejectReason::StringTooLong => "string_too_long",
            RejectReason::BadTime => "bad_time",
            RejectReason::ServerOwnedField => "server_owned_field",
            RejectReason::UnknownStore => "unknown_store",
            RejectReason::UnknownItem => "unknown_item",
            RejectReason::CatalogMismatch => "catalog_mismatch",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A JSON object with its members in order and duplicate keys refused (serde_json's own
/// `Map` keeps the last duplicate silently, which would let `{"level":1,"level":99999}`
/// pass for one value while `raw_event` holds another).
struct StrictObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut members: Vec<(String, Value)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if members.len() >= MAX_EVENT_KEYS {
                        return Err(de::Error::custom(format_args!("too many keys: an event has at most {MAX_EVENT_KEYS}")));
                    }
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("duplicate key `{}`", clip_bytes(&key, MAX_FIELD_NAME_BYTES))));
                    }
                    let value: Value = map.next_value().map_err(|e: A::Error| {
                        // Name the field: serde_json's own message ("number out of range")
                        // does not say which one.
                        de::Error::custom(format_args!("field `{}`: {e}", clip_bytes(&key, MAX_FIELD_NAME_BYTES)))
                    })?;
                    members.push((key, value));
                }
                Ok(StrictObject(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The body of the `event` fuzz target (`fuzz/`) and of the test that replays its
/// corpus: whatever the bytes, validation gives an event or a rejection, never a panic,
/// and an accepted event's canonical JSON validates to the same event. The first byte
/// picks the way in: even for a JSON body's event, odd for seed-style
/// `event_type?key=value&…` query parameters.
pub fn fuzz_event(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let types = fuzz_types();
    let result = if mode % 2 == 0 {
        validate_json_in(&text, types)
    } else {
        let (event_type, query) = text.split_once('?').unwrap_or((&text, ""));
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        members_from_query(event_type, &params, types).and_then(|m| validate_object_in(&m, types))
    };
    if let Ok(event) = result {
        let canonical = event.to_json_string();
        let again = validate_json_in(&canonical, types)
            .unwrap_or_else(|r| panic!("the canonical JSON {canonical} of an accepted event is rejected: {}", r.message));
        assert_eq!(again, event, "the canonical JSON {canonical} checks to other values");
        assert_eq!(again.to_json_string(), canonical, "canonical JSON is not a fixed point");
    }
}

/// The registered type the `event` fuzz target checks besides the seed's five
/// (`"event_type":"fuzz_type"`): one property of every kind, required and optional,
/// nullable and not.
fn fuzz_types() -> &'static Registry {
    static TYPES: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        let doc = serde_json::json!({
            "$schema": crate::schema::IGLU_META_SCHEMA,
            "self": {"vendor": "com.example", "name": "fuzz_type", "format": "jsonschema", "version": "1-0-0"},
            "type": "object",
            "properties": {
                "level": {"type": "integer", "minimum": 1, "maximum": 100},
                "delta": {"type": ["integer", "null"], "minimum": -5, "maximum": 5},
                "ratio": {"type": "number"},
                "share": {"type": "number", "format": "float", "minimum": 0.30000001, "maximum": 1},
                "class": {"type": "string", "enum": ["warrior", "mage"]},
                "map": {"type": ["string", "null"], "maxLength": 3},
                "at": {"type": "string", "format": "date-time"},
                "won": {"type": "boolean"},
                "loadout": {"type": "object"},
                "kills": {"type": "array"}
            },
            "required": ["level", "delta"]
        });
        let schema = crate::schema::Schema::parse(doc.to_string().as_bytes()).expect("the fuzz type is a schema");
        Registry::from_schemas([&schema])
    })
}

/// Validates one event of a seed type given as JSON text (`raw` is kept verbatim as
/// `raw_event`).
pub fn validate_json(raw: &str) -> Result<ClientEvent, Rejection> {
    validate_object(&parse_members(raw)?)
}

/// Validates one event given as JSON text against the seed's types and `types`.
pub fn validate_json_in(raw: &str, types: &Registry) -> Result<ClientEvent, Rejection> {
    validate_object_in(&parse_members(raw)?, types)
}

/// What the seed's Flask API merged into each event from its request
/// (`event.update(request.headers)`): the headers questlog keeps as columns.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedHeaders {
    pub accept: Option<String>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
}

/// Validates one message of the seed's own Kafka topic: a JSON object with the event's
/// members and the request's headers merged in (`Host`, `User-Agent`, `Accept`,
/// `Content-Length`, …). A member whose name has the form of an HTTP header (an upper-case
/// ASCII letter, then letters, digits and `-`) and whose value is a string is a header, not
/// part of the event: `Host`, `User-Agent` and `Accept` (any case) are kept, cut to
/// [`MAX_STRING_BYTES`], the others dropped. Every other member is validated exactly as an
/// event sent over HTTP (so `timestamp` or `host` as a member are refused as server-owned).
pub fn validate_seed_message(raw: &str) -> Result<(ClientEvent, SeedHeaders), Rejection> {
    let members = parse_members(raw)?;
    let mut headers = SeedHeaders::default();
    let mut event: Vec<(String, Value)> = Vec::with_capacity(members.len());
    for (k, v) in members {
        let header_form =
            k.as_bytes().first().is_some_and(u8::is_ascii_uppercase) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        match (header_form, &v) {
            (true, Value::String(s)) => {
                let keep = Some(truncate_utf8(s, MAX_STRING_BYTES).to_string());
                match k.to_ascii_lowercase().as_str() {
                    "host" => headers.host = keep,
                    "user-agent" => headers.user_agent = keep,
                    "accept" => headers.accept = keep,
                    _ => {}
                }
            }
            _ => event.push((k, v)),
        }
    }
    Ok((validate_object(&event)?, headers))
}

/// Parses an event's JSON text into its members, in order, refusing duplicate keys.
fn parse_members(raw: &str) -> Result<Vec<(String, Value)>, Rejection> {
    let trimmed = raw.trim_start();
    if !trimmed.starts_with('{') {
        return Err(match serde_json::from_str::<Value>(raw) {
            Ok(v) => Rejection::new(RejectReason::NotAnObject, None, format!("an event must be a JSON object, got {}", json_kind(&v))),
            Err(e) => Rejection::new(RejectReason::MalformedJson, None, format!("malformed JSON: {e}")),
        });
    }
    let obj: StrictObject = serde_json::from_str(raw).map_err(|e| {
        let msg = e.to_string();
        let reason = if msg.starts_with("duplicate key") {
            RejectReason::DuplicateKey
        } else if msg.starts_with("too many keys") {
            RejectReason::TooManyKeys
        } else if msg.starts_with("field `") && msg.contains("number out of range") {
            // 1e400 and the like: JSON has no infinity, but such a number would be one.
            RejectReason::NonFinite
        } else {
            RejectReason::MalformedJson
        };
        // serde_json appends " at line L column C"; the key sits between the backticks.
        let field = matches!(reason, RejectReason::DuplicateKey | RejectReason::NonFinite)
            .then(|| msg.split('`').nth(1).map(str::to_string))
            .flatten();
        let message = if reason == RejectReason::NonFinite {
            format!("field `{}` is not a finite number ({msg})", field.as_deref().unwrap_or("?"))
        } else {
            format!("malformed JSON: {msg}")
        };
        Rejection::new(reason, field.as_deref(), message)
    })?;
    Ok(obj.0)
}

/// Validates one event of a seed type given as ordered members (from JSON, or built from
/// query parameters).
pub fn validate_object(members: &[(String, Value)]) -> Result<ClientEvent, Rejection> {
    static NONE: Registry = Registry::empty();
    validate_object_in(members, &NONE)
}

/// Validates one event given as ordered members against the seed's types and `types`: the
/// envelope (server-owned fields, `event_type`, the client fields) the same for every type,
/// then the type's own fields.
pub fn validate_object_in(members: &[(String, Value)], types: &Registry) -> Result<ClientEvent, Rejection> {
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);

    for owned in SERVER_OWNED_FIELDS {
        if get(owned).is_some() {
            return Err(Rejection::new(
                RejectReason::ServerOwnedField,
                Some(owned),
                format!("field `{owned}` is set by the server and cannot be sent by a client"),
            ));
        }
    }

    let event_type = match get("event_type") {
        None => {
            return Err(Rejection::new(
                RejectReason::MissingEventType,
                Some("event_type"),
                format!("missing field `event_type`: expected one of {}", type_list(types)),
            ))
        }
        // A seed type is found without looking at the registered ones (the hot path).
        Some(Value::String(s)) => match EventType::parse(s).ok_or_else(|| types.get(s)) {
            Ok(t) => Ok(t),
            Err(Some(custom)) => Err(custom),
            Err(None) => {
                return Err(Rejection::new(
                    RejectReason::UnknownEventType,
                    Some("event_type"),
                    format!("field `event_type` is `{}`, not a known event type: expected one of {}", clip(s), type_list(types)),
                ))
            }
        },
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::WrongType,
                Some("event_type"),
                format!("field `event_type` must be a string, got {}", json_kind(other)),
            ))
        }
    };

    // An empty `event_id` is no id: clients that send "" for an absent id would otherwise
    // have every event after their first dropped as a repeat (contract 3.6).
    let event_id = optional_text(get("event_id"), "event_id")?.filter(|id| !id.is_empty());
    let player_id = optional_text(get("player_id"), "player_id")?;
    let session_id = optional_text(get("session_id"), "session_id")?;
    let event_time_us = match get("event_time") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_time_us(s).map_err(|e| {
            Rejection::new(
                RejectReason::BadTime,
                Some("event_time"),
                format!("field `event_time`: `{}` is not an RFC 3339 time ({e}); expected e.g. 2026-01-01T12:00:00Z", clip(s)),
            )
        })?),
        Some(other) => {
            return Err(Rejection::new(
                RejectReason::WrongType,
                Some("event_time"),
                format!("field `event_time` must be an RFC 3339 string, got {}", json_kind(other)),
            ))
        }
    };

    let event_type = match event_type {
        Ok(t) => t,
        Err(custom) => {
            let payload = Payload::Custom(custom.payload(members)?);
            return Ok(ClientEvent { event_id, player_id, session_id, event_time_us, payload });
        }
    };
    let field = |name: &'static str, kind: FieldKind| -> Result<&Value, Rejection> {
        get(name).filter(|v| !v.is_null()).ok_or_else(|| {
            Rejection::new(
                RejectReason::MissingField,
                Some(name),
                format!("missing field `{name}` for event_type `{event_type}`: expected {}", kind.expected()),
            )
        })
    };
    let id = |name: &'static str| field(name, FieldKind::Id).and_then(|v| check_id(name, v));
    let text = |name: &'static str| field(name, FieldKind::Text).and_then(|v| check_text(name, v));
    let small = |name: &'static str| field(name, FieldKind::SmallInt).and_then(|v| check_small(name, v));

    let payload = match event_type {
        EventType::JoinGuild => Payload::JoinGuild { guild_id: id("guild_id")?, name: text("name")? },
        EventType::KillEnemy => Payload::KillEnemy { enemy_id: id("enemy_id")?, name: text("name")?, level: small("level")? },
        EventType::AcceptQuest => Payload::AcceptQuest { quest_id: id("quest_id")?, name: text("name")?, contact: text("contact")? },
        EventType::TakeDamage => Payload::TakeDamage { enemy_id: id("enemy_id")?, name: text("name")?, damage: small("damage")? },
        EventType::BuyAsset => Payload::BuyAsset {
            store_id: id("store_id")?,
            item_name: text("item_name")?,
            inventory_id: id("inventory_id")?,
            total_cost: field("total_cost", FieldKind::Cost).and_then(|v| check_cost("total_cost", v))?,
            category: text("category")?,
            on_hand_qty: small("on_hand_qty")?,
        },
    };
    Ok(ClientEvent { event_id, player_id, session_id, event_time_us, payload })
}

/// The seed's five in their order, then the registered types by name.
fn type_list(types: &Registry) -> String {
    let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    names.extend(types.names());
    names.join(", ")
}

/// `s` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn clip_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut out = truncate_utf8(s, max.saturating_sub('…'.len_utf8())).to_string();
    out.push('…');
    out
}

/// At most 64 characters of untrusted text for an error message.
fn clip(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(name: &str, kind: FieldKind, v: &Value) -> Rejection {
    Rejection::new(RejectReason::WrongType, Some(name), format!("field `{name}` must be {}, got {}", kind.expected(), json_kind(v)))
}

fn check_string_len(name: &str, s: &str) -> Result<(), Rejection> {
    if s.len() > MAX_STRING_BYTES {
        return Err(Rejection::new(
            RejectReason::StringTooLong,
            Some(name),
            format!("field `{name}` is {} bytes long; the limit is {MAX_STRING_BYTES} bytes", s.len()),
        ));
    }
    Ok(())
}

fn check_text(name: &str, v: &Value) -> Result<String, Rejection> {
    match v {
        Value::String(s) => {
            check_string_len(name, s)?;
            Ok(s.clone())
        }
        other => Err(wrong_type(name, FieldKind::Text, other)),
    }
}

fn optional_text(v: Option<&Value>, name: &str) -> Result<Option<String>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => check_text(name, v).map(Some),
    }
}

/// An integer field: must be a JSON integer (not `7.0`, not `"7"`), non-negative.
fn check_integer(name: &str, kind: FieldKind, v: &Value) -> Result<i64, Rejection> {
    let n = match v {
        Value::Number(n) => n,
        other => return Err(wrong_type(name, kind, other)),
    };
    if let Some(i) = n.as_i64() {
        if i < 0 {
            return Err(Rejection::new(RejectReason::Negative, Some(name), format!("field `{name}` is {i}; expected {}", kind.expected())));
        }
        return Ok(i);
    }
    if n.as_u64().is_some() {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            Some(name),
            format!("field `{name}` is {n}, beyond the INT64 range; expected {}", kind.expected()),
        ));
    }
    // A float: a fraction, an exponent form, or an integer too long for 64 bits.
    match n.as_f64() {
        Some(f) if !f.is_finite() => Err(Rejection::new(
            RejectReason::NonFinite,
            Some(name),
            format!("field `{name}` is not a finite number; expected {}", kind.expected()),
        )),
        Some(f) if f.fract() == 0.0 && f.abs() >= 9.2e18 => Err(Rejection::new(
            if f < 0.0 { RejectReason::Negative } else { RejectReason::OutOfRange },
            Some(name),
            format!("field `{name}` is {n}, beyond the INT64 range; expected {}", kind.expected()),
        )),
        _ => Err(Rejection::new(
            RejectReason::WrongType,
            Some(name),
            format!("field `{name}` is {n}, not an integer; expected {}", kind.expected()),
        )),
    }
}

fn check_id(name: &str, v: &Value) -> Result<i64, Rejection> {
    check_integer(name, FieldKind::Id, v)
}

fn check_small(name: &str, v: &Value) -> Result<i16, Rejection> {
    let i = check_integer(name, FieldKind::SmallInt, v)?;
    i16::try_from(i).map_err(|_| {
        Rejection::new(
            RejectReason::OutOfRange,
            Some(name),
            format!("field `{name}` is {i}, out of range for SMALLINT; expected 0 to {}", i16::MAX),
        )
    })
}

fn check_cost(name: &str, v: &Value) -> Result<f32, Rejection> {
    let f = match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        other => return Err(wrong_type(name, FieldKind::Cost, other)),
    };
    if !f.is_finite() {
        return Err(Rejection::new(
            RejectReason::NonFinite,
            Some(name),
            format!("field `{name}` is not a finite number; expected {}", FieldKind::Cost.expected()),
        ));
    }
    if f < 0.0 {
        return Err(Rejection::new(
            RejectReason::Negative,
            Some(name),
            format!("field `{name}` is {f}; expected {}", FieldKind::Cost.expected()),
        ));
    }
    let single = f as f32;
    if !single.is_finite() {
        return Err(Rejection::new(
            RejectReason::OutOfRange,
            Some(name),
            format!("field `{name}` is {f}, beyond the FLOAT range (about 3.4e38)"),
        ));
    }
    Ok(single)
}

/// Builds the ordered members of an event from seed-style query parameters
/// (`/join_guild?guild_id=7&name=Knights`): numeric fields of the type are parsed as
/// numbers where they parse, so the same validation applies; repeated parameters are
/// reported as duplicate keys, and a non-finite number (`inf`, `NaN`) as non-finite.
/// A registered type's parameters are read by their column: integers and numbers as for the
/// seed's, `true`/`false` for a BOOLEAN, JSON text for an object or array property.
pub fn members_from_query(event_type: &str, params: &[(String, String)], types: &Registry) -> Result<Vec<(String, Value)>, Rejection> {
    let kinds: &[(&str, FieldKind)] = EventType::parse(event_type).map(|t| t.fields()).unwrap_or(&[]);
    let custom = types.get(event_type);
    let mut members: Vec<(String, Value)> = Vec::with_capacity(params.len() + 1);
    members.push(("event_type".to_string(), Value::String(event_type.to_string())));
    for (k, v) in params {
        if members.len() >= MAX_EVENT_KEYS {
            return Err(Rejection::new(
                RejectReason::TooManyKeys,
                None,
                format!("too many parameters: an event has at most {MAX_EVENT_KEYS}"),
            ));
        }
        if members.iter().any(|(existing, _)| existing == k) {
            return Err(Rejection::new(RejectReason::DuplicateKey, Some(k), format!("parameter `{}` is given more than once", clip(k))));
        }
        let kind = kinds.iter().find(|(name, _)| name == k).map(|(_, kind)| *kind).or_else(|| {
            use crate::schema::ColumnType as C;
            match custom?.column(k)? {
                C::SmallInt | C::Int | C::BigInt => Some(FieldKind::Id),
                C::Float | C::Double => Some(FieldKind::Cost),
                C::String | C::Timestamp | C::Boolean | C::Json => None,
            }
        });
        let column = custom.and_then(|c| c.column(k));
        let value = match kind {
            Some(FieldKind::Id) | Some(FieldKind::SmallInt) => match v.parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => match v.parse::<f64>() {
                    Ok(f) if !f.is_finite() => {
                        return Err(Rejection::new(RejectReason::NonFinite, Some(k), format!("field `{k}` is not a finite number")))
                    }
                    _ => Value::String(v.clone()),
                },
            },
            Some(FieldKind::Cost) => match v.parse::<f64>() {
                Ok(f) if !f.is_finite() => {
                    return Err(Rejection::new(RejectReason::NonFinite, Some(k), format!("field `{k}` is not a finite number")))
                }
                Ok(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
                Err(_) => Value::String(v.clone()),
            },
            Some(FieldKind::Text) | None => match (column, v.as_str()) {
                (Some(crate::schema::ColumnType::Boolean), "true") => Value::Bool(true),
                (Some(crate::schema::ColumnType::Boolean), "false") => Value::Bool(false),
                (Some(crate::schema::ColumnType::Json), text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(v.clone())),
                _ => Value::String(v.clone()),
            },
        };
        members.push((k.clone(), value));
    }
    Ok(members)
}

/// Serialises ordered members as a JSON object, keeping their order (for `raw_event` of
/// query-parameter events).
pub fn members_to_json(members: &[(String, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's types as schemas (`src/schema/builtin/`) take exactly the values this
    /// module's checks take: the same fields in order, each required, the same ranges.
    #[test]
    fn the_builtin_schemas_are_the_seed_types() {
        use crate::schema::{builtin, ColumnType, JsonType};
        assert_eq!(crate::schema::STRING_LIMIT_BYTES, MAX_STRING_BYTES);
        assert_eq!(crate::schema::infer::MAX_OBSERVED_MEMBERS, MAX_EVENT_KEYS);
        for f in SERVER_OWNED_FIELDS {
            assert!(crate::schema::RESERVED_PROPERTY_NAMES.contains(&f), "{f}");
        }
        let schemas = builtin::schemas();
        assert_eq!(schemas.len(), EventType::ALL.len());
        for (t, s) in EventType::ALL.into_iter().zip(&schemas) {
            assert_eq!(s.name, t.as_str());
            let got: Vec<&str> = s.properties.iter().map(|p| p.name.as_str()).collect();
            let want: Vec<&str> = t.fields().iter().map(|(n, _)| *n).collect();
            assert_eq!(got, want, "{t}");
            for (p, (_, kind)) in s.properties.iter().zip(t.fields()) {
                assert!(p.required && !p.null_allowed, "{t}.{}", p.name);
                let as_schema = match kind {
                    FieldKind::Id => (JsonType::Integer, ColumnType::BigInt, Some((0, i64::MAX)), None),
                    FieldKind::Text => (JsonType::String, ColumnType::String, None, Some(MAX_STRING_BYTES as u64)),
                    FieldKind::SmallInt => (JsonType::Integer, ColumnType::SmallInt, Some((0, i16::MAX as i64)), None),
                    FieldKind::Cost => (JsonType::Number, ColumnType::Float, None, None),
                };
                assert_eq!((p.json_type, p.column, p.int_range, p.max_length), as_schema, "{t}.{}", p.name);
                if *kind == FieldKind::Cost {
                    assert_eq!(p.number_range, (Some(0.0), None), "{t}.{}", p.name);
                }
                assert!(p.enum_values.is_none());
            }
        }
    }

    #[test]
    fn seed_messages_split_headers_from_the_event() {
        let raw = r#"{"event_type":"join_guild","guild_id":7,"name":"Knights","Host":"localhost:5000","User-Agent":"ApacheBench/2.3","Accept":"*/*","Content-Length":"0","player_id":"p1"}"#;
        let (event, headers) = validate_seed_message(raw).unwrap();
        assert_eq!(event.builtin(), Some(EventType::JoinGuild));
        assert_eq!(event.player_id.as_deref(), Some("p1"));
        assert_eq!(
            headers,
            SeedHeaders { accept: Some("*/*".into()), host: Some("localhost:5000".into()), user_agent: Some("ApacheBench/2.3".into()) }
        );
        // Validated as over HTTP: a missing field, an unknown type, a server-owned member.
        let missing = validate_seed_message(r#"{"event_type":"join_guild","name":"K","Host":"h"}"#).unwrap_err();
        assert_eq!((missing.reason, missing.field.as_deref()), (RejectReason::MissingField, Some("guild_id")));
        assert_eq!(validate_seed_message(r#"{"event_type":"dance"}"#).unwrap_err().reason, RejectReason::UnknownEventType);
        let owned = validate_seed_message(r#"{"event_type":"join_guild","guild_id":1,"name":"K","host":"h"}"#).unwrap_err();
        assert_eq!(owned.reason, RejectReason::ServerOwnedField);
        // A header-like name with a non-string value stays in the event (and is kept in raw_event only).
        assert!(validate_seed_message(r#"{"event_type":"join_guild","guild_id":1,"name":"K","X-Count":3}"#).is_ok());
        assert_eq!(validate_seed_message("not json").unwrap_err().reason, RejectReason::MalformedJson);
    }

    fn reason(raw: &str) -> RejectReason {
        validate_json(raw).expect_err(raw).reason
    }

    #[test]
    fn accepts_each_type() {
        for raw in [
            r#"{"event_type":"join_guild","guild_id":7,"name":"Knights"}"#,
            r#"{"event_type":"kill_enemy","enemy_id":1,"name":"Orc","level":32767}"#,
            r#"{"event_type":"accept_quest","quest_id":3,"name":"Q","contact":"Mara"}"#,
            r#"{"event_type":"take_damage","enemy_id":1,"name":"Orc","damage":0}"#,
            r#"{"event_type":"buy_asset","store_id":1,"item_name":"Sword","inventory_id":9,"total_cost":12.5,"category":"weapon","on_hand_qty":3,"event_time":"2026-01-01T00:00:00Z","player_id":"p1"}"#,
        ] {
            validate_json(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        }
    }

    #[test]
    fn rejects_each_rule_with_field() {
        assert_eq!(reason(r#"{"event_type":"dance"}"#), RejectReason::UnknownEventType);
        assert_eq!(reason(r#"{"guild_id":1}"#), RejectReason::MissingEventType);
        assert_eq!(reason(r#"{"event_type":"join_guild","name":"x"}"#), RejectReason::MissingField);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":"7","name":"x"}"#), RejectReason::WrongType);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":7.5,"name":"x"}"#), RejectReason::WrongType);
        assert_eq!(reason(r#"{"event_type":"kill_enemy","enemy_id":1,"name":"x","level":40000}"#), RejectReason::OutOfRange);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":-1,"name":"x"}"#), RejectReason::Negative);
        assert_eq!(
            reason(
                r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":-0.5,"category":"c","on_hand_qty":1}"#
            ),
            RejectReason::Negative
        );
        assert_eq!(
            reason(
                r#"{"event_type":"buy_asset","store_id":1,"item_name":"a","inventory_id":1,"total_cost":1e300,"category":"c","on_hand_qty":1}"#
            ),
            RejectReason::OutOfRange
        );
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(reason(&format!(r#"{{"event_type":"join_guild","guild_id":1,"name":"{long}"}}"#)), RejectReason::StringTooLong);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":1,"name":"x","event_time":"yesterday"}"#), RejectReason::BadTime);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":1,"name":"x","host":"h"}"#), RejectReason::ServerOwnedField);
        assert_eq!(reason(r#"{"event_type":"join_guild","guild_id":1,"guild_id":2,"name":"x"}"#), RejectReason::DuplicateKey);
        assert_eq!(reason(r#"[1]"#), RejectReason::NotAnObject);
        let inf = validate_json(r#"{"event_type":"kill_enemy","enemy_id":1,"name":"x","level":1e400}"#).unwrap_err();
        assert_eq!((inf.reason, inf.field.as_deref()), (RejectReason::NonFinite, Some("level")));
        assert_eq!(reason(r#"{"event_type":"#), RejectReason::MalformedJson);
        let err = validate_json(r#"{"event_type":"kill_enemy","enemy_id":1,"name":"x","level":40000}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("level"));
        assert!(err.message.contains("`level`"), "{}", err.message);
    }

    #[test]
    fn query_params_coerce_numbers() {
        let params = vec![("guild_id".to_string(), "7".to_string()), ("name".to_string(), "Knights".to_string())];
        let m = members_from_query("join_guild", &params, &Registry::empty()).unwrap();
        let e = validate_object(&m).unwrap();
        assert_eq!(e.payload, Payload::JoinGuild { guild_id: 7, name: "Knights".into() });
        assert_eq!(members_to_json(&m), r#"{"event_type":"join_guild","guild_id":7,"name":"Knights"}"#);
        let bad = vec![("total_cost".to_string(), "inf".to_string())];
        assert_eq!(members_from_query("buy_asset", &bad, &Registry::empty()).unwrap_err().reason, RejectReason::NonFinite);
    }

    #[test]
    fn fast_time_format_matches_chrono() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Years 1900..2200, any microsecond.
            let us = -2_208_988_800_000_000 + (rng >> 1) as i64 % 9_467_280_000_000_000;
            let chrono = DateTime::<Utc>::from_timestamp_micros(us).unwrap().to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(format_time_us(us), chrono, "{us}");
        }
        for us in [0, -1, 1, 951_782_400_000_000, 253_402_300_799_999_999] {
            let chrono = DateTime::<Utc>::from_timestamp_micros(us).unwrap().to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(format_time_us(us), chrono, "{us}");
        }
    }

    #[test]
    fn time_roundtrip_is_fixed_width() {
        let us = parse_time_us("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(format_time_us(us), "2026-01-01T00:00:00.000000Z");
        assert_eq!(parse_time_us("2026-01-01T01:00:00+01:00").unwrap(), us);
    }

    #[test]
    fn canonical_json_roundtrips() {
        let raw = r#"{"event_type":"buy_asset","store_id":1,"item_name":"Ævar \"the\" Bold\n","inventory_id":9,"total_cost":12.1,"category":"weapon","on_hand_qty":3,"event_id":"e1","event_time":"2026-01-01T00:00:00.000000Z"}"#;
        let e = validate_json(raw).unwrap();
        assert_eq!(e.to_json_string(), raw);
        let mut s = String::new();
        push_json_str(&mut s, "a\u{1}b");
        assert_eq!(s, r#""a\u0001b""#);
    }

    #[test]
    fn json_strings_read_back_as_written() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = ('\0'..='\u{7f}').chain(['é', 'Æ', '€', '😀', '\u{2028}', '\u{ffff}']).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            // Past 8 bytes, so that runs of plain text go through the eight-at-a-time path.
            let len = rng.random_range(0..80);
            let text: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            let mut out = String::from("x");
            push_json_str(&mut out, &text);
            let back: String = serde_json::from_str(&out[1..]).unwrap();
            assert_eq!(back, text, "{out}");
            assert!(!out[1..].bytes().any(|b| b < 0x20), "control characters are escaped: {out:?}");
        }
    }
}
