"""Segment's Node SDK (@segment/analytics-node from npm, unmodified but for its host and write
key; `segment_node.mjs`) against `questlog serve` (docs/CONTRACT.md 3.9.1), through the proxy
that answers one batch 503 after questlog took it: every valid event once in the tables
(deltalake), the invalid ones in `rejected` with their message ids and reasons.

Usage: check_segment_node.py QUESTLOG_BINARY LEVEL_UP_SCHEMA WORKDIR  (node and tests/sdk's
node_modules on hand)
"""

import json
import os
import subprocess

import common
from common import WRITE_KEY, fail


def run(addr, data):
    proxy, host = common.proxy_to(addr, forced=2)
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run(["node", os.path.join(here, "segment_node.mjs"), host, WRITE_KEY], capture_output=True, text=True, timeout=120)
    proxy.shutdown()
    if p.returncode != 0:
        fail(f"segment_node.mjs failed: {p.stderr[-800:]}")
    sent = json.loads(p.stdout.strip().splitlines()[-1])
    if sent["errors"]:
        fail(f"the SDK reported errors: {sent['errors'][:3]}")
    forced = common.check_forced_retry(proxy)
    valid = {"level_up": set(sent["level_up"]), "guild_joins": set(sent["guild_joins"])}
    if len(valid["level_up"]) != 1000 or len(valid["guild_joins"]) != 500:
        fail(f"the SDK gave {len(valid['level_up'])} and {len(valid['guild_joins'])} distinct message ids, not 1000 and 500")
    common.check_tables(addr, data, valid)
    common.check_rejected(addr, sent["invalid"])
    print(f"ok: segment (node): @segment/analytics-node sent 1500 valid events in {proxy.posts} posts; one answered 503 after "
          f"questlog took it ({forced} events) was sent again and answered as duplicates; the tables hold each once (deltalake); "
          f"{len(sent['invalid'])} invalid events in /v1/rejected with their message ids and reasons")


if __name__ == "__main__":
    common.main("segment (node)", run)
