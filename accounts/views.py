"""
The signup page, the signup API, and the endpoints that say whether the
signup's communications went out.

API errors are always JSON, `{"errors": {field: [{"message", "code"}]}}` with
`__all__` for the body as a whole: never a 500 for anything a client sends.

A signup's status, and the jobs that send its messages, are shown to the user
who signed up (the signup is remembered in their session; a logged-in user is
recognized too) and to staff. Anyone else gets the 404 of an id that does not
exist, so that ids, which are sequential, do not tell who signed up.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import (
    NON_FIELD_ERRORS,
    RequestDataTooBig,
    TooManyFieldsSent,
    ValidationError,
)
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
)
from django.shortcuts import render
from django.tasks import default_task_backend
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timeuntil
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.models import Job
from jobs.progress import progress_of

from . import limits
from .models import Delivery, Profile
from .signup import (
    FINISHED_STATES,
    NOT_UNICODE,
    SignupForm,
    communications,
    is_unicode,
    send_inline,
)

# A signup is three short strings: anything larger is not one.
MAX_BODY_BYTES = 16 * 1024

SIGNUP_FIELDS = ("email", "phone", "password")

# The ids of the users this session signed up, most recent last.
SESSION_KEY = "signup_user_ids"
SESSION_SIGNUPS_KEPT = 20

TOO_LARGE = f"The body is larger than {MAX_BODY_BYTES} bytes."

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def errors_response(errors: dict[str, list[dict[str, str]]], status: int = 400) -> JsonResponse:
    return JsonResponse({"errors": errors}, status=status)


def body_error(message: str, code: str = "invalid", status: int = 400) -> JsonResponse:
    return errors_response({NON_FIELD_ERRORS: [{"message": message, "code": code}]}, status)


def not_found(message: str) -> JsonResponse:
    return body_error(message, "not_found", 404)


def rate_limited_message(retry_after: int) -> str:
    wait = timeuntil(timezone.now() + timedelta(seconds=retry_after), depth=1)
    return f"Too many signups from here or to this number; try again in {wait}."


def too_many(retry_after: int) -> JsonResponse:
    response = body_error(rate_limited_message(retry_after), "rate_limited", 429)
    response["Retry-After"] = str(retry_after)
    return response


def is_cross_origin(request: HttpRequest) -> bool:
    """
    Whether a browser sent the request from another site's page. The JSON API
    takes no CSRF token (curl and apps have none); this is what stops a page
    elsewhere from posting signups through its visitors' browsers. Browsers
    send Origin with every POST, and Sec-Fetch-Site; clients that are not
    browsers send neither and are let through.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        own = f"{request.scheme}://{request.get_host()}"
        return origin != own and origin not in settings.CSRF_TRUSTED_ORIGINS
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def remember_signup(request: HttpRequest, user_id: int) -> None:
    """Let this session see the signup's status: see may_see()."""
    signups = [*request.session.get(SESSION_KEY, []), user_id]
    request.session[SESSION_KEY] = signups[-SESSION_SIGNUPS_KEPT:]


def own_user_ids(request: HttpRequest) -> set[int]:
    """The users whose signups the caller may see, staff aside."""
    ids = set(request.session.get(SESSION_KEY, []))
    if request.user.is_authenticated:
        ids.add(request.user.id)
    return ids


def may_see(request: HttpRequest, user_id: int) -> bool:
    return request.user.is_staff or user_id in own_user_ids(request)


def status_urls(user_id: int, task_ids: dict[str, str | None]) -> dict[str, Any]:
    """Where the user who just signed up can follow the signup (their session can)."""
    return {
        "status_url": reverse("accounts:signup-status", args=[user_id]),
        "communications_url": reverse("accounts:communications", args=[user_id]),
        "task_urls": {
            channel: reverse("accounts:task-status", args=[task_id]) if task_id else None
            for channel, task_id in task_ids.items()
        },
    }


