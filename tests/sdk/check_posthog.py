"""PostHog's Python SDK (posthog, from PyPI, unmodified but for its host and project key)
against `questlog serve` (docs/CONTRACT.md 3.9.2), in both capture modes: v0 (`POST
/batch/`, the default; one client gzips) and v1 (`POST /i/v1/analytics/events`, with an
answer per event).

Each mode's client sends `capture` events of a registered type (`Level Up` -> level_up)
and of a seed type (`Join Guild` -> join_guild), `identify` and `alias` calls, and invalid
events, through its own queue, batching and retries; a proxy answers one batch 503 after
questlog took it, so the SDK sends it again. Then: every valid event is in the Delta tables
once (deltalake), the invalid ones are in GET /v1/rejected with their uuids and reasons,
v1's invalid events were reported to the SDK's on_error as dropped, and v0's client saw no
error.

Usage: check_posthog.py QUESTLOG_BINARY LEVEL_UP_SCHEMA WORKDIR
"""


from posthog import Posthog

import common
from common import WRITE_KEY, fail

CLASSES = ["warrior", "mage", "rogue"]


def run(addr, data):
    valid = {"level_up": set(), "guild_joins": set()}
    invalid = {}
    summary = []
    for mode in ("v0", "v1"):
        proxy, host = common.proxy_to(addr, forced=2)
        errors = []
        on_error = lambda e, batch: errors.append((e, batch))
        clients = [Posthog(WRITE_KEY, host=host, gzip=gz, flush_at=100, flush_interval=0.5, max_retries=5, on_error=on_error,
                           capture_mode=mode) for gz in ((True, False) if mode == "v0" else (True,))]
        bad = {}
        for i in range(1500):
            c = clients[i % len(clients)]
            user = f"player-{i % 97}"
            if i % 3 == 0:
                u = c.capture("Join Guild", distinct_id=user, properties={"guild_id": i % 40, "name": f"guild {i % 40}", "$session_id": f"s-{i % 7}"})
                valid["guild_joins"].add(u)
            else:
                u = c.capture("Level Up", distinct_id=user, properties={"level": i % 100 + 1, "class": CLASSES[i % 3]})
                valid["level_up"].add(u)
        for i in range(10):
            clients[0].identify(distinct_id=f"player-{i}", properties={"plan": "free"}) if hasattr(clients[0], "identify") else \
                clients[0].set(distinct_id=f"player-{i}", properties={"plan": "free"})
            clients[0].alias(previous_id=f"anon-{i}", distinct_id=f"player-{i}")
        for i in range(10):
            bad[clients[0].capture("Level Up", distinct_id="player-bad", properties={"level": "high", "class": "mage"})] = "wrong_type"
            bad[clients[0].capture("Summon Dragon", distinct_id="player-bad", properties={"size": 3})] = "unknown_event_type"
        for c in clients:
            c.flush()
            c.shutdown()
        proxy.shutdown()
        invalid.update(bad)
        forced = common.check_forced_retry(proxy)
        if mode == "v0" and errors:
            fail(f"v0: the SDK reported errors: {[repr(e) for e, _ in errors[:3]]}")
        if mode == "v1":
            # Each invalid event reported to on_error as dropped by the server, nothing else.
            dropped = set()
            for e, batch in errors:
                for d in getattr(e, "drops", None) or []:
                    dropped.add(d[0] if isinstance(d, (tuple, list)) else getattr(d, "uuid", d))
            if dropped != set(bad):
                fail(f"v1: on_error reported {len(dropped)} dropped events ({list(dropped)[:2]}), expected the {len(bad)} invalid ones; errors {[repr(e)[:200] for e, _ in errors[:2]]}")
        summary.append(f"{mode}: {proxy.posts} posts, one forced retry of {forced} events answered as duplicates")
    common.check_tables(addr, data, valid)
    common.check_rejected(addr, invalid)
    counted = common.counted(addr, "posthog")
    if counted.get("identify", 0) < 20 or counted.get("alias", 0) < 20:
        fail(f"identify and alias calls counted as {counted}, expected at least 20 each")
    print(f"ok: posthog: posthog (Python SDK) in both capture modes sent {sum(len(v) for v in valid.values())} valid events "
          f"({'; '.join(summary)}); the tables hold each once ({len(valid['level_up'])} level_up, {len(valid['guild_joins'])} guild_joins, "
          f"read with deltalake); {len(invalid)} invalid events in /v1/rejected with their uuids and reasons, v1's reported to on_error as "
          f"dropped; $identify/$set and $create_alias counted {counted}")


if __name__ == "__main__":
    common.main("posthog", run)
