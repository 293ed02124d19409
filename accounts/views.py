"""
The signup page, the signup API, and the endpoints that say whether the
signup's communications went out.

API errors are always JSON, `{"errors": {field: [{"message", "code"}]}}` with
`__all__` for the body as a whole: never a 500 for anything a client sends.
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig, ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, render
from django.tasks import default_task_backend
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from jobs.models import Job

from .signup import FINISHED_STATES, SignupForm, communications, send_inline

# A signup is three short strings: anything larger is not one.
MAX_BODY_BYTES = 16 * 1024

SIGNUP_FIELDS = ("email", "phone", "password")

SESSION_KEY = "signup_user_id"

TOO_LARGE = f"The body is larger than {MAX_BODY_BYTES} bytes."


def errors_response(errors: dict[str, list[dict[str, str]]], status: int = 400) -> JsonResponse:
    return JsonResponse({"errors": errors}, status=status)


def body_error(message: str, code: str = "invalid") -> JsonResponse:
    return errors_response({NON_FIELD_ERRORS: [{"message": message, "code": code}]})


@csrf_exempt
@require_POST
def api_signup(request: HttpRequest) -> JsonResponse:
    """
    POST /api/v1/signup with a JSON object of email, phone and password.

    201 with the user id and the task id of each channel's job. CSRF does not
    apply: the endpoint acts on no session, it only creates an account.
    """
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
    signup = form.save(inline=inline)
    if signup is None:
        return errors_response(form.errors.get_json_data())
    user = signup.user
    return JsonResponse(
        {
            "user_id": user.id,
            "task_ids": {
                delivery.channel: str(delivery.task_id) if delivery.task_id else None
                for delivery in signup.deliveries
            },
            "inline": inline,
            "communications_url": reverse("accounts:communications", args=[user.id]),
            "communications": communications(user, reveal=True),
        },
        status=201,
    )


@require_GET
def api_communications(request: HttpRequest, user_id: int) -> JsonResponse:
    """Each channel's delivery status; recipients are masked but for staff and the user."""
    user = User.objects.filter(id=user_id).first()
    if user is None or not user.deliveries.exists():
        return errors_response(
            {NON_FIELD_ERRORS: [{"message": f"No signup with id {user_id}.", "code": "not_found"}]},
            status=404,
        )
    reveal = request.user.is_staff or request.user.id == user.id
    return JsonResponse({"user_id": user.id, "communications": communications(user, reveal=reveal)})


@require_GET
def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """
    The status of any job, looked up by its task id.

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
    if job is None:
        return errors_response(
            {NON_FIELD_ERRORS: [{"message": f"No task with id {task_id!r}.", "code": "not_found"}]},
            status=404,
        )
    staff = request.user.is_staff
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


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    """The HTML signup form; after a signup, its delivery status page."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            inline = send_inline(request.GET.get("inline"))
        except ValidationError as error:
            form.add_error(None, error)
        else:
            signup = form.save(inline=inline)
            if signup is not None:
                request.session[SESSION_KEY] = signup.user.id
                return HttpResponseRedirect(
                    reverse("accounts:signup-status", args=[signup.user.id])
                )
    return render(
        request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200
    )


@require_GET
def signup_status_page(request: HttpRequest, user_id: int) -> HttpResponse:
    """
    Where the communications of a signup are. The page reloads itself (no
    JavaScript: a meta refresh) until every channel is sent or failed.
    """
    user = get_object_or_404(User, id=user_id)
    if not user.deliveries.exists():
        raise Http404("No signup with this id.")
    reveal = (
        request.user.is_staff
        or request.user.id == user.id
        or request.session.get(SESSION_KEY) == user.id
    )
    report = communications(user, reveal=reveal)
    return render(
        request,
        "accounts/signup_status.html",
        {
            "signup_user": user,
            "communications": report,
            "reveal": reveal,
            "finished": all(entry["status"] in FINISHED_STATES for entry in report),
        },
    )