@csrf_exempt
@require_POST
def api_signup(request: HttpRequest) -> JsonResponse:
    """
    POST /api/v1/signup with a JSON object of email, phone and password.

    201 with the user id, the task id of each channel's job and the URLs of
    the signup's status, which the session the response starts may read.
    403 for a browser's post from another site, 415 for a body not declared
    as JSON, 429 with Retry-After beyond a rate limit (SIGNUP_RATE_LIMITS).
    """
    if is_cross_origin(request):
        return body_error(
            "Signups are not accepted from another site's pages.", "cross_origin", 403
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return body_error("Content-Length is not a number.")
    if declared > MAX_BODY_BYTES:
        return body_error(TOO_LARGE, "too_large")
    try:
        body = request.body
    except RequestDataTooBig:
        return body_error(TOO_LARGE, "too_large")
    if len(body) > MAX_BODY_BYTES:
        return body_error(TOO_LARGE, "too_large")
    # A form or text/plain body is what a page elsewhere can post without
    # asking the browser first (CORS preflight); JSON must say it is JSON.
    if body and request.content_type.lower() != "application/json":
        return body_error(
            "The body must be JSON, sent with Content-Type: application/json.",
            "unsupported_media_type",
            415,
        )
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return body_error("The body is not valid JSON.")
    if not isinstance(payload, dict):
        return body_error('The body must be a JSON object: {"email", "phone", "password"}.')

    field_errors = {
        name: [{"message": "Must be a string.", "code": "invalid_type"}]
        for name in SIGNUP_FIELDS
        if name in payload and not isinstance(payload[name], str)
    }
    try:
        inline = send_inline(request.GET.get("inline"))
    except ValidationError as error:
        field_errors["inline"] = [{"message": error.message, "code": error.code}]
    form = SignupForm(
        {
            name: payload[name]
            for name in SIGNUP_FIELDS
            if name in payload and name not in field_errors
        }
    )
    if field_errors or not form.is_valid():
        return errors_response({**form.errors.get_json_data(), **field_errors})
    rate_limits = limits.signup_limits(limits.client_address(request), form.cleaned_data["phone"])
    wait = limits.retry_after(rate_limits)
    if wait is not None:
        return too_many(wait)
    try:
        signup = form.save(inline=inline, rate_limits=rate_limits)
    except limits.RateLimited as refused:
        return too_many(refused.retry_after)
    if signup is None:
        return errors_response(form.errors.get_json_data())
    user = signup.user
    remember_signup(request, user.id)
    task_ids = {
        delivery.channel: str(delivery.task_id) if delivery.task_id else None
        for delivery in signup.deliveries
    }
    return JsonResponse(
        {
            "user_id": user.id,
            "task_ids": task_ids,
            "inline": inline,
            **status_urls(user.id, task_ids),
            "communications": communications(user),
        },
        status=201,
    )


@require_GET
def api_communications(request: HttpRequest, user_id: int) -> JsonResponse:
    """Each channel's delivery status, for the user who signed up and for staff."""
    user = User.objects.filter(id=user_id).first() if may_see(request, user_id) else None
    if user is None or not user.deliveries.exists():
        return not_found(f"No signup with id {user_id}.")
    profile = Profile.objects.filter(user=user).first()
    return JsonResponse(
        {
            "user_id": user.id,
            "communications": communications(user),
            # Once all three have finished, sent or given up on.
            "welcome": {
                "finished_at": profile.welcome_finished_at if profile else None,
                "messages_sent": profile.welcome_sent if profile else None,
            },
        }
    )


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """
    The status of a job, looked up by its task id: for staff any job, for the
    user who signed up the jobs that send their messages.

    Every attempt's error shows its exception and message; tracebacks, which
    can show code and data, only to staff.
    """
    try:
        job_id = uuid.UUID(task_id)
    except ValueError:
        job_id = None
    job = None
    if job_id is not None:
        job = Job.objects.using(default_task_backend.database).filter(id=job_id).first()
    staff = request.user.is_staff
    if job is not None and not staff:
        own = Delivery.objects.filter(task_id=job.id, user_id__in=own_user_ids(request))
        if not own.exists():
            job = None
    if job is None:
        return not_found(f"No task with id {task_id!r}.")
    return JsonResponse(
        {
            "id": str(job.id),
            "task": job.task_path,
            "queue": job.queue,
            "status": job.status,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "enqueued_at": job.enqueued_at,
            "run_at": job.run_at,
            "started_at": job.started_at,
            "last_attempted_at": job.last_attempted_at,
            "finished_at": job.finished_at,
            "return_value": job.return_value,
            "progress": (
                {"value": progress.value, "message": progress.message}
                if (progress := progress_of(job))
                else None
            ),
            "errors": [error_entry(error, with_traceback=staff) for error in job.errors],
        }
    )


def error_entry(error: dict[str, Any], *, with_traceback: bool) -> dict[str, Any]:
    entry = {
        "exception_class_path": error.get("exception_class_path"),
        "message": error.get("message", ""),
        "attempt": error.get("attempt"),
        "at": datetime.fromtimestamp(error["at"], UTC) if error.get("at") else None,
    }
    if with_traceback:
        entry["traceback"] = error.get("traceback", "")
    return entry


def decode_form(body: bytes) -> tuple[QueryDict, set[str]]:
    """
    An urlencoded body's fields, and the names of those whose bytes are not
    UTF-8. Django's own parsing turns such bytes into U+FFFD without a word,
    which would keep a password other than the one sent; here they are
    reported, and replaced the same way only so that the page can show the
    form again.
    """

    def replaced(text: str) -> str:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    data = QueryDict(mutable=True)
    undecodable = set()
    try:
        fields = parse_qsl(
            body.decode("utf-8", "surrogateescape"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="surrogateescape",
            max_num_fields=settings.DATA_UPLOAD_MAX_NUMBER_FIELDS,
        )
    except ValueError:
        raise TooManyFieldsSent("The form has too many fields.") from None
    for name, value in fields:
        name = replaced(name)
        if not is_unicode(value):
            undecodable.add(name)
            value = replaced(value)
        data.appendlist(name, value)
    return data, undecodable


def signup_form_page(
    form: SignupForm, request: HttpRequest, status: int, error: str = ""
) -> HttpResponse:
    return render(request, "accounts/signup.html", {"form": form, "error": error}, status=status)


@require_GET
def home_page(request: HttpRequest) -> HttpResponse:
    """The site's front page: where to sign up, and where to watch the jobs."""
    return render(request, "accounts/home.html")


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    """
    The HTML signup form; after a signup, its delivery status page. The form
    is posted urlencoded, as the page's form element does.
    """
    if request.method == "GET":
        return signup_form_page(SignupForm(), request, 200)
    if request.content_type.lower() != FORM_CONTENT_TYPE:
        error = f"The form must be sent as {FORM_CONTENT_TYPE}."
        return signup_form_page(SignupForm(), request, 415, error)
    data, undecodable = decode_form(request.body)
    form = SignupForm(data)
    form.is_valid()
    for name in undecodable & set(form.fields):
        form.add_error(name, ValidationError(NOT_UNICODE, code="invalid_unicode"))
    if form.errors:
        return signup_form_page(form, request, 400)
    try:
        inline = send_inline(request.GET.get("inline"))
    except ValidationError as error:
        form.add_error(None, error)
        return signup_form_page(form, request, 400)
    rate_limits = limits.signup_limits(limits.client_address(request), form.cleaned_data["phone"])
    wait = limits.retry_after(rate_limits)
    try:
        if wait is not None:
            raise limits.RateLimited(wait)
        signup = form.save(inline=inline, rate_limits=rate_limits)
    except limits.RateLimited as refused:
        form.add_error(None, rate_limited_message(refused.retry_after))
        response = signup_form_page(form, request, 429)
        response["Retry-After"] = str(refused.retry_after)
        return response
    if signup is None:
        return signup_form_page(form, request, 400)
    remember_signup(request, signup.user.id)
    return HttpResponseRedirect(reverse("accounts:signup-status", args=[signup.user.id]))


@require_GET
def signup_status_page(request: HttpRequest, user_id: int) -> HttpResponse:
    """
    Where the communications of a signup are, for the user who signed up and
    for staff. The page reloads itself (no JavaScript: a meta refresh) until
    every channel is sent or failed.
    """
    user = User.objects.filter(id=user_id).first() if may_see(request, user_id) else None
    if user is None or not user.deliveries.exists():
        raise Http404("No signup with this id.")
    report = communications(user)
    return render(
        request,
        "accounts/signup_status.html",
        {
            "signup_user": user,
            "communications": report,
            "finished": all(entry["status"] in FINISHED_STATES for entry in report),
        },
    )
