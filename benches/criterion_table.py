"""Turns `cargo bench` (criterion) output into Markdown table rows: name | time estimate."""
import re
import sys

name = None
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    m = re.match(r"^(\S.*?)\s+time:\s+\[(.*)\]$", line)
    if m:  # name and time on one line
        print(f"| {m.group(1)} | {m.group(2)} |")
        name = None
        continue
    m = re.match(r"^\s+time:\s+\[(.*)\]$", line)
    if m and name:
        print(f"| {name} | {m.group(1)} |")
        name = None
        continue
    if re.match(r"^[a-z].*/", line) and "time:" not in line and not line.startswith(("Benchmarking", "Found", "change", "Gnuplot")):
        name = line.strip()
