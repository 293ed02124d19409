"""
The package as a stranger gets it: the wheel built from this working tree,
installed from nothing but PyPI into a new virtualenv, and put into a new
`django-admin startproject` project by following the README's "Add it to your
project" section to the letter.

The section's code blocks are the script: a python block headed by a path
(`# mysite/settings.py`) is appended to that file, or becomes it; a sh block
holds commands. The pip command is run with the wheel in place of the package
name, `runworker` and `runscheduler` run as the servers they are, and every
other command runs to completion before them. The project's database is a
new one on the test's PostgreSQL, dropped at the end.
"""

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import BASE_DIR, database_url_for_subprocesses, wait_until
from tests.docs.pages import section

pytestmark = pytest.mark.processes

README_SECTION = "Add it to your project"
PACKAGE = "django-pgjobs"
METRICS_TOKEN = "scrape-me"
# A command's output when it fails, cut to what an assertion message can show.
OUTPUT_SHOWN = 4000

# What a build never reads: environments, data, caches and earlier builds.
NOT_COPIED = {".venv", ".git", ".pgdata", "var", "build", "dist", "bench/.peers", "bench/results"}
NOT_COPIED_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache"}

JOB_LINE = r"Job {id} myapp\.tasks\.add SUCCESSFUL in [0-9.]+ \S+ \(attempt 1 of 3\)"
ANY_JOB_LINE = re.compile(r"Job [0-9a-f-]{36} ")
# The scheduler's connections to the project's database (it names them).
SCHEDULERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'jobs scheduler%'
"""


@dataclass
class Instructions:
    """The README section's blocks: files to write and commands to run, in order."""

    files: list[tuple[str, str]] = field(default_factory=list)
    install: list[list[str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    worker: list[str] = field(default_factory=list)
    scheduler: list[str] = field(default_factory=list)


def read_instructions() -> Instructions:
    """Parse the README's section, refusing any block the test would not know how to follow."""
    instructions = Instructions()
    text = section(README_SECTION)
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.DOTALL | re.MULTILINE):
        language, body = match.groups()
        if language == "python":
            header, _, code = body.partition("\n")
            path = re.fullmatch(r"# ([\w/]+\.py)", header)
            assert path, f"a python block must start with '# <path>.py', not {header!r}"
            instructions.files.append((path[1], code))
        elif language == "sh":
            for line in body.splitlines():
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                command = shlex.split(line)
                if command[:4] == ["python", "-m", "pip", "install"]:
                    instructions.install.append(command)
                elif command[:3] == ["python", "manage.py", "runworker"]:
                    instructions.worker = command
                elif command[:3] == ["python", "manage.py", "runscheduler"]:
                    instructions.scheduler = command
                else:
                    instructions.commands.append(command)
        else:
            raise AssertionError(f"a block in {README_SECTION!r} is {language!r}, not python or sh")
    assert instructions.install, "the section says how to install the package"
    assert instructions.worker, "the section says how to run a worker"
    assert instructions.scheduler, "the section says how to run the scheduler"
    return instructions


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    """Run a command to completion; its stdout, or a failure showing all it printed."""
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert completed.returncode == 0, (
        f"{shlex.join(command)} exited {completed.returncode}:\n"
        f"{completed.stdout[-OUTPUT_SHOWN:]}\n{completed.stderr[-OUTPUT_SHOWN:]}"
    )
    return completed.stdout


def clean_env(venv: Path) -> dict[str, str]:
    """
    The environment of a shell with the new virtualenv first on PATH.

    Nothing of this project's may leak in: the settings module and database
    the test suite runs with, a PYTHONPATH, or the test suite's virtualenv.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "JOBS_", "PYTHON", "PYTEST", "TEST_", "EMBEDDED_"))
        and name not in {"DATABASE_URL", "VIRTUAL_ENV"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["JOBS_METRICS_TOKEN"] = METRICS_TOKEN
    return env


def in_venv(command: list[str], venv: Path) -> list[str]:
    """The README's command with `python` meaning the new virtualenv's."""
    return [str(venv / "bin" / "python"), *command[1:]] if command[0] == "python" else command


def copy_of_working_tree(destination: Path) -> Path:
    """
    The checkout as it is, uncommitted edits included, minus what a build never reads.

    Building in a copy leaves the checkout without setuptools' build/ and egg-info.
    """

    def ignored(directory: str, names: list[str]) -> set[str]:
        here = Path(directory).relative_to(BASE_DIR)
        return {
            name
            for name in names
            if name in NOT_COPIED_ANYWHERE
            or name.endswith(".egg-info")
            or (here / name).as_posix() in NOT_COPIED
        }

    return Path(shutil.copytree(BASE_DIR, destination, ignore=ignored))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from the working tree, as a release would be built."""
    build = tmp_path_factory.mktemp("build")
    source = copy_of_working_tree(build / "source")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    run(
        [*pip_wheel, "-q", "-w", str(build / "dist"), str(source)],
        cwd=build,
        env=dict(os.environ),
    )
    (built,) = (build / "dist").glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with the package installed as the README says, from the wheel."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv, env=clean_env(venv))
    for command in read_instructions().install:
        from_wheel = [
            f"{wheel}{argument.removeprefix(PACKAGE)}" if argument.startswith(PACKAGE) else argument
            for argument in command
        ]
        assert from_wheel != command, f"{shlex.join(command)} installs {PACKAGE}"
        quiet = ["--disable-pip-version-check", "-q"]
        run([*in_venv(from_wheel, venv), *quiet], venv, clean_env(venv))
    return venv


@dataclass
class Project:
    """A new project that follows the README, and a connection to its database."""

    directory: Path
    venv: Path
    database: psycopg.Connection
    env: dict[str, str]

    def manage(self, *args: str) -> str:
        return run(in_venv(["python", "manage.py", *args], self.venv), self.directory, self.env)

    def shell(self, code: str) -> object:
        """Run code in `manage.py shell`; the JSON it prints last."""
        return json.loads(self.manage("shell", "-c", code).splitlines()[-1])

    def enqueue_add(self) -> str:
        """Enqueue myapp.tasks.add(2, 3) in a shell of the project; the job's id."""
        return self.shell(
            "import json; from myapp.tasks import add; print(json.dumps(add.enqueue(2, 3).id))"
        )

    def status(self, job_id: str) -> str | None:
        query = "SELECT status FROM jobs_job WHERE id = %s"
        row = self.database.execute(query, [job_id]).fetchone()
        return row[0] if row else None

    def run_one_job(self, command: list[str], name: str) -> tuple[str, "Server"]:
        """Enqueue a job, run the worker command until the job succeeded, stop it with SIGTERM."""
        job_id = self.enqueue_add()
        assert self.status(job_id) == "READY"
        worker = Server(self, command, name)
        try:

            def finished() -> bool:
                """the worker ran the job"""
                return worker.alive() and self.status(job_id) == "SUCCESSFUL"

            wait_until(finished, timeout=60)
        finally:
            code = worker.stop()
        assert code == 0, worker.output()
        return job_id, worker


class Server:
    """A long-running command of the project, its stdout and stderr kept in files."""

    def __init__(self, project: Project, command: list[str], name: str) -> None:
        self.stdout_path = project.directory / f"{name}.stdout"
        self.stderr_path = project.directory / f"{name}.stderr"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                in_venv(command, project.venv),
                cwd=project.directory,
                env=project.env,
                stdout=stdout,
                stderr=stderr,
            )

    def output(self) -> str:
        return f"{self.stdout_path.read_text()}\n{self.stderr_path.read_text()}"

    def alive(self) -> bool:
        assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.output()}"
        return True

    def stop(self) -> int:
        """SIGTERM, then the exit code; killed after 60 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture
def project(venv: Path, transactional_db, tmp_path: Path) -> Iterator[Project]:
    """startproject, a new database, the README's files and one-shot commands (migrate)."""
    name = f"pgjobs_package_{uuid.uuid4().hex[:12]}"
    params = conninfo_to_dict(database_url_for_subprocesses()) | {"dbname": name}
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        env = clean_env(venv)
        run([str(venv / "bin" / "django-admin"), "startproject", "mysite"], tmp_path, env)
        directory = tmp_path / "mysite"
        run(in_venv(["python", "manage.py", "startapp", "myapp"], venv), directory, env)
        instructions = read_instructions()
        for relative, code in instructions.files:
            path = directory / relative
            existing = path.read_text() if path.exists() else ""
            path.write_text(f"{existing}\n{code}" if existing else code)
        databases = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": name,
                "USER": params.get("user", ""),
                "PASSWORD": params.get("password", ""),
                "HOST": params.get("host", ""),
                "PORT": params.get("port", ""),
            }
        }
        with open(directory / "mysite" / "settings.py", "a") as settings:
            # In place of the README's, whose server this machine does not have.
            settings.write(f"\n# The test's PostgreSQL.\nDATABASES = {databases!r}\n")
        for command in instructions.commands:
            run(in_venv(command, venv), directory, env)
        with psycopg.connect(**params, autocommit=True) as database:
            yield Project(directory, venv, database, env)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def third_party_imports(package: Path) -> set[str]:
    """The top-level modules the package's code imports that are neither its own nor stdlib."""
    modules = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {package.name}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_wheel_holds_the_jobs_app_its_migrations_and_templates(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {"jobs", dist_info}
    assert dist_info.startswith("django_pgjobs-")

    package = BASE_DIR / "jobs"
    shipped = [
        path
        for path in package.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (path.suffix == ".py" or {"templates", "static"} & set(path.relative_to(package).parts))
    ]
    missing = {str(path.relative_to(BASE_DIR)) for path in shipped} - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert any(name.startswith("jobs/migrations/0001_") for name in names)
    assert any(name.startswith("jobs/templates/admin/jobs/") for name in names)
    assert "jobs/static/jobs/live.js" in names

    # Every library the code imports is a declared dependency, required or extra.
    required = {
        canonical(re.split(r"[\s;<>=!~\[]", line.removeprefix("Requires-Dist: "))[0])
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ")
    }
    providers = packages_distributions()
    undeclared = {
        module
        for module in third_party_imports(package)
        if not {canonical(dist) for dist in providers.get(module, [module])} & required
    }
    assert not undeclared, f"imported but not in Requires-Dist: {sorted(undeclared)}"


def test_a_new_project_runs_a_job_by_following_the_readme(project: Project):
    instructions = read_instructions()
    job_id, _ = project.run_one_job(instructions.worker, "worker")

    result = project.shell(
        "import json, jobs; from myapp.tasks import add; "
        f"result = add.get_result({job_id!r}); "
        "print(json.dumps([result.status, result.return_value, result.attempts, jobs.__file__]))"
    )
    status, return_value, attempts, module = result
    assert (status, return_value, attempts) == ("SUCCESSFUL", 5, 1)
    assert Path(module).is_relative_to(project.venv), f"jobs imported from {module}"

    pages = project.shell(
        "import json; from django.contrib.auth import get_user_model; "
        "from django.test import Client; "
        "user = get_user_model().objects.create_superuser('admin', 'a@example.com', 'pw'); "
        "admin = Client(HTTP_HOST='localhost'); admin.force_login(user); "
        "anonymous = Client(HTTP_HOST='localhost'); "
        f"token = {{'authorization': 'Bearer {METRICS_TOKEN}'}}; "
        "metrics = anonymous.get('/metrics', headers=token); "
        "paths = ['/admin/', '/admin/jobs/job/', "
        f"'/admin/jobs/job/{job_id}/change/', '/admin/jobs/job/dashboard/', "
        "'/admin/jobs/worker/', '/admin/jobs/schedule/']; "
        "print(json.dumps({"
        "'admin': {path: admin.get(path).status_code for path in paths}, "
        "'metrics': [metrics.status_code, metrics.content.decode()], "
        "'metrics without the token': anonymous.get('/metrics').status_code}))"
    )
    assert set(pages["admin"].values()) == {200}, pages["admin"]
    metrics_status, metrics = pages["metrics"]
    assert metrics_status == 200
    assert 'jobs_by_status{status="SUCCESSFUL"} 1' in metrics
    assert pages["metrics without the token"] == 401

    scheduler = Server(project, instructions.scheduler, "scheduler")
    try:

        def listening() -> bool:
            """the scheduler connected to its database to wait for schedules"""
            return scheduler.alive() and bool(project.database.execute(SCHEDULERS).fetchone()[0])

        wait_until(listening, timeout=60)
    finally:
        code = scheduler.stop()
    assert code == 0, scheduler.output()


def test_runworker_prints_a_line_per_job_without_logging_settings(project: Project):
    command = read_instructions().worker
    job_id, worker = project.run_one_job(command, "worker")
    _, quiet = project.run_one_job([*command, "-v", "0"], "quiet-worker")

    assert not ANY_JOB_LINE.search(quiet.output()), quiet.output()
    stderr = worker.stderr_path.read_text()
    assert re.search(JOB_LINE.format(id=job_id), stderr), f"no line for job {job_id}:\n{stderr}"
