"""GitHub Classroom: the workflow template students' repositories run, and its result for the reporter."""
