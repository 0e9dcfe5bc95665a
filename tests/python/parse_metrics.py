"""Reads a Prometheus text exposition on stdin with the official client's parser and prints
each family as JSON: {name: {"type", "help", "samples": [{"name", "labels", "value"}]}}.
tests/metrics.rs runs it on a real /metrics scrape; a text the parser refuses fails here."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [
            {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
        ],
    }
json.dump(families, sys.stdout)
