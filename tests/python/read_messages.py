"""A non-Rust client's view of entente's wire format.

Reads every `*.msgpack` file in a directory with the plain `msgpack` library, as a Python client
of the decisions stream would, and prints one JSON line per file describing what it found: the
envelope's kind and version, the body's field names, and the types of a few fields that must be
readable without Rust (UUIDs as strings, tagged enums as maps with a string tag).
"""
import json
import pathlib
import sys
import uuid

import msgpack


def describe(path: pathlib.Path) -> dict:
    envelope = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
    body = envelope["body"]
    found = {
        "file": path.name,
        "kind": envelope["kind"],
        "version": envelope["version"],
        "fields": sorted(body.keys()) if isinstance(body, dict) else None,
    }
    if envelope["kind"] == "bid":
        uuid.UUID(body["bid_id"])  # raises unless it is a UUID string
        found["bid_id"] = body["bid_id"]
        found["offers"] = [b["offer"]["type"] for b in body["bundles"]]
        found["cpu"] = [b["alloc"]["cpu"] for b in body["bundles"]]
    if envelope["kind"] == "decision":
        found["allocations"] = {a["workload"]: a["alloc"] for a in body["allocations"]}
    return found


def main() -> None:
    for path in sorted(pathlib.Path(sys.argv[1]).glob("*.msgpack")):
        print(json.dumps(describe(path)))


if __name__ == "__main__":
    main()
