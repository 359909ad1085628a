"""The HTML of ``mbridge ui``: one page per concern (queues, workers, a task, dead letters),
server-rendered, every value escaped; the queues page updates itself from ``/api/queues``
(bridge/ui/static/ui.js, charts by the vendored uPlot)."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any
from urllib.parse import urlencode

from bridge.queuestats import STAT_NAMES

NAV = (("/", "Queues"), ("/workers", "Workers"), ("/task", "Task"), ("/dead", "Dead letters"))


def layout(title: str, body: str, *, active: str, script: bool = False) -> str:
    links = " ".join(
        f'<a href="{path}"{" class=on" if path == active else ""}>{name}</a>'
        for path, name in NAV)
    scripts = ('<link rel="stylesheet" href="/static/uPlot.min.css">'
               '<script src="/static/uPlot.iife.min.js"></script>'
               '<script src="/static/ui.js" defer></script>') if script else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · mbridge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/ui.css">{scripts}</head>
<body><header><strong>mbridge</strong> <nav>{links}</nav></header>
<main><h1>{escape(title)}</h1>{body}</main></body></html>"""


def queues_page(rows: list[dict[str, Any]], interval: float) -> str:
    head = "".join(f"<th>{name}</th>" for name in ("broker", "queue", *STAT_NAMES, ""))
    lines = []
    for row in rows:
        cells = "".join(
            f'<td class=n data-stat="{name}">{_count(row["stats"].get(name))}</td>'
            for name in STAT_NAMES)
        dead = "/dead?" + urlencode({"target": row["target"], "queue": row["queue"]})
        lines.append(
            f'<tr data-queue="{escape(row["id"])}"><td>{escape(row["label"])}'
            f'<span class=err>{escape(row["error"])}</span></td>'
            f'<td>{escape(row["queue"])}</td>{cells}<td><a href="{escape(dead)}">dead '
            "letters</a></td></tr>")
    charts = "".join(
        f'<section class=chart><h2>{escape(row["queue"])} <small>{escape(row["label"])}'
        f'</small></h2><div class=plot data-queue="{escape(row["id"])}"></div></section>'
        for row in rows)
    body = (f'<p class=muted>Sampled every {interval:g} s; this page follows them.</p>'
            f'<table id=queues><thead><tr>{head}</tr></thead><tbody>{"".join(lines)}'
            f"</tbody></table>{charts}")
    return layout("Queues", body, active="/", script=True)


def workers_page(workers: list[dict[str, Any]], watched_without_mailbox: list[str]) -> str:
    rows = []
    for worker in workers:
        if "error" in worker:
            rows.append(f'<tr><td colspan=5>{escape(worker["label"])}: <span class=err>'
                        f'{escape(worker["error"])}</span></td></tr>')
            continue
        if not worker.get("alive"):
            rows.append(f'<tr class=gone><td>{escape(worker["node"])}</td><td>gone</td>'
                        f'<td colspan=3>{worker["held"]} held of {escape(worker["queue"])}, '
                        "back to the queue at the next recovery</td></tr>")
            continue
        seen = time.strftime("%H:%M:%S", time.localtime(worker["last_seen"]))
        rates = "<br>".join(
            f'{escape(queue)}: {counts.get("processed", 0)} done, '
            f'{counts.get("per_second_1m", 0):g}/s' for queue, counts in
            sorted(worker["queues"].items()))
        running = "<br>".join(
            f'<a href="/task?{urlencode({"id": task.get("id", "")})}">'
            f'{escape(str(task.get("name")))}[{escape(str(task.get("id")))}]</a>'
            for task in worker["running"]) or "—"
        rows.append(f'<tr class=alive><td>{escape(worker["node"])}</td><td>alive, answered '
                    f'at {seen} (pid {worker["pid"]}, up {worker["uptime"]} s)</td>'
                    f'<td>{escape(", ".join(worker["consuming"]))}</td><td>{rates}</td>'
                    f"<td>{running}</td></tr>")
    note = "".join(f"<p class=muted>{escape(label)}: no broadcast here (SQS), so no worker "
                   "list.</p>" for label in watched_without_mailbox)
    body = ('<table id=workers><thead><tr><th>worker</th><th>state</th><th>consuming</th>'
            f'<th>rates</th><th>running</th></tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table>{note or ''}<p class=muted>Workers answer Celery's remote control "
            "(machinery workers of ours too); this page reloads every 5 s.</p>")
    return layout("Workers", body, active="/workers").replace(
        "<head>", '<head><meta http-equiv="refresh" content="5">', 1)


