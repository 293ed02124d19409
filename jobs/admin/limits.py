"""
Limits changed at runtime in the admin: the overrides in force, which an
operator with "Can change a limit at runtime" adds, edits and removes, and
the record of every change. Each goes through jobs.limit_overrides, which
rewrites the limit's key rows and records who changed what.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends

from .. import limit_overrides
from ..limit_overrides import LimitOverrideError
from ..models import LimitChange, LimitOverride
from .read_only import ReadOnlyAdmin


class LimitOverrideForm(forms.ModelForm):
    """The override's values as LIMITS writes them: a rate is '10/s', not three numbers."""

    name = forms.ChoiceField(help_text="A limit of LIMITS.")
    rate_text = forms.CharField(
        label="Rate",
        required=False,
        help_text="Starts per period, as in LIMITS: '10/s', '3/10s'. Blank: not overridden.",
    )

    class Meta:
        model = LimitOverride
        fields = ("name", "key", "concurrency", "rate_text", "burst")
        help_texts = {
            "key": "One key of a keyed limit (the argument's value); blank for every key.",
            "concurrency": "Jobs at once (per key). Blank: not overridden.",
            "burst": "Starts at once after an idle spell (default: the rate's count).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = task_backends[DEFAULT_TASK_BACKEND_ALIAS].queue_options.limits
        self.fields["name"].choices = [(limit.name, limit.name) for limit in limits.all]
        override = self.instance
        if override.pk and override.rate is not None:
            self.initial["rate_text"] = rate_text(override)
        if override.pk:
            self.fields["name"].disabled = self.fields["key"].disabled = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            limit_overrides.checked_override(
                data.get("name", ""),
                data.get("key") or None,
                data.get("concurrency"),
                data.get("rate_text") or None,
                data.get("burst"),
            )
        except LimitOverrideError as error:
            raise forms.ValidationError(str(error)) from None
        return data


def rate_text(override: LimitOverride) -> str:
    """An override's rate as LIMITS writes it, which parse_rate reads back."""
    period = override.period
    seconds = str(int(period)) if float(period).is_integer() else repr(period)
    return f"{override.rate}/{seconds}s"


@admin.register(LimitOverride)
class LimitOverrideAdmin(admin.ModelAdmin):
    form = LimitOverrideForm
    list_display = ("name", "key_shown", "concurrency", "rate_shown", "changed_by", "changed_at")
    list_display_links = ("name",)

    @admin.display(description="key")
    def key_shown(self, override: LimitOverride) -> str:
        return override.key or "every key"

    @admin.display(description="rate")
    def rate_shown(self, override: LimitOverride) -> str:
        if override.rate is None:
            return "—"
        return f"{rate_text(override)} (burst {override.burst})"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("jobs.change_limit")

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm("jobs.change_limit")

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm("jobs.change_limit")

    def save_model(self, request: HttpRequest, obj: LimitOverride, form: Any, change: bool):
        data = form.cleaned_data
        record = limit_overrides.set_override(
            obj.name,
            key=obj.key or None,
            concurrency=data.get("concurrency"),
            rate=data.get("rate_text") or None,
            burst=data.get("burst"),
            exact=True,
            by=request.user.get_username(),
            via="admin",
        )
        # The admin's log and redirect name the row set_override wrote.
        obj.pk = LimitOverride.objects.get(name=record.name, key=record.key).pk
        messages.info(request, f"{record}.")

    def delete_model(self, request: HttpRequest, obj: LimitOverride) -> None:
        limit_overrides.remove_override(
            obj.name, key=obj.key or None, by=request.user.get_username(), via="admin"
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for override in queryset:
            self.delete_model(request, override)


@admin.register(LimitChange)
class LimitChangeAdmin(ReadOnlyAdmin):
    """Every change of a limit at runtime, newest first; a record, so never edited."""

    list_display = ("changed_at", "name", "key", "before", "after", "changed_by", "via")
    list_filter = ("name", "via")
    date_hierarchy = "changed_at"
