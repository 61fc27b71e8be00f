"""Generate the API and metrics reference of docs/operate.md from the OpenAPI document
the daemon serves (and from the metrics table), so the doc cannot drift from the code.

    python3 -m hostsdn.api.docgen docs/operate.md            # rewrite the generated parts
    python3 -m hostsdn.api.docgen --check docs/operate.md    # exit 1 when they are stale

Only the text between ``<!-- BEGIN generated: api -->`` and ``<!-- END generated: api
-->`` (and the same for ``metrics``) is replaced; the rest of the file is prose.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["api_reference", "metrics_reference", "openapi_document", "update"]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app (the same one ``GET /openapi.json`` serves)."""
    from hostsdn.api.app import Board, create_app
    from hostsdn.nic.datapath import Datapath
    from hostsdn.policy.loader import load_policy_text

    policy = load_policy_text(
        'version: 1\nuplink: {mac: "02:00:00:00:ff:01", ip: 192.0.2.1, '
        'gateway_mac: "02:00:00:00:ee:01"}\nports: [{name: a, mac: "02:00:00:00:00:01"}]\n',
        "doc.yaml")
    return create_app(Board(Datapath(policy), Path("doc.yaml"))).openapi()


def _ref_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"[{_ref_name(schema)}](#{_ref_name(schema).lower()})"
    if "anyOf" in schema:
        parts = [_type(s) for s in schema["anyOf"] if s.get("type") != "null"]
        nullable = any(s.get("type") == "null" for s in schema["anyOf"])
        return " \\| ".join(parts) + (" or null" if nullable else "")
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    t = schema.get("type", "any")
    if t == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if t == "object" and "additionalProperties" in schema:
        inner = schema["additionalProperties"]
        return f"map of {_type(inner) if isinstance(inner, dict) else 'any'}"
    return str(t)


def _constraints(schema: dict[str, Any]) -> str:
    s = schema
    if "anyOf" in schema:
        s = next((x for x in schema["anyOf"] if x.get("type") != "null"), schema)
    out = []
    for key, text in (("minimum", ">= {}"), ("maximum", "<= {}"), ("maxLength", ("at most {} "
                                                                      "chars"))):
        if key in s:
            out.append(text.format(s[key]))
    if "pattern" in s:
        out.append("pattern")
    if "default" in schema and schema["default"] is not None:
        out.append(f"default {schema['default']}")
    return ", ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def api_reference(doc: dict[str, Any]) -> str:
    lines: list[str] = [(f"OpenAPI {doc['openapi']}, {doc['info']['title']} "
                        f"{doc['info']['version']} (`GET /openapi.json`)."), ""]
    lines += ["| method | path | what |", "|---|---|---|"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            what = (op.get("description") or op.get("summary", "")).strip()
            lines.append(f"| {method.upper()} | [`{path}`](#{_anchor(method, path)}) | "
                         f"{_cell(what.split(chr(10) + chr(10))[0])} |")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            lines += ["", f"### {method.upper()} {path}", ""]
            if op.get("description"):
                lines += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | constraints | meaning |",
                          "|---|---|---|---|---|"]
                for p in params:
                    sch = p.get("schema", {})
                    lines.append(f"| `{p['name']}` | {p['in']} | {_type(sch)} | "
                                 f"{_constraints(sch)} | "
                                 f"{_cell(p.get('description', sch.get('description', '')))} |")
                lines.append("")
            body = op.get("requestBody")
            if body:
                for ctype, media in body.get("content", {}).items():
                    lines += [f"Body ({ctype}): {_type(media.get('schema', {}))}.", ""]
            lines += ["| status | meaning | body |", "|---|---|---|"]
            for status, resp in op.get("responses", {}).items():
                bodies = [f"{_type(m.get('schema', {}))} ({ct})"
                          for ct, m in resp.get("content", {}).items()]
                lines.append(f"| {status} | {_cell(resp.get('description', ''))} | "
                             f"{', '.join(bodies)} |")
    lines += ["", "### Schemas"]
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        lines += ["", f"#### {name}", ""]
        if schema.get("description"):
            lines += [_cell(schema["description"]), ""]
        props = schema.get("properties", {})
        if "enum" in schema:
            lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
            continue
        required = set(schema.get("required", []))
        lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
        for field, fs in props.items():
            lines.append(f"| `{field}` | {_type(fs)} | {'yes' if field in required else ''} "
                         f"| {_cell(fs.get('description', ''))} |")
    return "\n".join(lines)


def _anchor(method: str, path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", f"{method} {path}".lower()).replace(" ", "-")


def metrics_reference() -> str:
    from hostsdn.api.metrics import METRICS

    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, (kind, doc, labels) in METRICS.items():
        shown = f"{name}_total" if kind == "counter" else name
        lines.append(f"| `{shown}` | {kind} | {', '.join(f'`{x}`' for x in labels)} | "
                     f"{_cell(doc)} |")
    return "\n".join(lines)


def _replace(text: str, name: str, content: str) -> str:
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    if begin not in text or end not in text:
        raise ValueError(f"no '{begin}' ... '{end}' section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{content}\n{end}{tail}"


def update(text: str) -> str:
    """``text`` (docs/operate.md) with its generated sections made current."""
    text = _replace(text, "api", api_reference(openapi_document()))
    return _replace(text, "metrics", metrics_reference())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m hostsdn.api.docgen",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    ap.add_argument("doc", type=Path)
    args = ap.parse_args(argv)
    old = args.doc.read_text()
    new = update(old)
    if args.check:
        if new != old:
            print(f"{args.doc} is stale: run python3 -m hostsdn.api.docgen {args.doc}",
                  file=sys.stderr)
            return 1
        return 0
    if new != old:
        args.doc.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
