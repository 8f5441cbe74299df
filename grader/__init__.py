"""The course's black-box grader: starts a stage as a real uvicorn process and checks it over HTTP."""

__version__ = "1.0.0"
