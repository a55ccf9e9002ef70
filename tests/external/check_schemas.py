"""questlog's event type schemas read by a JSON Schema implementation questlog did not
write (the `jsonschema` package): the seed's five built-in schemas and a studio's example
are valid JSON Schema (draft 2020-12's meta-schema), every event `generate` makes is valid
against its type's schema, and values questlog refuses (negative ids, a level past
SMALLINT, a number as text, a missing field, a string past 1024 characters, a cost as
text) are invalid to jsonschema too.

Usage: check_schemas.py QUESTLOG_BINARY DATA_DIR (DATA_DIR must hold generated events)
"""
import copy
import json
import subprocess
import sys

from jsonschema import Draft202012Validator

TYPES = ["join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"]

LEVEL_UP = {
    "$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
    "self": {"vendor": "com.example.game", "name": "level_up", "format": "jsonschema", "version": "1-0-0"},
    "type": "object",
    "properties": {
        "level": {"type": "integer", "minimum": 1, "maximum": 100},
        "class": {"type": "string", "enum": ["warrior", "mage", "rogue"]},
        "xp": {"type": "integer", "minimum": 0},
        "zone": {"type": ["string", "null"], "maxLength": 40},
    },
    "required": ["level", "class"],
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    binary, data = sys.argv[1], sys.argv[2]
    validators = {}
    for t in TYPES:
        doc = json.loads(subprocess.run([binary, "schema", "show", t], check=True, capture_output=True, text=True).stdout)
        # The `self` block is Iglu's; to a draft 2020-12 validator it is an annotation.
        Draft202012Validator.check_schema(doc)
        validators[t] = Draft202012Validator(doc)
    Draft202012Validator.check_schema(LEVEL_UP)

    lines = subprocess.run([binary, "--data-dir", data, "replay"], check=True, capture_output=True, text=True).stdout.splitlines()
    if len(lines) < 1000:
        fail(f"expected generated events in {data}, found {len(lines)}")
    seen = {t: 0 for t in TYPES}
    samples = {}
    for line in lines:
        rec = json.loads(line)
        event = json.loads(rec["raw_event"])
        t = event["event_type"]
        errors = list(validators[t].iter_errors(event))
        if errors:
            fail(f"offset {rec['log_offset']}: questlog took it, jsonschema says {errors[0].message}: {event}")
        seen[t] += 1
        samples.setdefault(t, event)
    if min(seen.values()) == 0:
        fail(f"not every type generated: {seen}")

    # Values questlog refuses (tests/… and event::custom's equivalence test say which
    # reason); jsonschema must call each invalid too.
    schema_of = {t: json.loads(subprocess.run([binary, "schema", "show", t], check=True, capture_output=True, text=True).stdout) for t in TYPES}
    bad = 0
    for t, event in samples.items():
        for field, spec in schema_of[t]["properties"].items():
            variants = [None]  # missing
            if spec["type"] == "integer":
                variants += [-1, "7", 1.5, 2**63]
                if spec.get("maximum") == 32767:
                    variants.append(32768)
            elif spec["type"] == "number":
                variants += [-0.5, "9.99"]
            else:
                variants += [7, "x" * 1025]
            for v in variants:
                e = copy.deepcopy(event)
                if v is None:
                    del e[field]
                else:
                    e[field] = v
                if validators[t].is_valid(e):
                    fail(f"{t}.{field} = {v!r}: questlog refuses it, jsonschema finds it valid")
                bad += 1
    print(f"ok: schemas: the 5 built-in schemas and an example are valid draft 2020-12; {len(lines)} generated events valid to jsonschema {dict(seen)}; {bad} values questlog refuses invalid to it too")


if __name__ == "__main__":
    main()
