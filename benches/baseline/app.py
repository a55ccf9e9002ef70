"""The seed's API, as a baseline: Flask under gunicorn, each event plus the request's
headers appended as one JSON line to a log file (the seed sent the same record to Kafka).

Routes match questlog's so the same load drives both:
  GET|POST /<event_type>?field=value&...   one event from query parameters (seed style)
  POST /v1/events                          a JSON array of events (batched load)

Run: QUESTLOG_BASELINE_LOG=/tmp/events.jsonl gunicorn -w 2 -b 127.0.0.1:5000 app:app
"""
import datetime
import fcntl
import json
import os

from flask import Flask, jsonify, request

app = Flask(__name__)
LOG_PATH = os.environ.get("QUESTLOG_BASELINE_LOG", "/tmp/questlog-baseline-events.jsonl")
EVENT_TYPES = {"join_guild", "kill_enemy", "accept_quest", "take_damage", "buy_asset"}
_log = open(LOG_PATH, "a", encoding="utf-8")


def _append(lines):
    # Several gunicorn workers share the file: lock around each write, flush after it
    # (the seed's Kafka producer did not fsync either).
    fcntl.flock(_log, fcntl.LOCK_EX)
    try:
        _log.write("".join(lines))
        _log.flush()
    finally:
        fcntl.flock(_log, fcntl.LOCK_UN)


def _record(event):
    event.update(request.headers)  # the seed: event.update(request.headers)
    event["timestamp"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return json.dumps(event) + "\n"


@app.route("/v1/events", methods=["POST"])
def events():
    batch = request.get_json(force=True)
    if isinstance(batch, dict):
        batch = [batch]
    _append([_record(e) for e in batch])
    return jsonify({"accepted": len(batch)})


@app.route("/<event_type>", methods=["GET", "POST"])
def seed_style(event_type):
    if event_type not in EVENT_TYPES:
        return jsonify({"error": "unknown event type"}), 404
    event = {"event_type": event_type}
    event.update(request.args.to_dict())
    _append([_record(event)])
    return "Event logged!\n"
