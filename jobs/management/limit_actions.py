"""
The `jobs` command's actions on limits: list them with the overrides in
force, and set or reset an override at runtime (jobs.limit_overrides).
"""

from typing import Any

from django.core.management.base import CommandError
from django.tasks import task_backends

from jobs import limit_overrides
from jobs.management.queue_actions import system_user


class LimitActions:
    """limits list|set|reset; mixed into the `jobs` Command."""

    def _limits_list(self, backend: str, **options: Any) -> None:
        limits = task_backends[backend].queue_options.limits
        overrides = limit_overrides.overrides(backend=backend)
        rows = []
        for limit in limits.all:
            rows.append(
                {
                    "limit": limit.name,
                    "key": None,
                    "settings": limit.describe(),
                    "override": None,
                }
            )
            for override in (o for o in overrides if o.name == limit.name):
                rows.append(
                    {
                        "limit": limit.name,
                        "key": override.key or None,
                        "settings": None,
                        "override": limit_overrides.describe(override, limit),
                        "changed_at": override.changed_at,
                        "changed_by": override.changed_by,
                    }
                )
        self._print(rows, _limit_lines(rows) if rows else "No LIMITS are configured.")

    def _limits_set(
        self,
        name: str,
        key: str | None,
        concurrency: int | None,
        rate: str | None,
        burst: int | None,
        by: str | None,
        backend: str,
        **_: Any,
    ) -> None:
        try:
            change = limit_overrides.set_override(
                name,
                key=key,
                concurrency=concurrency,
                rate=rate,
                burst=burst,
                by=system_user() if by is None else by,
                via="command",
                backend=backend,
            )
        except limit_overrides.LimitOverrideError as error:
            raise CommandError(str(error)) from error
        self._print_change(change)

    def _limits_reset(self, name: str, key: str | None, by: str | None, backend: str, **_: Any):
        try:
            change = limit_overrides.remove_override(
                name,
                key=key,
                by=system_user() if by is None else by,
                via="command",
                backend=backend,
            )
        except limit_overrides.LimitOverrideError as error:
            raise CommandError(str(error)) from error
        if change is None:
            scope = f"Limit {name!r}" + (f" key {key!r}" if key else "")
            self._print({"changed": False}, f"{scope} had no override: nothing to reset.")
            return
        self._print_change(change)

    def _print_change(self, change: Any) -> None:
        scope = f"Limit {change.name!r}" + (f" key {change.key!r}" if change.key else "")
        self._print(
            {
                "changed": True,
                "limit": change.name,
                "key": change.key or None,
                "before": change.before,
                "after": change.after,
            },
            self.style.SUCCESS(f"{scope}: {change.before} → {change.after}."),
        )


def _limit_lines(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row["override"] is None:
            lines.append(f"{row['limit']}: {row['settings']} (settings)")
            continue
        scope = f"key {row['key']!r}" if row["key"] else "every key"
        by = f" by {row['changed_by']}" if row["changed_by"] else ""
        lines.append(
            f"  override for {scope}: {row['override']}, "
            f"since {row['changed_at']:%Y-%m-%d %H:%M:%S %Z}{by}"
        )
    return "\n".join(lines)


def add_limit_actions(actions: Any) -> Any:
    """limits list|set|reset."""
    about = (
        "List the limits of LIMITS with the overrides in force (the default), or override a "
        "limit's concurrency or rate at runtime, for every key or one, and reset it to its "
        "settings. Every worker honours a change at its next claim."
    )
    limits = actions.add_parser("limits", help=about, description=about)
    limit_actions = limits.add_subparsers(dest="limit_action", metavar="limit_action")
    limit_actions.add_parser("list", help="Each limit: its settings and overrides.")
    change = limit_actions.add_parser(
        "set", help="Override a limit's concurrency and/or rate until it is reset."
    )
    change.add_argument("name", help="The limit's name in LIMITS.")
    change.add_argument("--key", help="One key of a keyed limit (default: every key).")
    change.add_argument("--concurrency", type=int, help="Jobs at once (per key).")
    change.add_argument("--rate", help="Starts per period, as in LIMITS: '10/s', '500/m'.")
    change.add_argument("--burst", type=int, help="Starts at once after an idle spell.")
    change.add_argument("--by", help="Who changes it, for the record (default: this system user).")
    reset = limit_actions.add_parser("reset", help="Give the limit its settings' values again.")
    reset.add_argument("name", help="The limit's name in LIMITS.")
    reset.add_argument("--key", help="The key whose override to remove (default: every key's).")
    reset.add_argument("--by", help="Who changes it, for the record (default: this system user).")
    return limit_actions
