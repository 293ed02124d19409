"""
The signup's deliveries and the fake providers' outbox, in the admin, read-only:
what each user was sent, whether it went out, and the messages as delivered.
"""

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .models import Delivery, OutboxMessage


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the jobs that send: to look at, never to edit by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "channel", "status", "attempts", "created_at", "sent_at", "job")
    list_filter = ("status", "channel")
    search_fields = ("recipient", "user__email")
    list_select_related = ("user",)
    date_hierarchy = "created_at"

    @admin.display(description="job")
    def job(self, delivery: Delivery) -> SafeString | str:
        if delivery.task_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:jobs_job_change", args=[delivery.task_id])
        return format_html('<a href="{}">{}</a>', url, str(delivery.task_id)[:8])


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("message_id", "channel", "recipient", "subject", "sent_at")
    list_filter = ("channel",)
    search_fields = ("recipient", "subject", "message_id")
    date_hierarchy = "sent_at"