def task_page(task_id: str, found: list[dict[str, Any]] | None) -> str:
    form = (f'<form method=get action="/task"><input name=id value="{escape(task_id)}" '
            'size=50 placeholder="task id"><button>Look up</button></form>')
    if not task_id or found is None:
        return layout("Task", form, active="/task")
    if not found:
        return layout("Task", form + f"<p>No state, result or waiting message for "
                      f"<code>{escape(task_id)}</code>.</p>", active="/task")
    parts = []
    for one in found:
        record = one["record"]
        shown = json.dumps(record, indent=2, default=str) if isinstance(record, dict) \
            else _pretty(record)
        parts.append(f'<section class=task><h2>{escape(one["label"])}</h2>'
                     f'<h3>state</h3><pre id=record>{escape(shown or "none")}</pre>'
                     + (f'<h3>message (waiting)</h3><pre>{escape(_pretty(one["message"]))}'
                        "</pre>" if one["message"] else "") + "</section>")
    return layout("Task", form + "".join(parts), active="/task")


def dead_page(targets: list[tuple[int, str, list[str]]], target: int | None, queue: str,
              entries: list[dict[str, Any]], count: int, csrf: str, can_delete: bool,
              done: str) -> str:
    choices = "".join(
        f'<li><a href="/dead?{urlencode({"target": n, "queue": q})}">{escape(q)}</a> '
        f"<small>{escape(label)}</small></li>" for n, label, queues in targets for q in queues)
    body = f"<ul class=targets>{choices}</ul>"
    if done:
        body += f"<p class=done>{escape(done)}</p>"
    if target is not None and queue:
        hidden = (f'<input type=hidden name=csrf value="{escape(csrf)}">'
                  f'<input type=hidden name=target value="{target}">'
                  f'<input type=hidden name=queue value="{escape(queue)}">')
        actions = (f'<form method=post action="/dead/replay">{hidden}'
                   '<input type=hidden name=count value=1><button id=replay-one>Replay the '
                   'oldest</button></form>'
                   f'<form method=post action="/dead/replay">{hidden}'
                   '<input type=hidden name=count value=0><button id=replay-all>Replay all'
                   "</button></form>")
        if can_delete:
            actions += (f'<form method=post action="/dead/delete">{hidden}'
                        '<input type=hidden name=count value=1><button id=delete-one>Delete '
                        "the oldest</button></form>")
        rows = "".join(
            f'<tr><td>{escape(str(e.get("time", "")))}</td>'
            f'<td class=reason>{escape(str(e.get("reason", "")))}</td>'
            f'<td><code>{escape(_preview(e))}</code></td></tr>' for e in entries)
        body += (f'<h2>{escape(queue)}: <span id=dead-count>{count}</span> dead letters</h2>'
                 f'<div class=actions>{actions}</div><table id=dead><thead><tr><th>parked</th>'
                 f"<th>reason</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>")
    return layout("Dead letters", body, active="/dead")


def _count(value: Any) -> str:
    return "–" if value is None else str(value)


def _pretty(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text


def _preview(entry: dict[str, Any]) -> str:
    body = entry.get("body")
    if body is None and "body_b64" in entry:
        body = f"(binary, base64) {entry['body_b64']}"
    if body is None and "body_ref" in entry:
        body = f"({entry.get('size', '?')} bytes, kept aside)"
    text = str(body or "")
    return text if len(text) <= 300 else text[:300] + " …"
