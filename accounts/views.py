from django.http import HttpRequest, JsonResponse
from django.tasks import default_task_backend
from django.tasks.exceptions import TaskResultDoesNotExist


def task_status(request: HttpRequest, task_id: str) -> JsonResponse:
    """The status of any job, looked up by its task id."""
    try:
        result = default_task_backend.get_result(task_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": f"No task with id {task_id!r}."}, status=404)
    return JsonResponse(
        {
            "id": result.id,
            "task": result.task.module_path,
            "status": result.status,
            "attempts": result.attempts,
            "enqueued_at": result.enqueued_at,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "errors": [error.exception_class_path for error in result.errors],
        }
    )
