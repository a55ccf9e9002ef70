"""README.md's "From your analytics SDK" snippets, run as written: the section's ```python
blocks are taken from the README itself and run with the SDKs from PyPI, only the host
`http://127.0.0.1:8080` changed to a `serve` on a free port whose `--api-keys` file holds the
README's key. Each snippet exits 0 and its events land: `level_up` from the Segment, PostHog
and Snowplow snippets and `join_guild` from Segment's (a schema registered first, as the
README says), and the `--infer-schemas` snippet's `boss_defeated` type and table.

Usage: check_readme.py QUESTLOG_BINARY SCHEMA WORKDIR
"""

import json
import os
import subprocess
import sys
import time

import deltalake

import common
from common import ADMIN_KEY, READ_KEY, fail

README_KEY = "qk_game_0123456789"
README_HOST = "http://127.0.0.1:8080"


def snippets():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(repo, "README.md")).read()
    start = text.index("\n## From your analytics SDK")
    end = text.index("\n## ", start + 1)
    section, blocks = text[start:end], []
    while "```python\n" in section:
        section = section.split("```python\n", 1)[1]
        block, section = section.split("\n```", 1)
        blocks.append(block)
    return blocks


def serve(binary, work, extra=()):
    os.makedirs(work, exist_ok=True)
    keys = os.path.join(work, "keys.toml")
    with open(keys, "w") as f:
        f.write(f'[[key]]\napp = "game"\nkey = "{README_KEY}"\n\n'
                f'[[key]]\napp = "ops"\nkey = "{ADMIN_KEY}"\nscopes = ["admin", "read"]\n\n'
                f'[[key]]\napp = "dashboard"\nkey = "{READ_KEY}"\nscopes = ["read"]\n')
    proc, addr = common.start_serve(binary, os.path.join(work, "data"), keys, extra)
    return proc, addr, os.path.join(work, "data")


def run_snippet(block, addr, what):
    if README_HOST not in block or README_KEY not in block:
        fail(f"readme: the {what} snippet no longer names {README_HOST} and the key {README_KEY}; update this check")
    p = subprocess.run([sys.executable, "-c", block.replace(README_HOST, addr)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        fail(f"readme: the {what} snippet exited {p.returncode}:\n{p.stderr[-1500:]}")


def rows_when_projected(addr, data, tables, events):
    deadline = time.time() + 60
    while True:
        h = json.loads(common.call("GET", addr + "/healthz", key=READ_KEY)[1])
        if h.get("log_end_offset") == events and h.get("projected_offset") == events:
            break
        if time.time() > deadline:
            fail(f"readme: the log or tables did not reach {events} events within 60 s: {h}")
        time.sleep(0.2)
    return {t: deltalake.DeltaTable(os.path.join(data, "delta", t)).to_pyarrow_table(columns=["player_id"]).to_pylist()
            for t in tables}


def main():
    binary, schema, work = sys.argv[1], sys.argv[2], sys.argv[3]
    common.CHECK = "readme"
    blocks = snippets()
    if len(blocks) != 4:
        fail(f"readme: {len(blocks)} python snippets in the SDK section, expected 4 (Segment, PostHog, Snowplow, infer)")
    proc, addr, data = serve(binary, os.path.join(work, "typed"))
    try:
        with open(schema, "rb") as f:
            status, body = common.call("POST", addr + "/v1/schemas", f.read(), key=ADMIN_KEY)
        if status != 201:
            fail(f"readme: registering {schema} answered {status}: {body[:200]!r}")
        for block, what in zip(blocks[:3], ["Segment", "PostHog", "Snowplow"]):
            run_snippet(block, addr, what)
        rows = rows_when_projected(addr, data, ["level_up", "guild_joins"], 4)
        if len(rows["level_up"]) != 3 or len(rows["guild_joins"]) != 1 or any(r["player_id"] != "player-7" for t in rows.values() for r in t):
            fail(f"readme: the snippets' events in the tables: {rows}")
    finally:
        common.stop(proc)
    proc, addr, data = serve(binary, os.path.join(work, "inferred"), ["--infer-schemas"])
    try:
        run_snippet(blocks[3], addr, "--infer-schemas")
        uris = [s["uri"] for s in json.loads(common.call("GET", addr + "/v1/schemas", key=READ_KEY)[1])["registered"]]
        if uris != ["iglu:questlog.inferred/boss_defeated/jsonschema/1-0-0"]:
            fail(f"readme: after the --infer-schemas snippet the server lists {uris}")
        rows = rows_when_projected(addr, data, ["boss_defeated"], 1)
        if len(rows["boss_defeated"]) != 1:
            fail(f"readme: boss_defeated holds {rows}")
    finally:
        common.stop(proc)
    print("ok: readme: the README's Segment, PostHog and Snowplow snippets put 3 level_up events and 1 guild join in the "
          "tables; its --infer-schemas snippet made iglu:questlog.inferred/boss_defeated/jsonschema/1-0-0 and its table")


main()
