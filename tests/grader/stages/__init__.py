"""Stages built to be graded by the grader's tests: broken copies of a solution, and a stand-in."""
