"""Broken copies of `solutions/advanced` for the checks of its image, database and load test, and what each loses.

These checks read what only a real stage has (its Dockerfile, its Alembic migrations, its locustfile), so the
defects go into a copy of the solution, mostly into those files; the replaced text must occur exactly once.
"""

from tests.support.grading import BrokenStage

DOCKERFILE, LOCUSTFILE, DATABASE, AUTH = "Dockerfile", "locustfile.py", "app/database.py", "app/auth.py"
EXERCISES = ("deploy", "database", "load_test")

STAGES = [
    BrokenStage(
        "no-cmd-plain-text-passwords-and-no-budget",
        {
            DOCKERFILE: [('CMD ["python", "-m", "app.serve"]\n', "")],
            AUTH: [
                (
                    'CryptContext(schemes=["bcrypt"], bcrypt__rounds=bcrypt_rounds)',
                    'CryptContext(schemes=["plaintext"])',
                )
            ],
            LOCUSTFILE: [("@events.quitting.add_listener\n", "")],
        },
        only=EXERCISES,
        failed=("deploy.command", "database.users", "load_test.budget_enforced"),
        skipped=("deploy.production_shape", "deploy.serves", "deploy.workers"),
        lab="advanced",
    ),
    BrokenStage(
        "root-one-worker-tables-from-models-and-a-task-on-a-wrong-path",
        {
            DOCKERFILE: [("USER 10001:10001\n", ""), ("    WORKERS=2 \\\n", "    WORKERS=1 \\\n")],
            DATABASE: [
                ("connection.run_sync(upgrade)", "connection.run_sync(Base.metadata.create_all)"),
                ('__tablename__ = "sessions"', '__tablename__ = "conversations"'),
            ],
            LOCUSTFILE: [('post("/api/v1/query", json=body,', 'post("/api/v1/queries", json=body,')],
        },
        only=EXERCISES,
        failed=(
            "deploy.production_shape",
            "deploy.workers",
            "database.migrated",
            "database.sessions",
            "load_test.clean_run",
        ),
        lab="advanced",
    ),
    BrokenStage(
        "a-cmd-that-does-not-serve",
        {DOCKERFILE: [('CMD ["python", "-m", "app.serve"]\n', 'CMD ["python", "-m", "app.server"]\n')]},
        only=("deploy",),
        failed=("deploy.serves",),
        skipped=("deploy.workers",),
        lab="advanced",
    ),
]
