"""The ``cache`` command: ``stats``, ``prune``, ``clear`` and ``verify`` over the cache's
tiers."""

from __future__ import annotations

import argparse
from typing import Any

from lazyflow.cli.options import cache_for, parse_age
from lazyflow.cli.output import UsageError, dump, say, table


def cmd_cache(args: argparse.Namespace) -> int:
    """``lazyflow cache stats|prune|clear|verify``; exit 1 if ``verify`` found damage."""
    from lazyflow.cache.sizes import parse_size

    cache = cache_for(args)
    chosen = _tiers(cache, args)
    status = 0
    if args.action == "stats":
        report: Any = cache.stats()
        text = _statistics(report)
    elif args.action == "prune":
        if args.max_size is None and args.older_than is None:
            raise UsageError("cache prune needs --max-size and/or --older-than")
        try:
            max_size = None if args.max_size is None else parse_size(args.max_size,
                                                                      what="--max-size")
        except ValueError as e:
            raise UsageError(str(e)) from None
        older = None if args.older_than is None else parse_age(args.older_than)
        report = cache.prune(max_size=max_size, older_than=older, tier=args.tier,
                             confirm=args.yes)
        text = f"pruned: {report}"
    elif args.action == "clear":
        cache.clear(tier=args.tier, confirm=args.yes)
        report = {"cleared": args.tier or "all"}
        text = f"cleared {args.tier or 'every'} tier: {', '.join(map(_named, chosen))}"
    else:
        from lazyflow.cache.audit import verify_cache

        report = verify_cache(cache, tier=args.tier, drop=args.drop)
        text = _verification(report)
        if any(r["damaged"] or r["unreadable"] for r in report.values()):
            status = 1
    if args.json:
        dump(report)
    else:
        say(text)
    return status


def _statistics(report: dict[str, dict[str, Any]]) -> str:
    """``cache stats``'s report: a line per tier, then each tier's figures per flow (the
    remote's, from its ledger) as a table."""
    from lazyflow.cache.sizes import format_size

    lines = [f"{tier:<8} " + "  ".join(
        f"{k} {format_size(v) if k == 'bytes' else v}" for k, v in facts.items()
        if not isinstance(v, dict)) for tier, facts in report.items()]
    for tier, facts in report.items():
        flows = facts.get("flows")
        if isinstance(flows, dict) and flows:
            rows = [(flow, figures.get("entries", 0), format_size(figures.get("bytes", 0)))
                    for flow, figures in sorted(flows.items())]
            lines += ["", f"{tier} by flow:", table(("flow", "entries", "bytes"), rows,
                                                     indent="  ", right=(False, True, True))]
    return "\n".join(lines)


def _tiers(cache: Any, args: argparse.Namespace) -> list[Any]:
    """The tiers ``--tier`` names (all without it); a tier the cache lacks is a usage error."""
    name = getattr(args, "tier", None)
    try:
        return list(cache.tiers) if name is None else [cache.tier(name)]
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def _named(tier: Any) -> str:
    """A tier as ``cache clear`` reports it: the remote with its URL, the disk with its path."""
    where = getattr(tier, "url", None) or getattr(tier, "directory", None)
    return f"{tier.name} ({where})" if where else str(tier.name)


def _verification(report: dict[str, dict[str, Any]]) -> str:
    """``cache verify``'s report: a line per tier, then a line per damaged or unreadable entry."""
    lines = []
    for tier, r in report.items():
        if r["skipped"]:
            lines.append(f"{tier:<8} {r['skipped']} live objects, no stored bytes: not checked")
            continue
        summary = f"{tier:<8} checked {r['checked']}: {r['intact']} intact"
        summary += f", {len(r['damaged'])} damaged"
        if r["unreadable"]:
            summary += f", {len(r['unreadable'])} unreadable (kept)"
        if r["dropped"]:
            summary += f", {len(r['dropped'])} dropped"
        elif r["damaged"]:
            summary += " (kept: rerun with --drop to delete them)"
        lines.append(summary)
        for finding in r["damaged"]:
            lines.append(_finding_line("damaged", finding))
        for finding in r["unreadable"]:
            lines.append(_finding_line("unreadable", finding))
    return "\n".join(lines)


def _finding_line(kind: str, finding: dict[str, Any]) -> str:
    """One damaged or unreadable entry as ``cache verify`` lists it."""
    node = f"node {finding['node']!r}: " if finding["node"] else ""
    return f"  {kind:<10} {finding['key']}  {node}{finding['problem']}"
