"""Checks the report as Chromium rendered it (its DOM after parsing): the charts are there,
each an <svg> with a title and bars, as many as the file has, and nothing external loads.

usage: check_html.py RENDERED_DOM REPORT_HTML
"""
import sys
from html.parser import HTMLParser


class Charts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.svgs = []  # per svg: [rects, texts]
        self.depth = 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.svgs.append([0, 0])
            self.depth += 1
        elif self.depth and tag == "rect":
            width = float(attrs.get("width", "0") or 0)
            if width > 0:
                self.svgs[-1][0] += 1
        elif self.depth and tag == "text":
            self.svgs[-1][1] += 1
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "svg":
            self.depth -= 1


def main():
    dom = Charts()
    with open(sys.argv[1], encoding="utf-8") as f:
        dom.feed(f.read())
    with open(sys.argv[2], encoding="utf-8") as f:
        source = f.read()
    if len(dom.svgs) < 4:
        sys.exit(f"FAIL: the rendered report has {len(dom.svgs)} charts, expected at least 4")
    if len(dom.svgs) != source.count("<svg"):
        sys.exit(f"FAIL: {source.count('<svg')} charts in the file, {len(dom.svgs)} in the rendered page")
    for i, (rects, texts) in enumerate(dom.svgs):
        if rects == 0 or texts < 2:
            sys.exit(f"FAIL: chart {i} has {rects} bars and {texts} labels")
    if dom.external:
        sys.exit(f"FAIL: the report loads external resources: {dom.external}")
    print(f"ok: Chromium renders the report with {len(dom.svgs)} charts "
          f"({sum(r for r, _ in dom.svgs)} bars)")


if __name__ == "__main__":
    main()
